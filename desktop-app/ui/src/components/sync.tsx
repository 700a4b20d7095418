// A store's sync state in one word, from its last contact, backlog and watermark.

import type { StoreStatus } from "../api/types";
import { ago, time } from "./format";

export type SyncState = "live" | "behind" | "offline" | "never";

/** No contact for this long: the store is offline. */
export const OFFLINE_AFTER_MS = 5 * 60_000;
/** Data older than this at the hub: the store is behind. */
export const BEHIND_AFTER_MS = 10 * 60_000;

/** Data this close to the end of a range counts as complete: an idle store's watermark is
 * its last contact, which trails the present by its heartbeat. */
export const COMPLETE_WITHIN_MS = 2 * 60_000;

/** Whether a store's figures for a range ending at `to` may still grow: its watermark is
 * missing or older than the range's end (or now, for a range reaching into the future). */
export function isBehind(completeUpTo: string | null, to: Date, now = Date.now()): boolean {
  if (!completeUpTo) return true;
  const end = Math.min(to.getTime(), now);
  return Date.parse(completeUpTo) < end - COMPLETE_WITHIN_MS;
}

export function syncState(s: StoreStatus, now = Date.now()): SyncState {
  if (!s.lastSeen) return "never";
  if (now - new Date(s.lastSeen).getTime() > OFFLINE_AFTER_MS) return "offline";
  if (s.backlog > 0 || (s.lagMs ?? 0) > BEHIND_AFTER_MS) return "behind";
  return "live";
}

const LABEL: Record<SyncState, string> = {
  live: "In sync",
  behind: "Catching up",
  offline: "Offline",
  never: "Never synced",
};

const CLASS: Record<SyncState, string> = {
  live: "badge-ok",
  behind: "badge-warn",
  offline: "badge-bad",
  never: "badge-muted",
};

export function SyncBadge({ store, now }: { store: StoreStatus; now?: number }) {
  const state = syncState(store, now);
  return (
    <span className={`badge ${CLASS[state]}`} data-sync={state} title={`Last contact ${ago(store.lastSeen)}`}>
      {LABEL[state]}
    </span>
  );
}

export function completeText(completeUpTo: string | null, timeZone?: string): string {
  return completeUpTo ? `complete up to ${time(completeUpTo, timeZone)}` : "no data yet";
}
