// Chain overview: today's revenue by store against the same weekday last week, the stores
// with their sync state, a live ticker, and totals that name the stores that are behind.

import { useEffect, useMemo, useRef, useState } from "react";
import type { SalesTick, SeriesResult, StoreStatus } from "../api/types";
import { Link } from "../app/router";
import { useData, useLoad, useSession } from "../app/session";
import { ChartCard, EChart } from "../components/Chart";
import { count, money, percentChange, time } from "../components/format";
import { WEEK_MS, minute, startOfToday } from "../components/ranges";
import { Empty, ErrorState, Loading } from "../components/States";
import { SyncBadge, completeText, isBehind } from "../components/sync";
import { useLive, useThrottled } from "../components/live";

interface OverviewData {
  stores: StoreStatus[];
  today: SeriesResult;
  lastWeek: SeriesResult;
  openAlerts: number;
  from: Date;
  to: Date;
}

const TICKER_LEN_MAX = 12;
/** Open alerts counted at most (the list endpoint pages; beyond this the KPI says "500+"). */
const OPEN_ALERTS_COUNTED_MAX = 500;

export function Overview() {
  const data = useData();
  const { identity } = useSession();
  const [now, setNow] = useState(() => minute(new Date()));
  const [ticks, setTicks] = useState<(SalesTick & { key: number })[]>([]);
  const tickSeq = useRef(0);

  const load = useLoad<OverviewData>(async () => {
    const from = startOfToday(now);
    const to = new Date(now.getTime() + 60_000);
    const [stores, today, lastWeek, alerts] = await Promise.all([
      data.stores(),
      data.series({ bucket: "hour", groupBy: "store", from, to }),
      data.series({
        bucket: "hour",
        groupBy: "store",
        from: new Date(from.getTime() - WEEK_MS),
        to: new Date(to.getTime() - WEEK_MS),
      }),
      data.alerts({ state: "open", limit: OPEN_ALERTS_COUNTED_MAX }),
    ]);
    return { stores, today, lastWeek, openAlerts: alerts.length, from, to };
  }, [now.getTime()]);

  // Live: ticks go to the ticker; figures reload at most every few seconds.
  const reloadSoon = useThrottled(load.reload, 4000);
  const live = useLive((e) => {
    if (e.type === "sales") {
      setTicks((t) => [{ ...e.tick, key: ++tickSeq.current }, ...t].slice(0, TICKER_LEN_MAX));
      reloadSoon();
    } else if (e.type === "alerts" || e.type === "resync") {
      reloadSoon();
    }
  });

  useEffect(() => {
    const t = setInterval(() => setNow(minute(new Date())), 60_000);
    return () => clearInterval(t);
  }, []);

  const v = load.value;
  const model = useMemo(() => (v ? buildModel(v) : null), [v]);

  return (
    <div className="page" data-view="overview" data-from={v?.from.toISOString()} data-to={v?.to.toISOString()}>
      <div className="page-head">
        <div>
          <h1>{identity.role === "store_manager" ? "Your stores today" : "Chain overview"}</h1>
          <p className="muted">
            Today so far, against the same weekday last week up to the same time.
          </p>
        </div>
      </div>

      {load.state === "error" && !v && <div className="card"><ErrorState error={load.error} retry={load.reload} /></div>}
      {load.state === "loading" && !v && (
        <div className="grid kpis">
          {[0, 1, 2, 3].map((i) => (
            <div className="card" key={i}><Loading rows={2} /></div>
          ))}
        </div>
      )}

      {v && model && (
        <>
          <div className="grid kpis">
            <Kpi
              id="revenue"
              label="Revenue today"
              value={money(model.totalToday)}
              raw={model.totalToday}
              delta={percentChange(model.totalToday, model.totalLastWeek)}
              up={model.totalToday >= model.totalLastWeek}
              hint={`${money(model.totalLastWeek)} same time last week`}
            />
            <Kpi id="transactions" label="Transactions" value={count(model.txToday)} raw={model.txToday}
              delta={percentChange(model.txToday, model.txLastWeek)} up={model.txToday >= model.txLastWeek}
              hint={`${count(model.txLastWeek)} last week`} />
            <Kpi id="basket" label="Average basket" value={money(model.txToday ? model.totalToday / model.txToday : null)}
              raw={model.txToday ? model.totalToday / model.txToday : 0} hint="revenue per transaction" />
            <Kpi id="alerts" label="Open alerts" value={v.openAlerts >= OPEN_ALERTS_COUNTED_MAX ? `${count(v.openAlerts)}+` : count(v.openAlerts)} raw={v.openAlerts}
              hint={<Link href="/alerts">See alerts</Link>} tone={v.openAlerts > 0 ? "warn" : undefined} />
          </div>

          <Completeness rows={model.rows} />

          <div className="grid two-one">
            <ChartCard
              id="revenue-by-store"
              title="Revenue today by store"
              subtitle={`Until ${time(v.to.toISOString())}, against the same weekday last week`}
              total={model.totalToday}
              table={{
                columns: ["store", "name", "revenue_today", "revenue_same_weekday_last_week", "complete_up_to"],
                rows: model.rows.map((r) => [r.storeId, r.name, r.today, r.lastWeek, r.completeUpTo]),
              }}
            >
              {model.rows.length === 0 ? (
                <Empty title="No stores yet">Add a store on the hub and enroll its agent.</Empty>
              ) : (
                <EChart
                  height={Math.max(240, model.rows.length * 34 + 80)}
                  option={{
                    tooltip: { trigger: "axis", valueFormatter: (x: number) => money(x) },
                    legend: { top: 0, data: ["Today", "Same weekday last week"] },
                    grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
                    xAxis: { type: "value", axisLabel: { formatter: (x: number) => money(x, true) } },
                    yAxis: {
                      type: "category",
                      inverse: true,
                      data: model.rows.map((r) => (r.behind ? `${r.name} ⚠` : r.name)),
                    },
                    series: [
                      { name: "Today", type: "bar", data: model.rows.map((r) => r.today), barMaxWidth: 14 },
                      {
                        name: "Same weekday last week",
                        type: "bar",
                        data: model.rows.map((r) => r.lastWeek),
                        barMaxWidth: 14,
                        itemStyle: { color: "#cbd5e1" },
                      },
                    ],
                  }}
                />
              )}
            </ChartCard>
            <Ticker ticks={ticks} status={live} stores={v.stores} />
          </div>

          <section aria-label="Stores">
            <h2 className="section-title">Stores</h2>
            {model.rows.length === 0 ? (
              <div className="card"><Empty title="No stores to show" /></div>
            ) : (
              <div className="grid stores" data-testid="store-grid">
                {model.rows.map((r) => (
                  <Link key={r.storeId} href={`/stores/${encodeURIComponent(r.storeId)}`} className="card store-card" data-store={r.storeId} data-revenue={String(r.today)}>
                    <div className="store-card-head">
                      <div>
                        <div className="store-name">{r.name}</div>
                        <div className="muted small">{r.name === r.storeId ? r.region : `${r.storeId} · ${r.region}`}</div>
                      </div>
                      <SyncBadge store={r.status} />
                    </div>
                    <div className="store-figure">{money(r.today)}</div>
                    <div className="small">
                      <span className={r.today >= r.lastWeek ? "up" : "down"}>{percentChange(r.today, r.lastWeek)}</span>
                      <span className="muted"> vs {money(r.lastWeek)}</span>
                    </div>
                    <div className={`small ${r.behind ? "warn-text" : "muted"}`}>{completeText(r.completeUpTo)}</div>
                  </Link>
                ))}
              </div>
            )}
          </section>
        </>
      )}
    </div>
  );
}

function Kpi({ id, label, value, raw, delta, up, hint, tone }: {
  id: string; label: string; value: string; raw: number; delta?: string; up?: boolean;
  hint?: React.ReactNode; tone?: "warn";
}) {
  return (
    <div className={`card kpi ${tone === "warn" ? "kpi-warn" : ""}`} data-kpi={id} data-value={String(Math.round(raw * 10_000) / 10_000)}>
      <div className="kpi-label">{label}</div>
      <div className="kpi-value">{value}</div>
      <div className="kpi-foot">
        {delta && <span className={up ? "up" : "down"}>{delta}</span>}
        {hint && <span className="muted">{hint}</span>}
      </div>
    </div>
  );
}

/** Names the stores whose figures may still grow instead of silently under-counting. */
function Completeness({ rows }: { rows: Row[] }) {
  const behind = rows.filter((r) => r.behind);
  if (behind.length === 0) {
    return (
      <div className="notice notice-ok" data-testid="completeness" data-behind="0">
        {rows.length === 1 ? "The store has" : `All ${rows.length} stores have`} synced up to the last few minutes: these totals are complete.
      </div>
    );
  }
  return (
    <div className="notice notice-warn" data-testid="completeness" data-behind={String(behind.length)}>
      <strong>
        {behind.length} of {rows.length} {rows.length === 1 ? "store is" : "stores are"} behind
      </strong>
      : the totals do not yet include what {behind.length === 1 ? "it" : "they"} recorded since. {" "}
      {behind.map((r, i) => (
        <span key={r.storeId} data-behind-store={r.storeId}>
          {i > 0 && "; "}
          {r.name} ({completeText(r.completeUpTo)})
        </span>
      ))}
    </div>
  );
}

function Ticker({ ticks, status, stores }: { ticks: (SalesTick & { key: number })[]; status: string; stores: StoreStatus[] }) {
  const names = new Map(stores.map((s) => [s.storeId, s.name]));
  return (
    <section className="card ticker" aria-label="Live sales" data-testid="ticker">
      <header className="card-head">
        <h2 className="card-title">Live sales</h2>
        <span className={`live-dot live-${status}`} data-live={status}>
          {status === "live" ? "Live" : status === "unavailable" ? "Unavailable" : "Connecting…"}
        </span>
      </header>
      <div className="card-body">
        {ticks.length === 0 ? (
          <Empty title="Waiting for sales">New sales appear here the moment a store syncs them.</Empty>
        ) : (
          <ul className="ticker-list">
            {ticks.map((t) => (
              <li key={t.key} className="ticker-item" data-tick-store={t.storeId}>
                <span className="ticker-store">{names.get(t.storeId) ?? t.storeId}</span>
                <span className="ticker-amount">+{money(t.revenue)}</span>
                <span className="muted small">
                  {count(t.transactions)} sale{t.transactions === 1 ? "" : "s"} · {time(t.lastAt)}
                </span>
              </li>
            ))}
          </ul>
        )}
      </div>
    </section>
  );
}

interface Row {
  storeId: string;
  name: string;
  region: string;
  today: number;
  lastWeek: number;
  txToday: number;
  completeUpTo: string | null;
  behind: boolean;
  status: StoreStatus;
}

function buildModel(v: OverviewData) {
  const sum = (s: SeriesResult, store: string, f: "revenue" | "transactions") =>
    (s.series.find((g) => g.group === store)?.points ?? []).reduce((a, p) => a + p[f], 0);
  const now = Date.now();
  const rows: Row[] = v.stores.map((s) => ({
    storeId: s.storeId,
    name: s.name || s.storeId,
    region: s.region,
    today: round2(sum(v.today, s.storeId, "revenue")),
    lastWeek: round2(sum(v.lastWeek, s.storeId, "revenue")),
    txToday: sum(v.today, s.storeId, "transactions"),
    completeUpTo: s.completeUpTo,
    behind: isBehind(s.completeUpTo, v.to, now),
    status: s,
  }));
  rows.sort((a, b) => b.today - a.today || a.storeId.localeCompare(b.storeId));
  const all = (s: SeriesResult, f: "revenue" | "transactions") =>
    s.series.reduce((a, g) => a + g.points.reduce((b, p) => b + p[f], 0), 0);
  return {
    rows,
    totalToday: round2(all(v.today, "revenue")),
    totalLastWeek: round2(all(v.lastWeek, "revenue")),
    txToday: all(v.today, "transactions"),
    txLastWeek: all(v.lastWeek, "transactions"),
  };
}

function round2(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}
