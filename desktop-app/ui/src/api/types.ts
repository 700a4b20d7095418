// Shapes the UI works with. They mirror the hub's JSON (camelCase, money as numbers in the
// currency unit, times as RFC 3339 strings); another data source converts to these.

export type Role = "admin" | "analyst" | "store_manager";

export interface Identity {
  tenant: string;
  subject: string;
  role: Role;
  /** Assigned stores (store managers); empty for admins and analysts. */
  stores: string[];
}

export interface Credentials {
  tenant: string;
  username: string;
  password: string;
}

export interface DeviceStatus {
  deviceId: string;
  /** A contact within the last 30 s. */
  connected: boolean;
  /** Now minus the time up to which the hub holds everything the device recorded. */
  lagMs: number | null;
  lastSeen: string | null;
  lastCommit: string | null;
  lastEvent: string | null;
  backlog: number;
  clockSkewMs: number;
}

export interface StoreStatus {
  storeId: string;
  name: string;
  region: string;
  timeZone: string;
  lastSeen: string | null;
  /** Some device of the store is connected. */
  connected: boolean;
  backlog: number;
  lagMs: number | null;
  clockSkewMs: number;
  /** Everything the store recorded up to this instant is at the hub (null: nothing yet). */
  completeUpTo: string | null;
  devices: DeviceStatus[];
}

export type Bucket = "minute" | "hour" | "day" | "week";
export type GroupBy = "none" | "store" | "region" | "item" | "category" | "payment";

export interface Figures {
  revenue: number;
  units: number;
  transactions: number;
  refunds: number;
  refundAmount: number;
  voids: number;
}

export interface SeriesPoint extends Figures {
  /** Start of the bucket. */
  t: string;
}

export interface SeriesGroup {
  group: string;
  points: SeriesPoint[];
}

export interface SeriesQuery {
  bucket: Bucket;
  groupBy: GroupBy;
  from: Date;
  to: Date;
  /** Omitted: every store the caller may see. */
  stores?: string[];
  category?: string;
  items?: string[];
}

export interface SeriesResult {
  bucket: Bucket;
  groupBy: GroupBy;
  from: string;
  to: string;
  series: SeriesGroup[];
  watermarks: { storeId: string; completeUpTo: string | null }[];
  /** Stores whose data is not complete up to `to`: figures for them may still grow. */
  storesBehind: string[];
}

export interface RangeQuery {
  from: Date;
  to: Date;
  stores?: string[];
}

export interface TopItem extends Figures {
  sku: string;
}

export interface Basket extends Figures {
  averageBasketValue: number | null;
  averageBasketUnits: number | null;
}

export interface InventoryRow {
  storeId: string;
  sku: string;
  onHand: number;
}

export interface InventoryQuery {
  stores?: string[];
  sku?: string;
}

export interface InventoryResult {
  rows: InventoryRow[];
  /** Rows the source holds; `rows` may be fewer when the source caps what it returns. */
  total: number;
}

export type AlertState = "open" | "acknowledged" | "resolved";

export interface Alert {
  alertId: string;
  kind: string;
  severity: string;
  storeId: string;
  subject: string;
  raisedAt: string;
  state: AlertState;
  changedBy: string | null;
  message: string;
  facts: { name: string; value: number }[];
  updatedAt: string;
}

export interface AlertQuery {
  stores?: string[];
  state?: AlertState;
  limit?: number;
}

export interface SalesTick {
  storeId: string;
  /** Revenue of the transactions in this tick. */
  revenue: number;
  transactions: number;
  lastAt: string;
}

export type LiveEvent =
  | { type: "ready" }
  | { type: "sales"; tick: SalesTick }
  | { type: "alerts"; alertIds: string[]; stores: string[] }
  /** Events were missed: reload whatever is shown. */
  | { type: "resync" };

export type LiveStatus = "connecting" | "live" | "reconnecting" | "unavailable";

export type Metric =
  | "revenue"
  | "transactions"
  | "units"
  | "averageBasket"
  | "refunds"
  | "refundAmount"
  | "voids";

export type RangeName = "today" | "7d" | "30d" | "90d";

/** A customizable view: what the user picked in the explorer, under a name. */
export interface SavedView {
  id: string;
  name: string;
  metric: Metric;
  groupBy: GroupBy;
  range: RangeName;
  /** Empty: all stores the user may see. */
  stores: string[];
  chart: "line" | "bar";
  savedAt: string;
}

export type NewSavedView = Omit<SavedView, "id" | "savedAt"> & { id?: string };
