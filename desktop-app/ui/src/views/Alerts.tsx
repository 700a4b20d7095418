// Alerts: arrive live, acknowledged and resolved by admins and store managers.

import { useRef, useState } from "react";
import { isDataError } from "../api/DataSource";
import type { Alert, AlertState } from "../api/types";
import { useData, useLoad, useSession } from "../app/session";
import { ago, dateTime } from "../components/format";
import { useLive } from "../components/live";
import { Empty, ErrorState, Loading } from "../components/States";
import { Segmented } from "./StoreDashboard";

type Filter = AlertState | "all";
/** Alerts shown at first and added by "Show more". */
const PAGE_LEN = 50;

const FILTERS: { name: Filter; label: string }[] = [
  { name: "open", label: "Open" },
  { name: "acknowledged", label: "Acknowledged" },
  { name: "resolved", label: "Resolved" },
  { name: "all", label: "All" },
];

export function Alerts() {
  const data = useData();
  const { identity } = useSession();
  const [filter, setFilter] = useState<Filter>("open");
  const [limit, setLimit] = useState(PAGE_LEN);
  const [store, setStore] = useState("");
  const [fresh, setFresh] = useState<Set<string>>(new Set());
  const [busy, setBusy] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const seen = useRef<Set<string> | null>(null);

  const load = useLoad(async () => {
    const [alerts, stores] = await Promise.all([
      data.alerts({ state: filter === "all" ? undefined : filter, stores: store ? [store] : undefined, limit }),
      data.stores(),
    ]);
    return { alerts, stores };
  }, [filter, store, limit]);

  const live = useLive((e) => {
    if (e.type === "alerts") {
      setFresh((f) => new Set([...f, ...e.alertIds]));
      load.reload();
    } else if (e.type === "resync") {
      load.reload();
    }
  });
  if (load.value && !seen.current) seen.current = new Set(load.value.alerts.map((a) => a.alertId));

  const canHandle = identity.role === "admin" || identity.role === "store_manager";
  const act = async (a: Alert, to: "acknowledge" | "resolve") => {
    setBusy(a.alertId);
    setActionError(null);
    try {
      if (to === "acknowledge") await data.acknowledgeAlert(a.alertId);
      else await data.resolveAlert(a.alertId);
      load.reload();
    } catch (e) {
      setActionError(isDataError(e) ? e.message : String(e));
    } finally {
      setBusy(null);
    }
  };

  const v = load.value;
  return (
    <div className="page" data-view="alerts">
      <div className="page-head">
        <div>
          <h1>Alerts</h1>
          <p className="muted">
            Raised by the stores, even while offline, and by the hub. New ones appear here as they arrive.{" "}
            <span className={`live-dot live-${live}`} data-live={live}>{live === "live" ? "Live" : "Connecting…"}</span>
          </p>
        </div>
        <div className="page-actions">
          <select aria-label="Store" value={store} onChange={(e) => { setStore(e.target.value); setLimit(PAGE_LEN); }} className="select">
            <option value="">All stores</option>
            {v?.stores.map((s) => <option key={s.storeId} value={s.storeId}>{s.name || s.storeId}</option>)}
          </select>
          <Segmented value={filter} onChange={(f) => { setFilter(f); setLimit(PAGE_LEN); }} options={FILTERS} />
        </div>
      </div>
      {actionError && <div className="notice notice-error" role="alert">{actionError}</div>}
      <div className="card">
        {load.state === "error" && !v && <ErrorState error={load.error} retry={load.reload} />}
        {!v && load.state === "loading" && <Loading rows={4} />}
        {v && v.alerts.length === 0 && (
          <Empty title={filter === "open" ? "No open alerts" : "No alerts"}>
            {filter === "open" ? "Everything is in order. New alerts appear here live." : "Nothing matches this filter."}
          </Empty>
        )}
        {v && v.alerts.length > 0 && (
          <ul className="alert-list" data-testid="alert-list">
            {v.alerts.map((a) => (
              <li
                key={a.alertId}
                className={`alert-item sev-${a.severity} ${fresh.has(a.alertId) && !seen.current?.has(a.alertId) ? "alert-new" : ""}`}
                data-alert={a.alertId}
                data-state={a.state}
                data-kind={a.kind}
                data-store={a.storeId}
              >
                <div className="alert-main">
                  <div className="alert-title">
                    <span className={`badge sev-badge sev-${a.severity}`}>{a.severity}</span>
                    <span className="alert-kind">{kindLabel(a.kind)}</span>
                    <span className="muted">· {a.storeId} · {a.subject}</span>
                  </div>
                  <div className="alert-message">{a.message}</div>
                  <div className="muted small">
                    Raised {ago(a.raisedAt)} ({dateTime(a.raisedAt)})
                    {a.state !== "open" && a.changedBy && <> · {a.state} by {a.changedBy}</>}
                  </div>
                </div>
                <div className="alert-actions">
                  <span className={`badge state-${a.state}`}>{a.state}</span>
                  {canHandle && a.state === "open" && (
                    <button className="btn btn-secondary btn-small" disabled={busy === a.alertId} onClick={() => void act(a, "acknowledge")} data-action="acknowledge">
                      Acknowledge
                    </button>
                  )}
                  {canHandle && a.state !== "resolved" && (
                    <button className="btn btn-ghost btn-small" disabled={busy === a.alertId} onClick={() => void act(a, "resolve")} data-action="resolve">
                      Resolve
                    </button>
                  )}
                </div>
              </li>
            ))}
          </ul>
        )}
        {v && v.alerts.length >= limit && (
          <div className="more">
            <button className="btn btn-ghost" onClick={() => setLimit((l) => l + PAGE_LEN)}>Show more</button>
          </div>
        )}
      </div>
    </div>
  );
}

function kindLabel(kind: string): string {
  const s = kind.replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}
