// One store: sales by hour, top items, payment mix, basket size, and its sync state.

import { useEffect, useState } from "react";
import { isDataError } from "../api/DataSource";
import type { Basket, RangeName, SeriesResult, StoreStatus, TopItem } from "../api/types";
import { useData, useLoad } from "../app/session";
import { ChartCard, EChart } from "../components/Chart";
import { count, dateTime, day, money, number, time } from "../components/format";
import { RANGES, minute, rangeOf } from "../components/ranges";
import { Empty, ErrorState, Loading, NotFound } from "../components/States";
import { SyncBadge, completeText, isBehind } from "../components/sync";
import { useLive, useThrottled } from "../components/live";

interface StoreData {
  store: StoreStatus;
  sales: SeriesResult;
  payments: SeriesResult;
  top: TopItem[];
  basket: Basket;
}

export function StoreDashboard({ storeId }: { storeId: string }) {
  const data = useData();
  const [range, setRange] = useState<RangeName>("today");
  const [now, setNow] = useState(() => minute(new Date()));
  useEffect(() => {
    const t = setInterval(() => setNow(minute(new Date())), 60_000);
    return () => clearInterval(t);
  }, []);

  const load = useLoad<StoreData & { from: Date; to: Date }>(async () => {
    // The store's own day and hours: "today" starts at its local midnight.
    const store = await data.store(storeId);
    const { from, to, bucket } = rangeOf(range, now, store.timeZone);
    const stores = [storeId];
    const [sales, payments, top, basket] = await Promise.all([
      data.series({ bucket, groupBy: "none", from, to, stores }),
      data.series({ bucket: range === "today" ? "hour" : "day", groupBy: "payment", from, to, stores }),
      data.topItems({ from, to, stores, limit: 10 }),
      data.basket({ from, to, stores }),
    ]);
    return { store, sales, payments, top, basket, from, to };
  }, [storeId, range, now.getTime()]);

  const reloadSoon = useThrottled(load.reload, 4000);
  useLive((e) => {
    if (e.type === "sales" && e.tick.storeId === storeId) reloadSoon();
    if (e.type === "resync") reloadSoon();
  }, [storeId]);

  if (load.state === "error" && isDataError(load.error, "not_found")) return <NotFound what="store" />;
  const v = load.value;
  const bucketLabel = range === "today" ? "hour" : range === "90d" ? "week" : "day";
  const points = v?.sales.series[0]?.points ?? [];
  const zone = v?.store.timeZone;
  // Buckets start at the store's local midnight and hours: label them in its time zone.
  const fmtT = (t: string) => (bucketLabel === "hour" ? time(t, zone) : day(t, zone));
  const payments = (v?.payments.series ?? []).map((g) => ({
    name: g.group,
    value: round(g.points.reduce((a, p) => a + p.revenue, 0)),
  })).sort((a, b) => b.value - a.value);
  const salesTotal = round(points.reduce((a, p) => a + p.revenue, 0));

  return (
    <div className="page" data-view="store" data-store={storeId} data-from={v?.from.toISOString()} data-to={v?.to.toISOString()} data-bucket={v?.sales.bucket}>
      <div className="page-head">
        <div>
          <h1>{v?.store.name || storeId}</h1>
          <p className="muted">
            {storeId}
            {v && <> · {v.store.region} · {v.store.timeZone}</>}
          </p>
        </div>
        <div className="page-actions">
          {v && <SyncBadge store={v.store} />}
          <Segmented value={range} onChange={setRange} />
        </div>
      </div>

      {load.state === "error" && !v && <div className="card"><ErrorState error={load.error} retry={load.reload} /></div>}
      {!v && load.state === "loading" && <div className="card"><Loading rows={5} /></div>}

      {v && (
        <>
          {isBehind(v.store.completeUpTo, v.to) && (
            <div className="notice notice-warn" data-testid="completeness">
              This store is behind: its figures are {completeText(v.store.completeUpTo, zone)} and may still grow.
            </div>
          )}
          <div className="grid kpis">
            <div className="card kpi" data-kpi="revenue" data-value={String(salesTotal)}>
              <div className="kpi-label">Revenue</div>
              <div className="kpi-value">{money(salesTotal)}</div>
              <div className="kpi-foot muted">{RANGES.find((r) => r.name === range)?.label}</div>
            </div>
            <div className="card kpi" data-kpi="transactions" data-value={String(v.basket.transactions)}>
              <div className="kpi-label">Transactions</div>
              <div className="kpi-value">{count(v.basket.transactions)}</div>
              <div className="kpi-foot muted">{count(v.basket.refunds)} refunds · {count(v.basket.voids)} voids</div>
            </div>
            <div className="card kpi" data-kpi="basket-value" data-value={String(v.basket.averageBasketValue ?? 0)}>
              <div className="kpi-label">Average basket</div>
              <div className="kpi-value">{money(v.basket.averageBasketValue)}</div>
              <div className="kpi-foot muted">per transaction</div>
            </div>
            <div className="card kpi" data-kpi="basket-units" data-value={String(v.basket.averageBasketUnits ?? 0)}>
              <div className="kpi-label">Basket size</div>
              <div className="kpi-value">{number(v.basket.averageBasketUnits)}</div>
              <div className="kpi-foot muted">units per transaction</div>
            </div>
          </div>

          <div className="grid two">
            <ChartCard
              id="sales-by-time"
              title={`Sales by ${bucketLabel}`}
              subtitle={`Store time (${zone}) · ${completeText(v.store.completeUpTo, zone)}`}
              total={salesTotal}
              table={{
                columns: ["bucket_start", "revenue", "transactions", "units"],
                rows: points.map((p) => [p.t, p.revenue, p.transactions, p.units]),
              }}
            >
              {points.length === 0 ? (
                <Empty title="No sales in this period" />
              ) : (
                <EChart
                  option={{
                    tooltip: { trigger: "axis", valueFormatter: (x: number) => money(x) },
                    grid: { left: 8, right: 12, top: 16, bottom: 8, containLabel: true },
                    xAxis: { type: "category", data: points.map((p) => fmtT(p.t)) },
                    yAxis: { type: "value", axisLabel: { formatter: (x: number) => money(x, true) } },
                    series: [{ name: "Revenue", type: "bar", data: points.map((p) => p.revenue), barMaxWidth: 22 }],
                  }}
                />
              )}
            </ChartCard>

            <ChartCard
              id="payment-mix"
              title="Payment mix"
              subtitle="Revenue by payment method"
              total={round(payments.reduce((a, p) => a + p.value, 0))}
              table={{ columns: ["payment_method", "revenue"], rows: payments.map((p) => [p.name, p.value]) }}
            >
              {payments.length === 0 ? (
                <Empty title="No payments in this period" />
              ) : (
                <EChart
                  option={{
                    tooltip: { trigger: "item", valueFormatter: (x: number) => money(x) },
                    legend: { bottom: 0, type: "scroll" },
                    series: [{
                      type: "pie",
                      radius: ["45%", "72%"],
                      center: ["50%", "45%"],
                      itemStyle: { borderColor: "#fff", borderWidth: 2 },
                      label: { show: !narrow(), formatter: "{b} {d}%" },
                      data: payments,
                    }],
                  }}
                />
              )}
            </ChartCard>
          </div>

          <ChartCard
            id="top-items"
            title="Top items"
            subtitle="By revenue"
            total={round(v.top.reduce((a, t) => a + t.revenue, 0))}
            table={{ columns: ["sku", "revenue", "units", "transactions"], rows: v.top.map((t) => [t.sku, t.revenue, t.units, t.transactions]) }}
          >
            {v.top.length === 0 ? (
              <Empty title="No items sold in this period" />
            ) : (
              <EChart
                height={Math.max(220, v.top.length * 30 + 40)}
                option={{
                  tooltip: { trigger: "axis", valueFormatter: (x: number) => money(x) },
                  grid: { left: 8, right: 24, top: 8, bottom: 8, containLabel: true },
                  xAxis: { type: "value", axisLabel: { formatter: (x: number) => money(x, true) } },
                  yAxis: { type: "category", inverse: true, data: v.top.map((t) => t.sku) },
                  series: [{ name: "Revenue", type: "bar", data: v.top.map((t) => t.revenue), barMaxWidth: 16, itemStyle: { color: "#16a34a" } }],
                }}
              />
            )}
          </ChartCard>

          <section className="card">
            <header className="card-head"><h2 className="card-title">Sync</h2></header>
            <div className="card-body">
              <dl className="facts">
                <div><dt>Last contact</dt><dd>{dateTime(v.store.lastSeen)}</dd></div>
                <div><dt>Complete up to</dt><dd>{dateTime(v.store.completeUpTo)}</dd></div>
                <div><dt>Backlog</dt><dd>{count(v.store.backlog)} events</dd></div>
                <div><dt>Devices</dt><dd>{v.store.devices.length}</dd></div>
              </dl>
            </div>
          </section>
        </>
      )}
    </div>
  );
}

export function Segmented<T extends string>({ value, onChange, options = RANGES as unknown as { name: T; label: string }[] }: {
  value: T; onChange: (v: T) => void; options?: { name: T; label: string }[];
}) {
  return (
    <div className="segmented" role="group" aria-label="Range">
      {options.map((o) => (
        <button key={o.name} className={o.name === value ? "active" : ""} aria-pressed={o.name === value} onClick={() => onChange(o.name)}>
          {o.label}
        </button>
      ))}
    </div>
  );
}

function narrow(): boolean {
  return typeof window !== "undefined" && window.matchMedia?.("(max-width: 640px)").matches === true;
}

function round(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}
