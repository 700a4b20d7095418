// Inventory: stock on hand at or below a threshold across stores, filterable.

import { useMemo, useState } from "react";
import { useData, useLoad } from "../app/session";
import { ChartCard, EChart } from "../components/Chart";
import { compact, count } from "../components/format";
import { Empty, ErrorState, Loading } from "../components/States";

const ROWS_SHOWN_MAX = 300;

export function Inventory() {
  const data = useData();
  const [threshold, setThreshold] = useState(5);
  const [store, setStore] = useState("");
  const [search, setSearch] = useState("");

  const load = useLoad(async () => {
    const [inventory, stores] = await Promise.all([data.inventory({}), data.stores()]);
    return { inventory, stores };
  }, []);

  const v = load.value;
  const low = useMemo(() => {
    if (!v) return [];
    const q = search.trim().toLowerCase();
    return v.inventory.rows
      .filter((r) => r.onHand <= threshold)
      .filter((r) => !store || r.storeId === store)
      .filter((r) => !q || r.sku.toLowerCase().includes(q))
      .sort((a, b) => a.onHand - b.onHand || a.storeId.localeCompare(b.storeId) || a.sku.localeCompare(b.sku));
  }, [v, threshold, store, search]);
  const perStore = useMemo(() => {
    const m = new Map<string, number>();
    for (const r of low) m.set(r.storeId, (m.get(r.storeId) ?? 0) + 1);
    return [...m.entries()].sort((a, b) => b[1] - a[1]);
  }, [low]);
  const names = new Map(v?.stores.map((s) => [s.storeId, s.name || s.storeId]) ?? []);

  return (
    <div className="page" data-view="inventory">
      <div className="page-head">
        <div>
          <h1>Low stock</h1>
          <p className="muted">Items at or below the threshold, across the stores you can see.</p>
        </div>
      </div>
      <div className="card filters">
        <label className="field inline">
          <span>Threshold</span>
          <input type="number" min={0} max={100000} value={threshold} onChange={(e) => setThreshold(Number(e.target.value) || 0)} data-testid="threshold" />
        </label>
        <label className="field inline">
          <span>Store</span>
          <select className="select" value={store} onChange={(e) => setStore(e.target.value)}>
            <option value="">All stores</option>
            {v?.stores.map((s) => <option key={s.storeId} value={s.storeId}>{s.name || s.storeId}</option>)}
          </select>
        </label>
        <label className="field inline grow">
          <span>SKU</span>
          <input type="search" placeholder="Search SKUs" value={search} onChange={(e) => setSearch(e.target.value)} />
        </label>
      </div>

      {load.state === "error" && !v && <div className="card"><ErrorState error={load.error} retry={load.reload} /></div>}
      {!v && load.state === "loading" && <div className="card"><Loading rows={6} /></div>}
      {v && (
        <>
          {v.inventory.rows.length < v.inventory.total && (
            <div className="notice notice-warn">
              Showing the first {count(v.inventory.rows.length)} of {count(v.inventory.total)} stock positions; pick a store to narrow.
            </div>
          )}
          <div className="grid one-two">
            <ChartCard
              id="low-stock-by-store"
              title="Low-stock items by store"
              total={low.length}
              table={{ columns: ["store", "low_stock_items"], rows: perStore.map(([s, n]) => [s, n]) }}
            >
              {perStore.length === 0 ? (
                <Empty title="Nothing is low">No item is at or below {threshold} units.</Empty>
              ) : (
                <EChart
                  height={Math.max(200, perStore.length * 30 + 40)}
                  option={{
                    tooltip: { trigger: "axis" },
                    grid: { left: 8, right: 16, top: 8, bottom: 8, containLabel: true },
                    xAxis: { type: "value", minInterval: 1, splitNumber: 4, axisLabel: { formatter: (x: number) => compact(x) } },
                    yAxis: { type: "category", inverse: true, data: perStore.map(([s]) => names.get(s) ?? s) },
                    series: [{ type: "bar", data: perStore.map(([, n]) => n), barMaxWidth: 16, itemStyle: { color: "#f59e0b" } }],
                  }}
                />
              )}
            </ChartCard>
            <section className="card">
              <header className="card-head">
                <h2 className="card-title">{count(low.length)} items low</h2>
              </header>
              {low.length === 0 ? (
                <Empty title="Nothing is low" />
              ) : (
                <div className="table-wrap table-scroll">
                  <table className="table" data-testid="low-stock">
                    <thead><tr><th>Store</th><th>SKU</th><th className="num">On hand</th></tr></thead>
                    <tbody>
                      {low.slice(0, ROWS_SHOWN_MAX).map((r) => (
                        <tr key={`${r.storeId}/${r.sku}`} data-sku={r.sku} data-store={r.storeId}>
                          <td>{names.get(r.storeId) ?? r.storeId}</td>
                          <td className="mono">{r.sku}</td>
                          <td className={`num ${r.onHand <= 0 ? "down" : ""}`}>{count(r.onHand)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                  {low.length > ROWS_SHOWN_MAX && <p className="muted small pad">and {count(low.length - ROWS_SHOWN_MAX)} more; narrow the filter.</p>}
                </div>
              )}
            </section>
          </div>
        </>
      )}
    </div>
  );
}
