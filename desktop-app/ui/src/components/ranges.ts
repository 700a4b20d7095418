// Time ranges the views offer, in the browser's local time.

import type { Bucket, RangeName } from "../api/types";

export const RANGES: { name: RangeName; label: string }[] = [
  { name: "today", label: "Today" },
  { name: "7d", label: "7 days" },
  { name: "30d", label: "30 days" },
  { name: "90d", label: "90 days" },
];

/** Midnight today, in `timeZone` when given (a store's own day), else the browser's. */
export function startOfToday(now: Date, timeZone?: string): Date {
  if (timeZone) {
    const offset = zoneOffsetMs(timeZone, now);
    if (offset !== null) {
      const local = now.getTime() + offset;
      return new Date(local - (((local % 86_400_000) + 86_400_000) % 86_400_000) - offset);
    }
  }
  const d = new Date(now);
  d.setHours(0, 0, 0, 0);
  return d;
}

/** How far `timeZone`'s wall clock is ahead of UTC at `at`; null for an unknown zone. */
export function zoneOffsetMs(timeZone: string, at: Date): number | null {
  try {
    const parts = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
    }).formatToParts(at);
    const get = (type: string) => Number(parts.find((p) => p.type === type)?.value);
    const wall = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"));
    return wall - Math.floor(at.getTime() / 60_000) * 60_000;
  } catch {
    return null;
  }
}

/** The minute `now` falls in, so repeated queries hit the hub's cache. */
export function minute(now: Date): Date {
  return new Date(Math.floor(now.getTime() / 60_000) * 60_000);
}

export function rangeOf(name: RangeName, now: Date, timeZone?: string): { from: Date; to: Date; bucket: Bucket } {
  const to = new Date(minute(now).getTime() + 60_000);
  const today = startOfToday(now, timeZone);
  const daysBack = (n: number) => new Date(today.getTime() - (n - 1) * 86_400_000);
  switch (name) {
    case "today":
      return { from: today, to, bucket: "hour" };
    case "7d":
      return { from: daysBack(7), to, bucket: "day" };
    case "30d":
      return { from: daysBack(30), to, bucket: "day" };
    case "90d":
      return { from: daysBack(90), to, bucket: "week" };
  }
}

export const WEEK_MS = 7 * 86_400_000;
