// The desktop app's connection banner, outside the React tree so no view has to know: a
// strip at the top of the window while the views show the store's local data, or nothing
// can be reached.

import type { Connection } from "./tauri";

const BANNER_ID = "storesync-connection-banner";

export function bannerShown(): boolean {
  return document.getElementById(BANNER_ID)?.hidden === false;
}

export function showBanner(c: Connection) {
  let banner = document.getElementById(BANNER_ID);
  if (!banner) {
    banner = document.createElement("div");
    banner.id = BANNER_ID;
    banner.setAttribute("role", "status");
    Object.assign(banner.style, {
      position: "sticky",
      top: "0",
      zIndex: "1000",
      padding: "8px 16px",
      font: "600 14px system-ui, sans-serif",
      color: "#1f1300",
      background: "#ffb020",
      borderBottom: "1px solid #b57600",
      textAlign: "center",
    });
    document.body.prepend(banner);
  }
  if (c.source === "hub") {
    banner.hidden = true;
    banner.textContent = "";
    return;
  }
  banner.hidden = false;
  banner.dataset.source = c.source ?? "none";
  banner.textContent =
    c.source === "agent"
      ? `Offline from the hub (${c.hubUrl}): showing this store's local data from its agent. Other stores and chain totals are not available until the hub is back.`
      : `Neither the hub (${c.hubUrl}) nor the store agent (${c.agentUrl}) can be reached. Retrying…`;
}
