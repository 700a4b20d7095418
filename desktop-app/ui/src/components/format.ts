// Number, money and time formatting in the user's locale.

/** The currency figures are shown in. The hub sums amounts as they were recorded; a chain
 * trades in one currency per tenant in practice. Override with `?currency=` once, kept. */
export function currency(): string {
  try {
    const fromUrl = new URLSearchParams(window.location.search).get("currency");
    if (fromUrl && /^[A-Z]{3}$/.test(fromUrl)) window.localStorage.setItem("storesync.currency", fromUrl);
    return window.localStorage.getItem("storesync.currency") ?? "EUR";
  } catch {
    return "EUR";
  }
}

const moneyFormats = new Map<string, Intl.NumberFormat>();

export function money(value: number | null | undefined, compact = false): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  const key = `${currency()}/${compact}`;
  let f = moneyFormats.get(key);
  if (!f) {
    f = new Intl.NumberFormat(undefined, {
      style: "currency",
      currency: currency(),
      ...(compact ? { notation: "compact", maximumFractionDigits: 1 } : {}),
    });
    moneyFormats.set(key, f);
  }
  return f.format(value);
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compactFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

/** 1.2K, 3.4M: for axis labels. */
export function compact(value: number): string {
  return compactFormat.format(value);
}
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

export function count(value: number | null | undefined): string {
  return value === null || value === undefined || !Number.isFinite(value) ? "—" : integer.format(value);
}

export function number(value: number | null | undefined): string {
  return value === null || value === undefined || !Number.isFinite(value) ? "—" : decimal.format(value);
}

export function percentChange(now: number, before: number): string {
  if (before === 0) return now === 0 ? "±0%" : "new";
  const pct = ((now - before) / before) * 100;
  const sign = pct > 0 ? "+" : pct < 0 ? "−" : "±";
  return `${sign}${Math.abs(pct).toFixed(1)}%`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});

/** Time of day, in `timeZone` when given (a store's own hours), else the browser's. */
export function time(iso: string | null | undefined, timeZone?: string): string {
  if (!iso) return "—";
  return timeZone ? zoned(timeZone, "time").format(new Date(iso)) : timeFormat.format(new Date(iso));
}

const zonedFormats = new Map<string, Intl.DateTimeFormat>();

function zoned(timeZone: string, kind: "time" | "day"): Intl.DateTimeFormat {
  const key = `${timeZone}/${kind}`;
  let f = zonedFormats.get(key);
  if (!f) {
    const options: Intl.DateTimeFormatOptions =
      kind === "time" ? { hour: "2-digit", minute: "2-digit" } : { weekday: "short", month: "short", day: "numeric" };
    try {
      f = new Intl.DateTimeFormat(undefined, { ...options, timeZone });
    } catch {
      f = new Intl.DateTimeFormat(undefined, options);
    }
    zonedFormats.set(key, f);
  }
  return f;
}

export function dateTime(iso: string | null | undefined): string {
  return iso ? dateTimeFormat.format(new Date(iso)) : "—";
}

/** The calendar day `iso` falls on in `timeZone` (default UTC: chart keys are UTC dates). */
export function day(iso: string, timeZone = "UTC"): string {
  return zoned(timeZone, "day").format(new Date(iso));
}

/** "3 min ago", "2 h ago", "just now"; "never" for null. */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86_400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} d ago`;
}

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86_400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86_400).toFixed(1)} d`;
}
