// Loading, empty and error states: every panel shows one of these instead of a blank.

import type { ReactNode } from "react";
import type { DataError } from "../api/DataSource";

export function Loading({ label = "Loading…", rows = 3 }: { label?: string; rows?: number }) {
  return (
    <div className="state state-loading" role="status" aria-live="polite" data-state="loading">
      <span className="sr-only">{label}</span>
      {Array.from({ length: rows }, (_, i) => (
        <div key={i} className="skeleton" style={{ width: `${90 - i * 17}%` }} />
      ))}
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="state state-empty" data-state="empty">
      <div className="state-icon" aria-hidden="true">∅</div>
      <div className="state-title">{title}</div>
      {children && <div className="state-text">{children}</div>}
    </div>
  );
}

export function ErrorState({ error, retry }: { error: DataError; retry?: () => void }) {
  return (
    <div className="state state-error" role="alert" data-state="error" data-error-kind={error.kind}>
      <div className="state-icon" aria-hidden="true">!</div>
      <div className="state-title">
        {error.kind === "network" ? "Can't reach the server" : "Something went wrong"}
      </div>
      <div className="state-text">{error.message}</div>
      {retry && (
        <button className="btn btn-secondary" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function NotFound({ what = "page" }: { what?: string }) {
  return (
    <div className="page">
      <div className="card">
        <div className="state state-empty" data-state="not-found" data-testid="not-found">
          <div className="state-icon" aria-hidden="true">?</div>
          <div className="state-title">Not found</div>
          <div className="state-text">
            This {what} does not exist, or it is not one you have access to.
          </div>
          <a className="btn btn-secondary" href="/">
            Back to the overview
          </a>
        </div>
      </div>
    </div>
  );
}
