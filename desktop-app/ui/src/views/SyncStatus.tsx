// Sync status per store: last contact, backlog, lag, clock skew, watermark, devices.

import { useEffect, useState } from "react";
import { Link } from "../app/router";
import { useData, useLoad } from "../app/session";
import { ago, count, dateTime, duration } from "../components/format";
import { useLive, useThrottled } from "../components/live";
import { Empty, ErrorState, Loading } from "../components/States";
import { SyncBadge } from "../components/sync";

export function SyncStatus() {
  const data = useData();
  const load = useLoad(() => data.stores(), []);
  const reloadSoon = useThrottled(load.reload, 3000);
  useLive(() => reloadSoon());
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => {
      setNow(Date.now());
      load.reload();
    }, 30_000);
    return () => clearInterval(t);
  }, [load.reload]);

  const v = load.value;
  return (
    <div className="page" data-view="sync">
      <div className="page-head">
        <div>
          <h1>Sync status</h1>
          <p className="muted">Each store's last contact and how far its data at the hub is complete.</p>
        </div>
      </div>
      <div className="card">
        {load.state === "error" && !v && <ErrorState error={load.error} retry={load.reload} />}
        {!v && load.state === "loading" && <Loading rows={4} />}
        {v && v.length === 0 && <Empty title="No stores yet">Add a store on the hub and enroll its agent.</Empty>}
        {v && v.length > 0 && (
          <div className="table-wrap">
            <table className="table" data-testid="sync-table">
              <thead>
                <tr>
                  <th>Store</th><th>State</th><th>Last contact</th><th>Complete up to</th>
                  <th className="num">Backlog</th><th className="num">Lag</th><th className="num">Clock skew</th><th className="num">Devices</th>
                </tr>
              </thead>
              <tbody>
                {v.map((s) => (
                  <tr key={s.storeId} data-store={s.storeId}>
                    <td><Link href={`/stores/${encodeURIComponent(s.storeId)}`}>{s.name || s.storeId}</Link><div className="muted small">{s.storeId}</div></td>
                    <td><SyncBadge store={s} now={now} /></td>
                    <td title={dateTime(s.lastSeen)}>{ago(s.lastSeen, now)}</td>
                    <td>{dateTime(s.completeUpTo)}</td>
                    <td className="num">{count(s.backlog)}</td>
                    <td className="num">{duration(s.lagMs)}</td>
                    <td className="num">{duration(Math.abs(s.clockSkewMs))}</td>
                    <td className="num">{s.devices.length}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
    </div>
  );
}
