import { useState, type FormEvent } from "react";
import { isDataError, type DataSource } from "../api/DataSource";
import type { Identity } from "../api/types";

const TENANT_KEY = "storesync.tenant";

export function SignIn({
  data,
  notice,
  onSignedIn,
}: {
  data: DataSource;
  notice?: string | null;
  onSignedIn: (identity: Identity) => void;
}) {
  const [tenant, setTenant] = useState(() => remembered());
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(notice ?? null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const identity = await data.signIn({ tenant, username, password });
      try {
        window.localStorage.setItem(TENANT_KEY, tenant.trim());
      } catch {
        // Private mode: nothing to remember.
      }
      onSignedIn(identity);
    } catch (err) {
      setError(isDataError(err) ? err.message : "Sign-in failed.");
      setBusy(false);
    }
  };

  return (
    <div className="signin-wrap">
      <form className="card signin-card" onSubmit={submit} aria-label="Sign in" data-testid="signin-form">
        <div className="signin-brand">
          <img src="/favicon.svg" alt="" width={36} height={36} />
          <div>
            <h1>storesync</h1>
            <p className="muted">Sign in to your chain's dashboards.</p>
          </div>
        </div>
        {!data.info.live && <div className="notice notice-warn">{data.info.label}</div>}
        <label className="field">
          <span>Organization</span>
          <input name="tenant" autoComplete="organization" value={tenant} onChange={(e) => setTenant(e.target.value)} required />
        </label>
        <label className="field">
          <span>User name</span>
          <input name="username" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} required autoFocus={tenant !== ""} />
        </label>
        <label className="field">
          <span>Password</span>
          <input name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} required />
        </label>
        {error && (
          <div className="notice notice-error" role="alert" data-testid="signin-error">
            {error}
          </div>
        )}
        <button className="btn btn-primary btn-block" type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </div>
  );
}

function remembered(): string {
  try {
    return window.localStorage.getItem(TENANT_KEY) ?? "";
  } catch {
    return "";
  }
}
