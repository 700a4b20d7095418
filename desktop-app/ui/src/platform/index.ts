// Which DataSource the UI runs on. In a browser served by the hub it is the hub's API on
// the page's own origin. In the desktop app it is `DesktopDataSource`: the hub while it
// answers, the store agent's API while it does not, without the views knowing.

import type { DataSource } from "../api/DataSource";
import { HubDataSource } from "../api/hub";
import { DesktopDataSource } from "./desktop";
import { isDesktop } from "./tauri";

export function createDataSource(): DataSource {
  return isDesktop() ? new DesktopDataSource() : new HubDataSource();
}
