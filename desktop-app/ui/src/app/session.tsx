// The signed-in session: which DataSource, who is signed in, and hooks views use to load.

import { createContext, useCallback, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { DataError, type DataSource } from "../api/DataSource";
import type { Identity } from "../api/types";

interface Session {
  data: DataSource;
  identity: Identity;
  signOut(): void;
}

const SessionContext = createContext<Session | null>(null);

export function SessionProvider({ value, children }: { value: Session; children: ReactNode }) {
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside a signed-in session");
  return s;
}

export function useData(): DataSource {
  return useSession().data;
}

export type Load<T> =
  | { state: "loading"; value?: T }
  | { state: "ready"; value: T }
  | { state: "error"; error: DataError; value?: T };

/**
 * Loads with `fetcher` whenever `deps` change; `reload()` fetches again keeping the shown
 * value (no flash of the loading state on live refreshes).
 */
export function useLoad<T>(fetcher: () => Promise<T>, deps: unknown[]): Load<T> & { reload: () => void } {
  const [load, setLoad] = useState<Load<T>>({ state: "loading" });
  const [tick, setTick] = useState(0);
  const session = useContext(SessionContext);
  const seq = useRef(0);
  const keep = useRef<T | undefined>(undefined);
  const depsKey = JSON.stringify(deps);
  const lastDeps = useRef(depsKey);

  useEffect(() => {
    const mine = ++seq.current;
    const sameQuery = lastDeps.current === depsKey;
    lastDeps.current = depsKey;
    if (!sameQuery) keep.current = undefined;
    setLoad((l) => (sameQuery && l.state === "ready" ? l : { state: "loading", value: keep.current }));
    fetcher().then(
      (value) => {
        if (mine !== seq.current) return;
        keep.current = value;
        setLoad({ state: "ready", value });
      },
      (e: unknown) => {
        if (mine !== seq.current) return;
        const error = e instanceof DataError ? e : new DataError("server", String(e));
        if (error.kind === "unauthorized") session?.signOut();
        setLoad({ state: "error", error, value: keep.current });
      },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [depsKey, tick]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...load, reload };
}
