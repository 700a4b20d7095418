// Live events for a view: subscribes through the DataSource while the view is shown.

import { useEffect, useRef, useState } from "react";
import type { LiveEvent, LiveStatus } from "../api/types";
import { useData } from "../app/session";

export function useLive(onEvent: (e: LiveEvent) => void, stores?: string[]): LiveStatus {
  const data = useData();
  const [status, setStatus] = useState<LiveStatus>("connecting");
  const handler = useRef(onEvent);
  handler.current = onEvent;
  const key = stores?.join(",") ?? "";
  useEffect(() => {
    const stop = data.subscribe(
      { onEvent: (e) => handler.current(e), onStatus: setStatus },
      key ? key.split(",") : undefined,
    );
    return stop;
  }, [data, key]);
  return status;
}

/** `fn` at most once per `ms`, trailing. */
export function useThrottled(fn: () => void, ms: number): () => void {
  const last = useRef(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const latest = useRef(fn);
  latest.current = fn;
  useEffect(
    () => () => {
      if (timer.current) clearTimeout(timer.current);
    },
    [],
  );
  return () => {
    if (timer.current) return;
    const wait = Math.max(0, last.current + ms - Date.now());
    timer.current = setTimeout(() => {
      timer.current = null;
      last.current = Date.now();
      latest.current();
    }, wait);
  };
}
