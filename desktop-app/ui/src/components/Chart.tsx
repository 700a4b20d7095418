// ECharts in a card: title, a CSV button exporting exactly the rows drawn, and the drawn
// figures as data attributes (`data-total`, `data-points`) so tests and assistive tools can
// read what the canvas shows.

import { useEffect, useRef, type ReactNode } from "react";
import * as echarts from "echarts/core";
import { BarChart, LineChart, PieChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent, DatasetComponent } from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";
import type { EChartsCoreOption } from "echarts/core";
import { download, slug, toCsv, type Table } from "./csv";

echarts.use([BarChart, LineChart, PieChart, GridComponent, LegendComponent, TooltipComponent, DatasetComponent, CanvasRenderer]);

export const PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#db2777", "#7c3aed", "#0891b2", "#dc2626", "#65a30d", "#9333ea", "#64748b"];

export function EChart({ option, height = 280 }: { option: EChartsCoreOption; height?: number }) {
  const el = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts | null>(null);

  useEffect(() => {
    if (!el.current) return;
    const c = echarts.init(el.current, undefined, { renderer: "canvas" });
    chart.current = c;
    const resize = new ResizeObserver(() => c.resize());
    resize.observe(el.current);
    return () => {
      resize.disconnect();
      c.dispose();
      chart.current = null;
    };
  }, []);

  useEffect(() => {
    chart.current?.setOption(
      {
        color: PALETTE,
        textStyle: { fontFamily: "Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif" },
        animationDuration: 300,
        ...option,
      },
      { notMerge: true },
    );
  }, [option]);

  return <div ref={el} className="echart" style={{ height }} />;
}

export function ChartCard({
  id,
  title,
  subtitle,
  table,
  total,
  children,
  actions,
  className = "",
}: {
  id: string;
  title: string;
  subtitle?: ReactNode;
  /** Rows for the CSV export; omitted while nothing is drawn. */
  table?: Table;
  /** The chart's headline figure, exposed as `data-total`. */
  total?: number;
  children: ReactNode;
  actions?: ReactNode;
  className?: string;
}) {
  return (
    <section
      className={`card chart-card ${className}`}
      data-chart={id}
      data-total={total === undefined ? undefined : String(round(total))}
      data-points={table ? String(table.rows.length) : undefined}
      aria-label={title}
    >
      <header className="card-head">
        <div>
          <h2 className="card-title">{title}</h2>
          {subtitle && <div className="card-sub">{subtitle}</div>}
        </div>
        <div className="card-actions">
          {actions}
          {table && table.rows.length > 0 && (
            <button
              className="btn btn-ghost btn-small"
              onClick={() => download(`${slug(title)}.csv`, toCsv(table))}
              title="Download what this chart shows as CSV"
              data-csv={id}
            >
              CSV
            </button>
          )}
        </div>
      </header>
      <div className="card-body">{children}</div>
    </section>
  );
}

function round(n: number): number {
  return Math.round(n * 10_000) / 10_000;
}
