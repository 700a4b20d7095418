// Time ranges the views offer, in the browser's local time.

import type { Bucket, RangeName } from "../api/types";

export const RANGES: { name: RangeName; label: string }[] = [
  { name: "today", label: "Today" },
  { name: "7d", label: "7 days" },
  { name: "30d", label: "30 days" },
  { name: "90d", label: "90 days" },
];

export function startOfToday(now: Date): Date {
  const d = new Date(now);
  d.setHours(0, 0, 0, 0);
  return d;
}

/** The minute `now` falls in, so repeated queries hit the hub's cache. */
export function minute(now: Date): Date {
  return new Date(Math.floor(now.getTime() / 60_000) * 60_000);
}

export function rangeOf(name: RangeName, now: Date): { from: Date; to: Date; bucket: Bucket } {
  const to = new Date(minute(now).getTime() + 60_000);
  const today = startOfToday(now);
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
