-- storesync hub schema, version 1 (embedded SQLite). The same tables as PostgreSQL, without
-- partitions or row-level security: every query filters by tenant_id.
CREATE TABLE IF NOT EXISTS tenants (tenant_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stores (tenant_id TEXT NOT NULL, store_id TEXT NOT NULL, name TEXT NOT NULL, region TEXT NOT NULL,
  time_zone TEXT NOT NULL, PRIMARY KEY (tenant_id, store_id));
CREATE TABLE IF NOT EXISTS items (tenant_id TEXT NOT NULL, sku TEXT NOT NULL, category TEXT NOT NULL, PRIMARY KEY (tenant_id, sku));
CREATE TABLE IF NOT EXISTS principals (tenant_id TEXT NOT NULL, is_client INTEGER NOT NULL, name TEXT NOT NULL,
  secret_hash TEXT NOT NULL, role TEXT NOT NULL, stores TEXT NOT NULL, PRIMARY KEY (tenant_id, is_client, name));
CREATE TABLE IF NOT EXISTS refresh_tokens (tenant_id TEXT NOT NULL, token_hash TEXT NOT NULL, family TEXT NOT NULL,
  subject TEXT NOT NULL, is_client INTEGER NOT NULL, expires_ms INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0,
  revoked INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, token_hash));
CREATE TABLE IF NOT EXISTS stream_heads (tenant_id TEXT NOT NULL, device_id TEXT NOT NULL, epoch INTEGER NOT NULL,
  class INTEGER NOT NULL, store_id TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, last_event_ms INTEGER,
  last_commit_ms INTEGER NOT NULL, PRIMARY KEY (tenant_id, device_id, epoch, class));
CREATE TABLE IF NOT EXISTS devices (tenant_id TEXT NOT NULL, device_id TEXT NOT NULL, store_id TEXT NOT NULL,
  last_seen_ms INTEGER NOT NULL, backlog INTEGER NOT NULL, clock_skew_ms INTEGER NOT NULL, PRIMARY KEY (tenant_id, device_id));
CREATE TABLE IF NOT EXISTS event_keys (tenant_id TEXT NOT NULL, device_id TEXT NOT NULL, epoch INTEGER NOT NULL,
  class INTEGER NOT NULL, seq INTEGER NOT NULL, content_hash BLOB NOT NULL, chain_hash BLOB NOT NULL,
  PRIMARY KEY (tenant_id, device_id, epoch, class, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transaction_ids (tenant_id TEXT NOT NULL, transaction_id TEXT NOT NULL, content_hash BLOB NOT NULL,
  PRIMARY KEY (tenant_id, transaction_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transactions (tenant_id TEXT NOT NULL, at_ms INTEGER NOT NULL, device_id TEXT NOT NULL,
  epoch INTEGER NOT NULL, seq INTEGER NOT NULL, store_id TEXT NOT NULL, transaction_id TEXT NOT NULL, kind INTEGER NOT NULL,
  total_e4 INTEGER NOT NULL, payment_method TEXT NOT NULL, register_id TEXT, event BLOB NOT NULL,
  PRIMARY KEY (tenant_id, device_id, epoch, seq));
CREATE TABLE IF NOT EXISTS line_items (tenant_id TEXT NOT NULL, at_ms INTEGER NOT NULL, device_id TEXT NOT NULL,
  epoch INTEGER NOT NULL, seq INTEGER NOT NULL, line_no INTEGER NOT NULL, store_id TEXT NOT NULL, transaction_id TEXT NOT NULL,
  sku TEXT NOT NULL, quantity INTEGER NOT NULL, price_e4 INTEGER NOT NULL, kind INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, device_id, epoch, seq, line_no));
CREATE INDEX IF NOT EXISTS line_items_store_sku ON line_items (tenant_id, store_id, sku, at_ms);
-- Items by hour are summed from line items by time (store/item_hours.rs).
CREATE INDEX IF NOT EXISTS line_items_by_time ON line_items (tenant_id, at_ms);
CREATE TABLE IF NOT EXISTS stock_movements (tenant_id TEXT NOT NULL, at_ms INTEGER NOT NULL, device_id TEXT NOT NULL,
  epoch INTEGER NOT NULL, class INTEGER NOT NULL, seq INTEGER NOT NULL, store_id TEXT NOT NULL, sku TEXT NOT NULL,
  source_id TEXT NOT NULL, is_count INTEGER NOT NULL, quantity INTEGER NOT NULL, PRIMARY KEY (tenant_id, device_id, epoch, class, seq));
CREATE INDEX IF NOT EXISTS stock_movements_store_sku ON stock_movements (tenant_id, store_id, sku, at_ms);
CREATE TABLE IF NOT EXISTS other_events (tenant_id TEXT NOT NULL, at_ms INTEGER NOT NULL, device_id TEXT NOT NULL,
  epoch INTEGER NOT NULL, class INTEGER NOT NULL, seq INTEGER NOT NULL, store_id TEXT NOT NULL, kind INTEGER NOT NULL,
  event BLOB NOT NULL, PRIMARY KEY (tenant_id, device_id, epoch, class, seq));
CREATE TABLE IF NOT EXISTS alerts (tenant_id TEXT NOT NULL, alert_id TEXT NOT NULL, store_id TEXT NOT NULL, kind TEXT NOT NULL,
  severity TEXT NOT NULL, subject TEXT NOT NULL, raised_ms INTEGER NOT NULL, raised_offset_min INTEGER NOT NULL,
  state INTEGER NOT NULL, changed_by TEXT, message TEXT NOT NULL, facts TEXT NOT NULL, updated_ms INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, alert_id));
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (tenant_id, raised_ms DESC);
CREATE TABLE IF NOT EXISTS sales_rollups (tenant_id TEXT NOT NULL, granularity INTEGER NOT NULL, dim INTEGER NOT NULL,
  store_id TEXT NOT NULL, dim_value TEXT NOT NULL, bucket_ms INTEGER NOT NULL, revenue_e4 INTEGER NOT NULL,
  units INTEGER NOT NULL, transactions INTEGER NOT NULL, refunds INTEGER NOT NULL, refund_amount_e4 INTEGER NOT NULL,
  voids INTEGER NOT NULL, PRIMARY KEY (tenant_id, granularity, dim, store_id, dim_value, bucket_ms)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sales_rollups_by_bucket ON sales_rollups (tenant_id, granularity, dim, bucket_ms);
CREATE TABLE IF NOT EXISTS dead_letters (tenant_id TEXT NOT NULL, id INTEGER PRIMARY KEY AUTOINCREMENT, store_id TEXT NOT NULL,
  event_key TEXT NOT NULL, reason TEXT NOT NULL, raw BLOB NOT NULL, received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL);
INSERT OR IGNORE INTO schema_version VALUES (1, 0);
