// Which DataSource the UI runs on. In a browser served by the hub it is the hub's API on
// the page's own origin. The desktop app replaces this module's choice (hub online, the
// store agent's API offline) without the views knowing.

import type { DataSource } from "../api/DataSource";
import { HubDataSource } from "../api/hub";

export function createDataSource(): DataSource {
  return new HubDataSource();
}
