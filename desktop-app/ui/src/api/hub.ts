// The DataSource over the hub's web API (`/oauth/token`, `/api/v1/*`).
//
// Tokens: both are kept in sessionStorage, so a reload resumes the session and they die
// with the tab. The hub rotates refresh tokens and revokes the whole family when one is
// replayed, so a renewal whose answer is lost (the page reloaded mid-request) ends the
// session: a reload therefore reuses the stored access token while it is valid instead of
// renewing, and renewals are single-flight (concurrent requests share one).
//
// Live data: EventSource cannot send an Authorization header, and an access token in a URL
// ends up in logs and histories. Each connection first asks `POST /api/v1/live/ticket`
// (bearer header) for a ticket that opens live streams only and expires after 30 s, and
// puts that in the URL. A dropped stream reconnects with a fresh ticket, with backoff.

import { DataError, type DataErrorKind, type DataSource, type LiveHandlers, type SourceInfo } from "./DataSource";
import type {
  Alert,
  AlertQuery,
  Basket,
  Credentials,
  Identity,
  InventoryQuery,
  InventoryResult,
  NewSavedView,
  RangeQuery,
  SavedView,
  SeriesQuery,
  SeriesResult,
  StoreStatus,
  TopItem,
} from "./types";

const REFRESH_KEY = "storesync.refresh";
const ACCESS_KEY = "storesync.access";
/** Renew the access token when it has less than this left. */
const RENEW_BEFORE_MS = 60_000;
/** Inventory rows fetched at most (pages of the hub's maximum page length). */
const INVENTORY_ROWS_MAX = 5_000;
const INVENTORY_PAGE_LEN = 1_000;
const LIVE_RETRY_MS_MAX = 30_000;

interface HubSession {
  access: { token: string; expiresAt: number } | null;
}

interface TokenReply {
  access_token: string;
  refresh_token?: string;
  expires_in: number;
}

export interface HubOptions {
  /** The hub's origin, e.g. `https://hub.example.com`; empty: the page's own origin. */
  baseUrl?: string;
  /** Where the refresh token is kept; default sessionStorage. */
  storage?: Storage;
  /** Sends API requests for a host that holds the tokens itself (the desktop app's Rust
   * side): no token is kept or sent here. Rejects with a `DataError`. */
  transport?: (path: string, init?: RequestInit) => Promise<Response>;
}

export class HubDataSource implements DataSource {
  readonly info: SourceInfo = { kind: "hub", label: "HQ", live: true };
  private readonly base: string;
  private readonly storage: Storage | null;
  private readonly transport: HubOptions["transport"];
  private access: HubSession["access"] = null;
  private renewing: Promise<void> | null = null;

  constructor(options: HubOptions = {}) {
    this.base = (options.baseUrl ?? "").replace(/\/$/, "");
    this.storage = options.storage ?? safeSessionStorage();
    this.transport = options.transport;
  }

  /** The current access token, for platform code that hands it on (the desktop app's
   * offline mode presents it to the store agent). Views never call this. */
  async accessToken(): Promise<string> {
    await this.ensureFresh();
    if (!this.access) throw new DataError("unauthorized", "Please sign in.");
    return this.access.token;
  }

  async signIn(c: Credentials): Promise<Identity> {
    const reply = await this.tokenRequest({
      grant_type: "password",
      tenant: c.tenant.trim(),
      username: c.username.trim(),
      password: c.password,
    });
    this.accept(reply);
    return this.me();
  }

  async restore(): Promise<Identity | null> {
    if (!this.storage?.getItem(REFRESH_KEY)) return null;
    try {
      const kept = JSON.parse(this.storage.getItem(ACCESS_KEY) ?? "null") as HubSession["access"];
      if (kept && typeof kept.token === "string" && typeof kept.expiresAt === "number") this.access = kept;
    } catch {
      // Unreadable: renew instead.
    }
    try {
      await this.ensureFresh();
      return await this.me();
    } catch (e) {
      if (e instanceof DataError && e.kind === "network") throw e;
      this.clear();
      return null;
    }
  }

  async signOut(): Promise<void> {
    this.clear();
  }

  async me(): Promise<Identity> {
    return this.get<Identity>("/api/v1/me");
  }

  async stores(): Promise<StoreStatus[]> {
    return (await this.get<{ items: StoreStatus[] }>("/api/v1/stores")).items;
  }

  store(storeId: string): Promise<StoreStatus> {
    return this.get<StoreStatus>(`/api/v1/stores/${encodeURIComponent(storeId)}`);
  }

  series(q: SeriesQuery): Promise<SeriesResult> {
    return this.get<SeriesResult>(`/api/v1/sales/series?${seriesParams(q)}`);
  }

  seriesCsv(q: SeriesQuery): Promise<string> {
    return this.request(`/api/v1/sales/series.csv?${seriesParams(q)}`).then((r) => r.text());
  }

  async topItems(q: RangeQuery & { limit?: number }): Promise<TopItem[]> {
    const p = rangeParams(q);
    if (q.limit) p.set("limit", String(q.limit));
    return (await this.get<{ items: TopItem[] }>(`/api/v1/sales/top-items?${p}`)).items;
  }

  basket(q: RangeQuery): Promise<Basket> {
    return this.get<Basket>(`/api/v1/sales/basket?${rangeParams(q)}`);
  }

  async inventory(q: InventoryQuery): Promise<InventoryResult> {
    const rows: InventoryResult["rows"] = [];
    let total = 0;
    for (let offset = 0; offset < INVENTORY_ROWS_MAX; offset += INVENTORY_PAGE_LEN) {
      const p = new URLSearchParams({ offset: String(offset), limit: String(INVENTORY_PAGE_LEN) });
      if (q.stores?.length) p.set("stores", q.stores.join(","));
      if (q.sku) p.set("sku", q.sku);
      const page = await this.get<{ items: InventoryResult["rows"]; total: number }>(`/api/v1/inventory?${p}`);
      rows.push(...page.items);
      total = page.total;
      if (rows.length >= total || page.items.length === 0) break;
    }
    return { rows, total };
  }

  async alerts(q: AlertQuery): Promise<Alert[]> {
    const p = new URLSearchParams();
    if (q.stores?.length) p.set("stores", q.stores.join(","));
    if (q.state) p.set("state", q.state);
    p.set("limit", String(q.limit ?? 200));
    return (await this.get<{ items: Alert[] }>(`/api/v1/alerts?${p}`)).items;
  }

  acknowledgeAlert(alertId: string): Promise<Alert> {
    return this.post<Alert>(`/api/v1/alerts/${encodeURIComponent(alertId)}/acknowledge`);
  }

  resolveAlert(alertId: string): Promise<Alert> {
    return this.post<Alert>(`/api/v1/alerts/${encodeURIComponent(alertId)}/resolve`);
  }

  subscribe(handlers: LiveHandlers, stores?: string[]): () => void {
    let stopped = false;
    let source: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let failures = 0;
    const status = handlers.onStatus ?? (() => {});

    const connect = async () => {
      if (stopped) return;
      status(failures === 0 ? "connecting" : "reconnecting");
      let ticket: string;
      try {
        ticket = (await this.post<{ ticket: string }>("/api/v1/live/ticket")).ticket;
      } catch (e) {
        if (e instanceof DataError && (e.kind === "unauthorized" || e.kind === "forbidden")) {
          status("unavailable");
          return;
        }
        retry();
        return;
      }
      if (stopped) return;
      const p = new URLSearchParams({ ticket });
      if (stores?.length) p.set("stores", stores.join(","));
      const es = new EventSource(`${this.base}/api/v1/live/sse?${p}`);
      source = es;
      es.addEventListener("ready", () => {
        failures = 0;
        status("live");
        handlers.onEvent({ type: "ready" });
      });
      es.addEventListener("sales", (m) => {
        const tick = parse(m);
        if (tick) handlers.onEvent({ type: "sales", tick });
      });
      es.addEventListener("alerts", (m) => {
        const data = parse(m);
        if (data) handlers.onEvent({ type: "alerts", alertIds: data.alertIds ?? [], stores: data.stores ?? [] });
      });
      es.addEventListener("resync", () => handlers.onEvent({ type: "resync" }));
      // The browser would reconnect with the same (soon expired) ticket: close and take a
      // new one instead.
      es.onerror = () => {
        es.close();
        if (source === es) source = null;
        retry();
      };
    };
    const retry = () => {
      if (stopped) return;
      failures += 1;
      status("reconnecting");
      const delay = Math.min(LIVE_RETRY_MS_MAX, 1000 * 2 ** Math.min(failures - 1, 5));
      timer = setTimeout(() => void connect(), delay * (0.75 + Math.random() / 2));
    };
    void connect();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      source?.close();
    };
  }

  // Saved views live at the hub, per user (`/api/v1/views`), so they follow the user
  // from browser to browser and into the desktop app.
  async savedViews(): Promise<SavedView[]> {
    const reply = await this.get<{ items: HubView[] }>("/api/v1/views");
    return reply.items.map(fromHubView).filter((v): v is SavedView => v !== null);
  }

  async saveView(view: NewSavedView): Promise<SavedView> {
    const { id, name, ...settings } = view;
    const saved = await this.send<HubView>("PUT", `/api/v1/views/${encodeURIComponent(id ?? newViewId())}`, {
      name,
      view: settings,
    });
    const out = fromHubView(saved);
    if (!out) throw new DataError("server", "The hub answered with a view it cannot read.");
    return out;
  }

  async deleteView(id: string): Promise<void> {
    await this.request(`/api/v1/views/${encodeURIComponent(id)}`, { method: "DELETE" });
  }

  // ---------------------------------------------------------------------------------

  private accept(reply: TokenReply) {
    this.access = { token: reply.access_token, expiresAt: Date.now() + reply.expires_in * 1000 };
    this.storage?.setItem(ACCESS_KEY, JSON.stringify(this.access));
    if (reply.refresh_token) this.storage?.setItem(REFRESH_KEY, reply.refresh_token);
  }

  private clear() {
    this.access = null;
    this.storage?.removeItem(REFRESH_KEY);
    this.storage?.removeItem(ACCESS_KEY);
  }

  private async ensureFresh(): Promise<void> {
    if (this.access && this.access.expiresAt - Date.now() > RENEW_BEFORE_MS) return;
    await this.renew();
  }

  /** Exchanges the refresh token for new tokens, once for all concurrent callers. */
  private renew(): Promise<void> {
    if (!this.renewing) {
      this.renewing = (async () => {
        const refresh = this.storage?.getItem(REFRESH_KEY);
        if (!refresh) throw new DataError("unauthorized", "Your session has ended. Please sign in again.");
        try {
          this.accept(await this.tokenRequest({ grant_type: "refresh_token", refresh_token: refresh }));
        } catch (e) {
          if (e instanceof DataError && e.kind !== "network") this.clear();
          throw e;
        }
      })().finally(() => {
        this.renewing = null;
      });
    }
    return this.renewing;
  }

  private async tokenRequest(form: Record<string, string>): Promise<TokenReply> {
    let response: Response;
    try {
      response = await fetch(`${this.base}/oauth/token`, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(form),
        credentials: "omit",
      });
    } catch {
      throw new DataError("network", "The hub cannot be reached.");
    }
    if (response.ok) return (await response.json()) as TokenReply;
    if (response.status === 429) throw new DataError("server", "Too many attempts. Wait a moment and try again.", 429);
    if (response.status >= 500) throw new DataError("server", "The hub could not sign you in right now.", response.status);
    const grant = form.grant_type;
    throw new DataError(
      "unauthorized",
      grant === "password" ? "Tenant, user name or password is not right." : "Your session has ended. Please sign in again.",
      response.status,
    );
  }

  private async request(path: string, init: RequestInit = {}, retried = false): Promise<Response> {
    if (this.transport) {
      const response = await this.transport(path, init);
      if (!response.ok) throw await errorOf(response);
      return response;
    }
    await this.ensureFresh();
    const headers = new Headers(init.headers);
    headers.set("Authorization", `Bearer ${this.access?.token ?? ""}`);
    let response: Response;
    try {
      response = await fetch(`${this.base}${path}`, { ...init, headers, credentials: "omit" });
    } catch {
      throw new DataError("network", "The hub cannot be reached.");
    }
    if (response.status === 401 && !retried) {
      // The token may have been refused early (clock skew, a restarted hub): renew once.
      this.access = null;
      return this.request(path, init, true);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  private async get<T>(path: string): Promise<T> {
    return (await this.request(path)).json() as Promise<T>;
  }

  private async post<T>(path: string): Promise<T> {
    return (await this.request(path, { method: "POST" })).json() as Promise<T>;
  }

  private async send<T>(method: string, path: string, body: unknown): Promise<T> {
    const init = { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    return (await this.request(path, init)).json() as Promise<T>;
  }
}

async function errorOf(response: Response): Promise<DataError> {
  let message = "";
  try {
    const body = (await response.json()) as { message?: string };
    message = body.message ?? "";
  } catch {
    // Not JSON: the status says enough.
  }
  const kind: DataErrorKind =
    response.status === 401
      ? "unauthorized"
      : response.status === 403
        ? "forbidden"
        : response.status === 404
          ? "not_found"
          : response.status === 400
            ? "bad_request"
            : "server";
  const fallback: Record<DataErrorKind, string> = {
    unauthorized: "Your session has ended. Please sign in again.",
    forbidden: "Your role may not do this.",
    not_found: "Not found.",
    bad_request: "The request was not accepted.",
    network: "The hub cannot be reached.",
    server: "The hub had a problem answering. Try again shortly.",
  };
  return new DataError(kind, kind === "bad_request" && message ? message : fallback[kind], response.status);
}

interface HubView {
  id: string;
  name: string;
  view: Partial<SavedView> | null;
  savedAt: string;
}

/** A stored view as the explorer uses it; null when its settings are unreadable. */
function fromHubView(v: HubView): SavedView | null {
  const s = v.view;
  if (!s || typeof s !== "object" || !s.metric || !s.groupBy || !s.range) return null;
  return {
    id: v.id,
    name: v.name,
    metric: s.metric,
    groupBy: s.groupBy,
    range: s.range,
    stores: Array.isArray(s.stores) ? s.stores : [],
    chart: s.chart === "bar" ? "bar" : "line",
    savedAt: v.savedAt,
  };
}

function newViewId(): string {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function rangeParams(q: RangeQuery): URLSearchParams {
  const p = new URLSearchParams({ from: q.from.toISOString(), to: q.to.toISOString() });
  if (q.stores?.length) p.set("stores", q.stores.join(","));
  return p;
}

function seriesParams(q: SeriesQuery): URLSearchParams {
  const p = rangeParams(q);
  p.set("bucket", q.bucket);
  p.set("group_by", q.groupBy);
  if (q.category) p.set("category", q.category);
  if (q.items?.length) p.set("items", q.items.join(","));
  return p;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function parse(m: Event): any {
  try {
    return JSON.parse((m as MessageEvent<string>).data);
  } catch {
    return null;
  }
}

function safeSessionStorage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}
