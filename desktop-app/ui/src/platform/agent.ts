// The DataSource over the store agent's local API, used by the desktop app while the hub
// cannot be reached. The agent knows one store and answers in its own shapes; this maps
// them onto the views' (`api/types.ts`):
//
// | view call        | agent endpoint                                   |
// | ---------------- | ------------------------------------------------ |
// | stores, store    | `/api/v1/summary` (the store id) + `/api/v1/outbox` (backlog) |
// | series, basket   | `/api/v1/rollups?granularity=&group=&from=&to=`   |
// | topItems         | `/api/v1/top-items?from=&to=&limit=`              |
// | inventory        | `/api/v1/inventory?sku=`                          |
// | alerts, ack, resolve | `/api/v1/alerts?state=&limit=`, `POST .../acknowledge`, `.../resolve` |
//
// Groupings the agent does not keep (region, category) reject with `bad_request` naming
// them; a store other than the agent's is `not_found`, as on the hub.

import { DataError, type DataErrorKind, type DataSource, type LiveHandlers, type SourceInfo } from "../api/DataSource";
import { LocalViews } from "../api/localViews";
import type {
  Alert,
  AlertQuery,
  Basket,
  Credentials,
  Figures,
  GroupBy,
  Identity,
  InventoryQuery,
  InventoryResult,
  NewSavedView,
  RangeQuery,
  SavedView,
  SeriesGroup,
  SeriesQuery,
  SeriesResult,
  StoreStatus,
  TopItem,
} from "../api/types";
import { api, onLive } from "./tauri";

/** Rollup rows asked for at most (the agent's own cap is 10,000). */
const ROLLUP_ROWS_MAX = 10_000;

interface RollupRow extends Figures {
  bucket: string;
  bucketMs: number;
  group: string;
}

interface AgentAlert {
  alertId: string;
  kind: string;
  severity: string;
  storeId: string;
  subject: string;
  raisedAt: string;
  state: Alert["state"];
  changedBy: string | null;
  changedMs: number | null;
  message: string;
  facts: Record<string, number>;
}

const AGENT_GROUPS: Partial<Record<GroupBy, string>> = {
  none: "store",
  store: "store",
  item: "item",
  payment: "payment",
};

export class AgentDataSource implements DataSource {
  readonly info: SourceInfo;
  private readonly identity: Identity;
  private readonly views: LocalViews;
  private storeId: string | null = null;

  constructor(identity: Identity) {
    this.identity = identity;
    this.views = new LocalViews(`${identity.tenant}/${identity.subject}`);
    this.info = { kind: "agent", label: "Local data — this store", live: false };
  }

  signIn(_c: Credentials): Promise<Identity> {
    return Promise.reject(new DataError("network", "Signing in needs the hub, which cannot be reached."));
  }

  restore(): Promise<Identity | null> {
    return Promise.resolve(this.identity);
  }

  signOut(): Promise<void> {
    return Promise.resolve();
  }

  me(): Promise<Identity> {
    return Promise.resolve(this.identity);
  }

  async stores(): Promise<StoreStatus[]> {
    return [await this.localStore()];
  }

  async store(storeId: string): Promise<StoreStatus> {
    const store = await this.localStore();
    if (store.storeId !== storeId) throw new DataError("not_found", "Not found.", 404);
    return store;
  }

  async series(q: SeriesQuery): Promise<SeriesResult> {
    const store = await this.checkStores(q.stores);
    const rows = await this.rollups(q, q.groupBy);
    const groups = new Map<string, SeriesGroup>();
    for (const row of rows) {
      // The agent keys its store rollups by "" (it has one store).
      const name = q.groupBy === "none" ? "all" : q.groupBy === "store" ? store : row.group;
      let group = groups.get(name);
      if (!group) {
        group = { group: name, points: [] };
        groups.set(name, group);
      }
      group.points.push({ t: row.bucket, ...figures(row) });
    }
    return {
      bucket: q.bucket,
      groupBy: q.groupBy,
      from: q.from.toISOString(),
      to: q.to.toISOString(),
      series: [...groups.values()],
      // The agent holds everything its store recorded: its data is complete up to now.
      watermarks: [{ storeId: store, completeUpTo: new Date().toISOString() }],
      storesBehind: [],
    };
  }

  async seriesCsv(q: SeriesQuery): Promise<string> {
    const result = await this.series(q);
    const lines = ["bucket,group,revenue,units,transactions,refunds,refund_amount,voids"];
    for (const g of result.series) {
      for (const p of g.points) {
        lines.push([p.t, csvField(g.group), p.revenue, p.units, p.transactions, p.refunds, p.refundAmount, p.voids].join(","));
      }
    }
    return lines.join("\n") + "\n";
  }

  async topItems(q: RangeQuery & { limit?: number }): Promise<TopItem[]> {
    await this.checkStores(q.stores);
    const p = range(q);
    p.set("limit", String(q.limit ?? 10));
    const reply = await this.get<{ items: { itemId: string; revenue: number; units: number; transactions: number }[] }>(
      `/api/v1/top-items?${p}`,
    );
    return reply.items.map((i) => ({
      sku: i.itemId,
      revenue: i.revenue,
      units: i.units,
      transactions: i.transactions,
      refunds: 0,
      refundAmount: 0,
      voids: 0,
    }));
  }

  async basket(q: RangeQuery): Promise<Basket> {
    await this.checkStores(q.stores);
    // Hours, not days: a day bucket starts at the store's midnight, which need not be the
    // window's.
    const rows = await this.rollups({ ...q, bucket: "hour" }, "store");
    const total = rows.reduce<Figures>((sum, r) => addFigures(sum, figures(r)), emptyFigures());
    return {
      ...total,
      averageBasketValue: total.transactions > 0 ? total.revenue / total.transactions : null,
      averageBasketUnits: total.transactions > 0 ? total.units / total.transactions : null,
    };
  }

  async inventory(q: InventoryQuery): Promise<InventoryResult> {
    const store = await this.checkStores(q.stores);
    const p = new URLSearchParams({ limit: "10000" });
    if (q.sku) p.set("sku", q.sku);
    const reply = await this.get<{ items: { sku: string; onHand: number }[] }>(`/api/v1/inventory?${p}`);
    const rows = reply.items.map((r) => ({ storeId: store, sku: r.sku, onHand: r.onHand }));
    return { rows, total: rows.length };
  }

  async alerts(q: AlertQuery): Promise<Alert[]> {
    await this.checkStores(q.stores);
    const p = new URLSearchParams({ limit: String(q.limit ?? 200) });
    if (q.state) p.set("state", q.state);
    const reply = await this.get<{ alerts: AgentAlert[] }>(`/api/v1/alerts?${p}`);
    return reply.alerts.map(alertOf);
  }

  async acknowledgeAlert(alertId: string): Promise<Alert> {
    return alertOf(await this.post<AgentAlert>(`/api/v1/alerts/${encodeURIComponent(alertId)}/acknowledge`));
  }

  async resolveAlert(alertId: string): Promise<Alert> {
    return alertOf(await this.post<AgentAlert>(`/api/v1/alerts/${encodeURIComponent(alertId)}/resolve`));
  }

  subscribe(handlers: LiveHandlers, _stores?: string[]): () => void {
    return subscribeLive("agent", handlers);
  }

  savedViews(): Promise<SavedView[]> {
    return Promise.resolve(this.views.list());
  }

  saveView(view: NewSavedView): Promise<SavedView> {
    return Promise.resolve(this.views.save(view));
  }

  deleteView(id: string): Promise<void> {
    this.views.remove(id);
    return Promise.resolve();
  }

  // ---------------------------------------------------------------------------------

  private async localStore(): Promise<StoreStatus> {
    const [summary, outbox, sync] = await Promise.all([
      this.get<{ store: string }>("/api/v1/summary"),
      this.get<{ streams?: { backlog: number }[] }>("/api/v1/outbox").catch(() => ({ streams: [] })),
      this.get<{ connected?: boolean }>("/api/v1/sync").catch(() => ({ connected: false })),
    ]);
    this.storeId = summary.store;
    return {
      storeId: summary.store,
      name: summary.store,
      region: "",
      timeZone: "",
      lastSeen: new Date().toISOString(),
      connected: sync.connected === true,
      backlog: (outbox.streams ?? []).reduce((n, s) => n + (s.backlog ?? 0), 0),
      lagMs: null,
      clockSkewMs: 0,
      completeUpTo: new Date().toISOString(),
      devices: [],
    };
  }

  /** The agent's store, when `stores` asks for nothing else. */
  private async checkStores(stores?: string[]): Promise<string> {
    const store = this.storeId ?? (await this.localStore()).storeId;
    if (stores?.some((s) => s !== store)) throw new DataError("not_found", "Not found.", 404);
    return store;
  }

  private async rollups(q: RangeQuery & { bucket: string }, groupBy: GroupBy): Promise<RollupRow[]> {
    const group = AGENT_GROUPS[groupBy];
    if (!group) {
      throw new DataError("bad_request", `Grouping by ${groupBy} is not available from the store's local data.`, 400);
    }
    const p = range(q);
    p.set("granularity", q.bucket);
    p.set("group", group);
    p.set("limit", String(ROLLUP_ROWS_MAX));
    return (await this.get<{ rows: RollupRow[] }>(`/api/v1/rollups?${p}`)).rows;
  }

  private get<T>(path: string): Promise<T> {
    return this.send<T>("GET", path);
  }

  private post<T>(path: string): Promise<T> {
    return this.send<T>("POST", path);
  }

  private async send<T>(method: "GET" | "POST", path: string): Promise<T> {
    let response: Response;
    try {
      response = await api(method, path, "agent");
    } catch (e) {
      throw new DataError("network", `The store agent cannot be reached (${String(e)}).`);
    }
    if (!response.ok) throw await agentError(response);
    return (await response.json()) as T;
  }
}

/** Live events the app forwards from `source`'s stream, until the returned function runs. */
export function subscribeLive(source: "hub" | "agent", handlers: LiveHandlers): () => void {
  let stopped = false;
  let unlisten: (() => void) | null = null;
  handlers.onStatus?.("connecting");
  void onLive((from, event) => {
    if (!stopped && from === source) handlers.onEvent(event);
  }).then((f) => {
    if (stopped) f();
    else {
      unlisten = f;
      handlers.onStatus?.("live");
      handlers.onEvent({ type: "ready" });
    }
  });
  return () => {
    stopped = true;
    unlisten?.();
  };
}

async function agentError(response: Response): Promise<DataError> {
  let message = "";
  try {
    const body = (await response.json()) as { error?: { message?: string; field?: string } };
    message = [body.error?.field, body.error?.message].filter(Boolean).join(": ");
  } catch {
    // Not JSON: the status says enough.
  }
  const kinds: Record<number, DataErrorKind> = { 400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found" };
  const kind = kinds[response.status] ?? "server";
  const fallback: Record<DataErrorKind, string> = {
    unauthorized: "The store agent did not accept the session (it may have expired). Sign in again when the hub is back.",
    forbidden: "The store agent says your role may not see this store.",
    not_found: "Not found.",
    bad_request: "The store agent did not accept the request.",
    network: "The store agent cannot be reached.",
    server: "The store agent had a problem answering. Try again shortly.",
  };
  return new DataError(kind, kind === "bad_request" && message ? message : fallback[kind], response.status);
}

function range(q: RangeQuery): URLSearchParams {
  return new URLSearchParams({ from: q.from.toISOString(), to: q.to.toISOString() });
}

function figures(f: Figures): Figures {
  return {
    revenue: f.revenue,
    units: f.units,
    transactions: f.transactions,
    refunds: f.refunds,
    refundAmount: f.refundAmount,
    voids: f.voids,
  };
}

function emptyFigures(): Figures {
  return { revenue: 0, units: 0, transactions: 0, refunds: 0, refundAmount: 0, voids: 0 };
}

function addFigures(a: Figures, b: Figures): Figures {
  return {
    revenue: a.revenue + b.revenue,
    units: a.units + b.units,
    transactions: a.transactions + b.transactions,
    refunds: a.refunds + b.refunds,
    refundAmount: a.refundAmount + b.refundAmount,
    voids: a.voids + b.voids,
  };
}

function alertOf(a: AgentAlert): Alert {
  return {
    alertId: a.alertId,
    kind: a.kind,
    severity: a.severity,
    storeId: a.storeId,
    subject: a.subject,
    raisedAt: a.raisedAt,
    state: a.state,
    changedBy: a.changedBy,
    message: a.message,
    facts: Object.entries(a.facts ?? {}).map(([name, value]) => ({ name, value: Number(value) })),
    updatedAt: a.changedMs ? new Date(a.changedMs).toISOString() : a.raisedAt,
  };
}

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
