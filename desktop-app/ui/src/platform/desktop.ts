// The desktop app's DataSource: the hub while it answers, the store agent's local API while
// it does not. The Rust side decides (it probes the hub) and announces each change; this
// follows it, tells the views to reload (`resync`), and shows the offline banner.

import { DataError, type DataSource, type LiveHandlers, type SourceInfo } from "../api/DataSource";
import { HubDataSource } from "../api/hub";
import type {
  AlertQuery,
  Credentials,
  Identity,
  InventoryQuery,
  NewSavedView,
  RangeQuery,
  SeriesQuery,
} from "../api/types";
import { AgentDataSource, subscribeLive } from "./agent";
import { showBanner } from "./banner";
import { startReports } from "./report";
import { api, identityOf, ipc, onConnection, type Connection } from "./tauri";

export class DesktopDataSource implements DataSource {
  private connection: Connection | null = null;
  private identity: Identity | null = null;
  private agent: AgentDataSource | null = null;
  private readonly hub = new HubDataSource({
    transport: async (path, init) => {
      try {
        const method = (init?.method ?? "GET").toUpperCase() as "GET" | "POST" | "PUT" | "DELETE";
        const body = typeof init?.body === "string" ? (JSON.parse(init.body) as unknown) : undefined;
        return await api(method, path, "hub", body);
      } catch (e) {
        throw new DataError("network", `The hub cannot be reached (${String(e)}).`);
      }
    },
  });
  private readonly subscribers = new Set<LiveHandlers>();

  constructor() {
    void ipc.connection().then((c) => this.follow(c));
    void onConnection((c) => this.follow(c));
    startReports(() => this.info);
  }

  get info(): SourceInfo {
    if (this.connection?.source === "agent") return this.agentSource().info;
    return this.hub.info;
  }

  private follow(c: Connection) {
    const before = this.connection?.source ?? null;
    this.connection = c;
    showBanner(c);
    if (before !== c.source) {
      // Everything shown came from the other source: reload from this one.
      for (const h of this.subscribers) h.onEvent({ type: "resync" });
    }
  }

  private agentSource(): AgentDataSource {
    if (!this.identity) throw new DataError("unauthorized", "Please sign in.");
    if (!this.agent) this.agent = new AgentDataSource(this.identity);
    return this.agent;
  }

  private current(): DataSource {
    return this.connection?.source === "agent" ? this.agentSource() : this.hub;
  }

  async signIn(c: Credentials): Promise<Identity> {
    try {
      this.identity = identityOf(await ipc.signIn(c.tenant, c.username, c.password));
    } catch (e) {
      const message = String(e);
      throw new DataError(message.includes("refused") ? "unauthorized" : "network", message.replace(/^sign-in refused: /, ""));
    }
    this.agent = null;
    return this.identity;
  }

  async restore(): Promise<Identity | null> {
    const session = await ipc.session();
    this.identity = session ? identityOf(session) : null;
    this.agent = null;
    return this.identity;
  }

  async signOut(): Promise<void> {
    this.identity = null;
    this.agent = null;
    await ipc.signOut();
  }

  async me(): Promise<Identity> {
    if (!this.identity) throw new DataError("unauthorized", "Please sign in.");
    return this.identity;
  }

  stores() {
    return this.current().stores();
  }
  store(storeId: string) {
    return this.current().store(storeId);
  }
  series(q: SeriesQuery) {
    return this.current().series(q);
  }
  seriesCsv(q: SeriesQuery) {
    return this.current().seriesCsv(q);
  }
  topItems(q: RangeQuery & { limit?: number }) {
    return this.current().topItems(q);
  }
  basket(q: RangeQuery) {
    return this.current().basket(q);
  }
  inventory(q: InventoryQuery) {
    return this.current().inventory(q);
  }
  alerts(q: AlertQuery) {
    return this.current().alerts(q);
  }
  acknowledgeAlert(alertId: string) {
    return this.current().acknowledgeAlert(alertId);
  }
  resolveAlert(alertId: string) {
    return this.current().resolveAlert(alertId);
  }

  subscribe(handlers: LiveHandlers, _stores?: string[]): () => void {
    // The app follows the current source's stream (and notifies new alerts natively);
    // events of the other source are dropped.
    this.subscribers.add(handlers);
    const stops = (["hub", "agent"] as const).map((source) =>
      subscribeLive(source, {
        onEvent: (event) => {
          if ((this.connection?.source ?? "hub") === source) handlers.onEvent(event);
        },
        onStatus: source === "hub" ? handlers.onStatus : undefined,
      }),
    );
    return () => {
      this.subscribers.delete(handlers);
      for (const stop of stops) stop();
    };
  }

  savedViews() {
    return this.current().savedViews();
  }
  saveView(view: NewSavedView) {
    return this.current().saveView(view);
  }
  deleteView(id: string) {
    return this.current().deleteView(id);
  }
}
