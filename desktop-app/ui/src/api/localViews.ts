// Saved customizable views kept in the browser's localStorage, one list per tenant and
// user: for a source without a view store of its own (the hub keeps them server-side at
// /api/v1/views; a store agent's local API does not).

import type { NewSavedView, SavedView } from "./types";

const VIEWS_MAX = 50;

export class LocalViews {
  private readonly key: string;

  constructor(owner: string) {
    this.key = `storesync.views/${owner}`;
  }

  list(): SavedView[] {
    try {
      const raw = window.localStorage.getItem(this.key);
      const views = raw ? (JSON.parse(raw) as SavedView[]) : [];
      return Array.isArray(views) ? views : [];
    } catch {
      return [];
    }
  }

  save(view: NewSavedView): SavedView {
    const saved: SavedView = {
      ...view,
      id: view.id ?? newId(),
      savedAt: new Date().toISOString(),
    };
    const others = this.list().filter((v) => v.id !== saved.id);
    this.write([saved, ...others].slice(0, VIEWS_MAX));
    return saved;
  }

  remove(id: string) {
    this.write(this.list().filter((v) => v.id !== id));
  }

  private write(views: SavedView[]) {
    window.localStorage.setItem(this.key, JSON.stringify(views));
  }
}

function newId(): string {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
