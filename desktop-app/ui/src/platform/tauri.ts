// The desktop app's IPC: the Rust side holds the hub's tokens and sends every request to
// the current source (the hub, or the store agent while the hub is unreachable). Nothing
// here reaches the network itself.

import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type { Identity, LiveEvent } from "../api/types";

export type Source = "hub" | "agent";

export interface Connection {
  source: Source | null;
  hubReachable: boolean;
  agentReachable: boolean;
  hubUrl: string;
  agentUrl: string;
}

export interface Settings {
  hubUrl: string;
  agentUrl: string;
  probeIntervalMs: number;
  tenant: string;
  username: string;
}

interface SessionView extends Identity {
  expiresS: number;
}

interface ApiResponse {
  source: Source;
  status: number;
  contentType: string;
  body: string;
}

export function isDesktop(): boolean {
  return typeof window !== "undefined" && "__TAURI_INTERNALS__" in window;
}

let servedBy: Source | null = null;

/** Which source answered the last request (for the rendered-view report). */
export function lastServedBy(): Source | null {
  return servedBy;
}

/** Sends a request through the app to `source` (default: the current one). */
export async function api(
  method: "GET" | "POST" | "PUT" | "DELETE",
  path: string,
  source?: Source,
  body?: unknown,
): Promise<Response & { source: Source }> {
  const reply = await invoke<ApiResponse>("api", { request: { method, path, source, body } });
  servedBy = reply.source;
  const response = new Response(reply.status === 204 ? null : reply.body, {
    status: reply.status,
    headers: { "Content-Type": reply.contentType },
  });
  return Object.assign(response, { source: reply.source });
}

export const ipc = {
  connection: () => invoke<Connection>("connection_get"),
  session: () => invoke<SessionView | null>("session_get"),
  signIn: (tenant: string, username: string, password: string) =>
    invoke<SessionView>("sign_in", { tenant, username, password }),
  signOut: () => invoke<void>("sign_out"),
  settings: () => invoke<Settings>("settings_get"),
  saveSettings: (settings: Settings) => invoke<Settings>("settings_set", { settings }),
  reportRendered: (rendered: unknown) => invoke<void>("report_rendered", { rendered }),
};

export function onConnection(f: (c: Connection) => void): Promise<UnlistenFn> {
  return listen<Connection>("connection", (e) => f(e.payload));
}

export function onLive(f: (source: Source, event: LiveEvent) => void): Promise<UnlistenFn> {
  return listen<{ source: Source; event: LiveEvent }>("live", (e) => f(e.payload.source, e.payload.event));
}

export function identityOf(s: SessionView): Identity {
  return { tenant: s.tenant, subject: s.subject, role: s.role, stores: s.stores };
}
