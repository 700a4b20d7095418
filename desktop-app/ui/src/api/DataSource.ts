/*
 * DataSource: the one seam between the UI and wherever its data lives.
 *
 * Contract (every implementation keeps it; views call nothing else):
 * - Views never call fetch, EventSource or WebSocket themselves, and never read tokens.
 *   They get one DataSource from `platform/` (`useData()` in app/session.tsx) and call it.
 * - Every method rejects with a `DataError` only; its `kind` decides what the UI shows
 *   (`unauthorized`: back to sign-in; `not_found`: the not-found page — also what a store
 *   outside the caller's reach gives; `network`: the source is unreachable and another may
 *   be tried; `bad_request`, `forbidden`, `server`: an error state with `message`).
 * - Money is a number in the currency unit, times are RFC 3339 strings, exactly as in
 *   `types.ts`. Scope is the source's business: a store manager's source returns only the
 *   assigned stores, and a request for another store rejects with `not_found`.
 * - `signIn` / `restore` establish a session; tokens stay inside the source, which renews
 *   them itself. `restore` resolves null when there is no session to resume.
 * - `subscribe` delivers live events until the returned function is called; it reconnects
 *   by itself and reports its state through `onStatus`. After `resync`, reload data.
 * - `info` says what the UI is showing: `live` false means the data is a local copy (for
 *   example the store agent's while the hub is unreachable), and the UI says so.
 */

import type {
  Alert,
  AlertQuery,
  Basket,
  Credentials,
  Identity,
  InventoryQuery,
  InventoryResult,
  LiveEvent,
  LiveStatus,
  NewSavedView,
  RangeQuery,
  SavedView,
  SeriesQuery,
  SeriesResult,
  StoreStatus,
  TopItem,
} from "./types";

export type DataErrorKind =
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "bad_request"
  | "network"
  | "server";

export class DataError extends Error {
  readonly kind: DataErrorKind;
  readonly status: number | null;

  constructor(kind: DataErrorKind, message: string, status: number | null = null) {
    super(message);
    this.name = "DataError";
    this.kind = kind;
    this.status = status;
  }
}

export function isDataError(e: unknown, kind?: DataErrorKind): e is DataError {
  return e instanceof DataError && (kind === undefined || e.kind === kind);
}

export interface SourceInfo {
  /** `hub` for the cloud hub, `agent` for a store agent's local API. */
  kind: "hub" | "agent";
  /** Shown in the header, e.g. "HQ" or "Local data — store s001". */
  label: string;
  /** False when the data is a local copy rather than the chain's live view. */
  live: boolean;
}

export interface LiveHandlers {
  onEvent(event: LiveEvent): void;
  onStatus?(status: LiveStatus): void;
}

export interface DataSource {
  readonly info: SourceInfo;

  signIn(credentials: Credentials): Promise<Identity>;
  /** Resumes a session kept from earlier (e.g. across a page reload), or null. */
  restore(): Promise<Identity | null>;
  signOut(): Promise<void>;
  /** Whoever the current session belongs to, as the source sees it now. */
  me(): Promise<Identity>;

  stores(): Promise<StoreStatus[]>;
  store(storeId: string): Promise<StoreStatus>;

  series(query: SeriesQuery): Promise<SeriesResult>;
  /** CSV of a series, as the source would export it. */
  seriesCsv(query: SeriesQuery): Promise<string>;
  topItems(query: RangeQuery & { limit?: number }): Promise<TopItem[]>;
  basket(query: RangeQuery): Promise<Basket>;

  inventory(query: InventoryQuery): Promise<InventoryResult>;

  alerts(query: AlertQuery): Promise<Alert[]>;
  acknowledgeAlert(alertId: string): Promise<Alert>;
  resolveAlert(alertId: string): Promise<Alert>;

  /** Live sales ticks and alert changes; returns the function that stops them. */
  subscribe(handlers: LiveHandlers, stores?: string[]): () => void;

  savedViews(): Promise<SavedView[]>;
  saveView(view: NewSavedView): Promise<SavedView>;
  deleteView(id: string): Promise<void>;
}
