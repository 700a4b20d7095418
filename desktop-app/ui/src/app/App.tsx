// The shell: sign-in gate, header with navigation that follows the role, and the routes.

import { useCallback, useEffect, useMemo, useState } from "react";
import type { DataSource } from "../api/DataSource";
import { isDataError } from "../api/DataSource";
import type { Identity, Role } from "../api/types";
import { Link, match, navigate, useLocation } from "./router";
import { SessionProvider } from "./session";
import { SignIn } from "../views/SignIn";
import { Overview } from "../views/Overview";
import { StoreDashboard } from "../views/StoreDashboard";
import { Inventory } from "../views/Inventory";
import { Alerts } from "../views/Alerts";
import { SyncStatus } from "../views/SyncStatus";
import { Explore } from "../views/Explore";
import { Loading, NotFound } from "../components/States";

interface NavItem {
  href: string;
  label: string;
  roles: Role[];
}

const NAV: NavItem[] = [
  { href: "/", label: "Overview", roles: ["admin", "analyst", "store_manager"] },
  { href: "/inventory", label: "Inventory", roles: ["admin", "analyst", "store_manager"] },
  { href: "/alerts", label: "Alerts", roles: ["admin", "analyst", "store_manager"] },
  { href: "/sync", label: "Sync", roles: ["admin", "analyst", "store_manager"] },
  { href: "/explore", label: "Explore", roles: ["admin", "analyst", "store_manager"] },
];

export function roleLabel(role: Role): string {
  return role === "store_manager" ? "Store manager" : role === "admin" ? "Admin" : "Analyst";
}

export function App({ data }: { data: DataSource }) {
  const [identity, setIdentity] = useState<Identity | null>(null);
  const [restoring, setRestoring] = useState(true);
  const [restoreError, setRestoreError] = useState<string | null>(null);

  useEffect(() => {
    data.restore().then(
      (id) => {
        setIdentity(id);
        setRestoring(false);
      },
      (e: unknown) => {
        setRestoreError(isDataError(e) ? e.message : String(e));
        setRestoring(false);
      },
    );
  }, [data]);

  const signOut = useCallback(() => {
    void data.signOut();
    setIdentity(null);
  }, [data]);

  const session = useMemo(() => (identity ? { data, identity, signOut } : null), [data, identity, signOut]);

  if (restoring) {
    return (
      <div className="signin-wrap">
        <div className="card signin-card">
          <Loading label="Resuming your session…" />
        </div>
      </div>
    );
  }
  if (!session) {
    return <SignIn data={data} notice={restoreError} onSignedIn={setIdentity} />;
  }
  return (
    <SessionProvider value={session}>
      <Shell identity={session.identity} data={data} signOut={signOut} />
    </SessionProvider>
  );
}

function Shell({ identity, data, signOut }: { identity: Identity; data: DataSource; signOut: () => void }) {
  const { path } = useLocation();
  const items = NAV.filter((n) => n.roles.includes(identity.role));
  const managerHome = identity.role === "store_manager" && identity.stores.length === 1 ? `/stores/${identity.stores[0]}` : null;

  useEffect(() => {
    if (path === "/signin") navigate("/", true);
  }, [path]);

  const active = (href: string) => (href === "/" ? path === "/" : path.startsWith(href));
  return (
    <div className="app" data-role={identity.role}>
      <header className="topbar">
        <Link href="/" className="brand" aria-label="storesync overview">
          <img src="/favicon.svg" alt="" width={24} height={24} />
          <span>storesync</span>
        </Link>
        <nav className="nav" aria-label="Main">
          {managerHome && (
            <Link href={managerHome} className={active(managerHome) ? "nav-item active" : "nav-item"}>
              My store
            </Link>
          )}
          {items.map((n) => (
            <Link key={n.href} href={n.href} className={active(n.href) ? "nav-item active" : "nav-item"} aria-current={active(n.href) ? "page" : undefined}>
              {n.label}
            </Link>
          ))}
        </nav>
        <div className="topbar-right">
          {!data.info.live && (
            <span className="badge badge-warn" data-testid="local-data">
              {data.info.label}
            </span>
          )}
          <span className="who" title={`${identity.subject} · ${identity.tenant}`} data-testid="who">
            <span className="who-name">{identity.subject}</span>
            <span className="who-role">{roleLabel(identity.role)}</span>
          </span>
          <button className="btn btn-ghost btn-small" onClick={signOut} data-testid="sign-out">
            Sign out
          </button>
        </div>
      </header>
      <main className="main">
        <Routes path={path} identity={identity} />
      </main>
    </div>
  );
}

function Routes({ path, identity }: { path: string; identity: Identity }) {
  if (path === "/" || path === "/signin") return <Overview />;
  const store = match("/stores/:storeId", path);
  if (store) {
    // A manager asking for a store not assigned: the same not-found as a missing store.
    if (identity.role === "store_manager" && !identity.stores.includes(store.storeId!)) {
      return <NotFound what="store" />;
    }
    return <StoreDashboard storeId={store.storeId!} />;
  }
  if (path === "/inventory") return <Inventory />;
  if (path === "/alerts") return <Alerts />;
  if (path === "/sync") return <SyncStatus />;
  if (path === "/explore") return <Explore />;
  const view = match("/explore/:viewId", path);
  if (view) return <Explore viewId={view.viewId} />;
  return <NotFound />;
}
