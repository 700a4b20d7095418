// The customizable view: metric × grouping × range × stores, saved under a name per user
// and reopened from /explore/<id>.

import { useEffect, useMemo, useState } from "react";
import { isDataError } from "../api/DataSource";
import type { Bucket, GroupBy, Metric, NewSavedView, RangeName, SavedView, SeriesPoint } from "../api/types";
import { Link, navigate } from "../app/router";
import { useData, useLoad } from "../app/session";
import { ChartCard, EChart } from "../components/Chart";
import { count, dateTime, day, money, number, time } from "../components/format";
import { RANGES, minute, rangeOf } from "../components/ranges";
import { Empty, ErrorState, Loading, NotFound } from "../components/States";

const METRICS: { name: Metric; label: string; money: boolean }[] = [
  { name: "revenue", label: "Revenue", money: true },
  { name: "transactions", label: "Transactions", money: false },
  { name: "units", label: "Units sold", money: false },
  { name: "averageBasket", label: "Average basket", money: true },
  { name: "refunds", label: "Refunds", money: false },
  { name: "refundAmount", label: "Refund amount", money: true },
  { name: "voids", label: "Voids", money: false },
];

const GROUPS: { name: GroupBy; label: string }[] = [
  { name: "none", label: "Whole chain" },
  { name: "store", label: "Store" },
  { name: "region", label: "Region" },
  { name: "category", label: "Category" },
  { name: "payment", label: "Payment method" },
];

/** Lines drawn at most; the rest are summed into "other". */
const GROUPS_SHOWN_MAX = 8;

const DEFAULT: NewSavedView = { name: "", metric: "revenue", groupBy: "store", range: "7d", stores: [], chart: "line" };

export function Explore({ viewId }: { viewId?: string }) {
  const data = useData();
  const [saved, setSaved] = useState<SavedView[] | null>(null);
  const [view, setView] = useState<NewSavedView>(DEFAULT);
  const [missing, setMissing] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const [now] = useState(() => minute(new Date()));

  useEffect(() => {
    data.savedViews().then((list) => {
      setSaved(list);
      if (viewId) {
        const found = list.find((v) => v.id === viewId);
        if (found) setView(found);
        else setMissing(true);
      }
    }, () => setSaved([]));
  }, [data, viewId]);

  const stores = useLoad(() => data.stores(), []);
  const { from, to, bucket } = rangeOf(view.range, now);
  const load = useLoad(
    () => data.series({ bucket, groupBy: view.groupBy, from, to, stores: view.stores.length ? view.stores : undefined }),
    [view.metric, view.groupBy, view.range, view.stores.join(","), now.getTime()],
  );

  const metric = METRICS.find((m) => m.name === view.metric) ?? METRICS[0]!;
  const fmt = (x: number) => (metric.money ? money(x) : number(x));
  const model = useMemo(() => (load.value ? buildModel(load.value.series, view.metric, load.value.bucket) : null), [load.value, view.metric]);

  if (missing) return <NotFound what="saved view" />;

  const save = async () => {
    const name = view.name.trim() || `${metric.label} by ${GROUPS.find((g) => g.name === view.groupBy)?.label.toLowerCase()}, ${RANGES.find((r) => r.name === view.range)?.label.toLowerCase()}`;
    try {
      const s = await data.saveView({ ...view, name });
      setSaved((list) => [s, ...(list ?? []).filter((v) => v.id !== s.id)]);
      setView(s);
      setNotice(`Saved “${s.name}”.`);
      navigate(`/explore/${s.id}`, true);
    } catch (e) {
      setNotice(isDataError(e) ? e.message : "Could not save the view.");
    }
  };
  const remove = async (id: string) => {
    await data.deleteView(id);
    setSaved((list) => (list ?? []).filter((v) => v.id !== id));
    if (view.id === id) {
      setView(DEFAULT);
      navigate("/explore", true);
    }
  };
  const fmtT = (t: string) => (bucket === "hour" ? time(t) : day(t));

  return (
    <div className="page" data-view="explore">
      <div className="page-head">
        <div>
          <h1>Explore</h1>
          <p className="muted">Pick a metric, a grouping, a range and stores; save the view to come back to it.</p>
        </div>
      </div>

      <div className="grid explore">
        <aside className="card explore-controls" aria-label="View settings">
          <label className="field">
            <span>Metric</span>
            <select className="select" value={view.metric} onChange={(e) => setView({ ...view, metric: e.target.value as Metric })} data-testid="metric">
              {METRICS.map((m) => <option key={m.name} value={m.name}>{m.label}</option>)}
            </select>
          </label>
          <label className="field">
            <span>Group by</span>
            <select className="select" value={view.groupBy} onChange={(e) => setView({ ...view, groupBy: e.target.value as GroupBy })} data-testid="group-by">
              {GROUPS.map((g) => <option key={g.name} value={g.name}>{g.label}</option>)}
            </select>
          </label>
          <label className="field">
            <span>Range</span>
            <select className="select" value={view.range} onChange={(e) => setView({ ...view, range: e.target.value as RangeName })} data-testid="range">
              {RANGES.map((r) => <option key={r.name} value={r.name}>{r.label}</option>)}
            </select>
          </label>
          <fieldset className="field">
            <legend>Stores</legend>
            {stores.value ? (
              <div className="checks">
                {stores.value.map((s) => (
                  <label key={s.storeId} className="check">
                    <input
                      type="checkbox"
                      checked={view.stores.includes(s.storeId)}
                      onChange={(e) =>
                        setView({
                          ...view,
                          stores: e.target.checked ? [...view.stores, s.storeId].sort() : view.stores.filter((x) => x !== s.storeId),
                        })
                      }
                    />
                    {s.name || s.storeId}
                  </label>
                ))}
                <span className="muted small">{view.stores.length === 0 ? "None ticked: all stores." : `${view.stores.length} selected`}</span>
              </div>
            ) : (
              <Loading rows={2} />
            )}
          </fieldset>
          <div className="field">
            <span>Chart</span>
            <div className="segmented">
              {(["line", "bar"] as const).map((c) => (
                <button key={c} className={view.chart === c ? "active" : ""} onClick={() => setView({ ...view, chart: c })}>{c === "line" ? "Line" : "Bars"}</button>
              ))}
            </div>
          </div>
          <label className="field">
            <span>Name</span>
            <input value={view.name} placeholder="e.g. Weekly revenue by region" onChange={(e) => setView({ ...view, name: e.target.value })} data-testid="view-name" />
          </label>
          <div className="row">
            <button className="btn btn-primary" onClick={() => void save()} data-testid="save-view">{view.id ? "Save changes" : "Save view"}</button>
            {view.id && <button className="btn btn-ghost" onClick={() => { setView({ ...view, id: undefined, name: "" }); navigate("/explore", true); }}>Save as new…</button>}
          </div>
          {notice && <div className="notice notice-ok small" role="status">{notice}</div>}
          <div className="saved">
            <h3 className="small-title">Saved views</h3>
            {saved === null ? <Loading rows={2} /> : saved.length === 0 ? (
              <p className="muted small">None yet. Saved views are kept for your user and open from any device.</p>
            ) : (
              <ul className="saved-list" data-testid="saved-views">
                {saved.map((s) => (
                  <li key={s.id} className={s.id === view.id ? "active" : ""}>
                    <Link href={`/explore/${s.id}`} onClick={() => setView(s)}>{s.name}</Link>
                    <span className="muted small">{dateTime(s.savedAt)}</span>
                    <button className="btn btn-ghost btn-small" aria-label={`Delete ${s.name}`} onClick={() => void remove(s.id)}>×</button>
                  </li>
                ))}
              </ul>
            )}
          </div>
        </aside>

        <ChartCard
          id="explore"
          title={view.name || `${metric.label} by ${GROUPS.find((g) => g.name === view.groupBy)?.label.toLowerCase()}`}
          subtitle={`${RANGES.find((r) => r.name === view.range)?.label} · by ${bucket}`}
          total={model?.total}
          table={model ? { columns: ["group", "bucket_start", view.metric], rows: model.rowsCsv } : undefined}
        >
          {load.state === "error" && !load.value && <ErrorState error={load.error} retry={load.reload} />}
          {!load.value && load.state === "loading" && <Loading rows={5} />}
          {model && model.times.length === 0 && <Empty title="No data for this selection" />}
          {model && model.times.length > 0 && (
            <EChart
              height={360}
              option={{
                tooltip: { trigger: "axis", valueFormatter: (x: number) => fmt(x) },
                legend: { top: 0, type: "scroll" },
                grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
                xAxis: { type: "category", data: model.times.map(fmtT) },
                yAxis: { type: "value", axisLabel: { formatter: (x: number) => (metric.money ? money(x, true) : count(x)) } },
                series: model.groups.map((g) => ({
                  name: g.name,
                  type: view.chart,
                  stack: view.chart === "bar" && view.metric !== "averageBasket" ? "total" : undefined,
                  smooth: 0.25,
                  connectNulls: true,
                  showSymbol: false,
                  data: g.values,
                })),
              }}
            />
          )}
        </ChartCard>
      </div>
    </div>
  );
}

type Sums = Pick<SeriesPoint, "revenue" | "units" | "transactions" | "refunds" | "refundAmount" | "voids">;

/**
 * The bucket a point belongs to on the chart. Hours are instants; days and weeks start at
 * each store's local midnight, so the same calendar day has a different instant per time
 * zone: they are keyed by the nearest UTC midnight, which is that local date for any
 * offset within ±12 h.
 */
export function bucketKey(t: string, bucket: Bucket): string {
  if (bucket === "hour" || bucket === "minute") return t;
  const ms = Date.parse(t) + 12 * 3_600_000;
  return new Date(ms - (ms % 86_400_000)).toISOString();
}

function value(p: Sums | undefined, metric: Metric): number | null {
  if (!p) return null;
  if (metric === "averageBasket") return p.transactions ? round(p.revenue / p.transactions) : null;
  return round(p[metric]);
}

function add(a: Sums | undefined, b: Sums): Sums {
  if (!a) return { revenue: b.revenue, units: b.units, transactions: b.transactions, refunds: b.refunds, refundAmount: b.refundAmount, voids: b.voids };
  return {
    revenue: a.revenue + b.revenue,
    units: a.units + b.units,
    transactions: a.transactions + b.transactions,
    refunds: a.refunds + b.refunds,
    refundAmount: a.refundAmount + b.refundAmount,
    voids: a.voids + b.voids,
  };
}

function buildModel(series: { group: string; points: SeriesPoint[] }[], metric: Metric, bucket: Bucket) {
  const groupsAll = series.map((g) => {
    const byKey = new Map<string, Sums>();
    for (const p of g.points) {
      const k = bucketKey(p.t, bucket);
      byKey.set(k, add(byKey.get(k), p));
    }
    const total = [...byKey.values()].reduce<Sums | undefined>((a, p) => add(a, p), undefined);
    return { name: g.group === "all" ? "All stores" : g.group, byKey, total };
  });
  const times = [...new Set(groupsAll.flatMap((g) => [...g.byKey.keys()]))].sort();
  // The largest groups get their own line; the rest are summed into "other".
  const rank = (g: (typeof groupsAll)[number]) => (metric === "averageBasket" ? g.total?.revenue ?? 0 : value(g.total, metric) ?? 0);
  const ranked = [...groupsAll].sort((a, b) => rank(b) - rank(a));
  const shown = ranked.slice(0, GROUPS_SHOWN_MAX);
  const rest = ranked.slice(GROUPS_SHOWN_MAX);
  const groups = shown.map((g) => ({ name: g.name, values: times.map((t) => value(g.byKey.get(t), metric)) }));
  if (rest.length > 0) {
    groups.push({
      name: `other (${rest.length})`,
      values: times.map((t) => value(rest.reduce<Sums | undefined>((a, g) => (g.byKey.has(t) ? add(a, g.byKey.get(t)!) : a), undefined), metric)),
    });
  }
  const rowsCsv = groupsAll.flatMap((g) => times.filter((t) => g.byKey.has(t)).map((t) => [g.name, t, value(g.byKey.get(t), metric)] as (string | number | null)[]));
  const all = groupsAll.reduce<Sums | undefined>((a, g) => (g.total ? add(a, g.total) : a), undefined);
  return { times, groups, rowsCsv, total: value(all, metric) ?? 0 };
}

function round(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}
