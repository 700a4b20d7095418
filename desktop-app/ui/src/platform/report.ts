// What the window shows, reported to the app for its end-to-end test (the app prints it
// only with STORESYNC_DESKTOP_REPORT=1): after the page settles, the view, the source (and
// which one answered the last request),
// whether the offline banner is up, whether anything is still loading or failed, the
// figures of the key-figure cards (`data-kpi`, `data-value`), the charts' drawn totals
// (`data-chart`, `data-total`) and the visible text.

import type { SourceInfo } from "../api/DataSource";
import { bannerShown } from "./banner";
import { ipc, lastServedBy } from "./tauri";

/** Quiet time before a report, ms. */
const SETTLE_MS = 800;
/** Visible text reported at most, characters. */
const TEXT_CHARS_MAX = 16_000;

export function startReports(info: () => SourceInfo) {
  let timer: ReturnType<typeof setTimeout> | null = null;
  let last = "";
  const send = () => {
    const root = document.getElementById("root");
    const text = (root?.innerText ?? "").slice(0, TEXT_CHARS_MAX);
    const view = document.querySelector<HTMLElement>("[data-view]");
    const kpis: Record<string, string> = {};
    for (const e of document.querySelectorAll<HTMLElement>("[data-kpi]")) {
      kpis[e.dataset.kpi ?? ""] = e.dataset.value ?? e.innerText;
    }
    const charts: Record<string, string> = {};
    for (const e of document.querySelectorAll<HTMLElement>("[data-chart]")) {
      if (e.dataset.total !== undefined) charts[e.dataset.chart ?? ""] = e.dataset.total;
    }
    const loading = document.querySelector('[data-state="loading"], [aria-busy="true"]') !== null;
    const error = document.querySelector<HTMLElement>('[data-state="error"]');
    const rendered = {
      view: view?.dataset.view ?? null,
      store: view?.dataset.store ?? null,
      path: window.location.pathname,
      source: info().kind,
      servedBy: lastServedBy(),
      banner: bannerShown(),
      ready: view !== null && !loading && error === null,
      error: error?.innerText ?? null,
      kpis,
      charts,
      text,
    };
    const key = JSON.stringify(rendered);
    if (key === last) return;
    last = key;
    void ipc.reportRendered(rendered).catch(() => {});
  };
  const observer = new MutationObserver(() => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(send, SETTLE_MS);
  });
  observer.observe(document.documentElement, { subtree: true, childList: true, characterData: true, attributes: true });
}
