-- storesync hub schema, version 1 (PostgreSQL).
-- tenant_id leads every key. Event tables are partitioned by business time ({partition}
-- is either "PARTITION BY RANGE (at_ms)" or empty when TimescaleDB turns them into
-- hypertables instead).

CREATE TABLE IF NOT EXISTS tenants (
    tenant_id  text PRIMARY KEY,
    name       text NOT NULL,
    created_ms bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS stores (
    tenant_id text NOT NULL,
    store_id  text NOT NULL,
    name      text NOT NULL,
    region    text NOT NULL,
    time_zone text NOT NULL,
    PRIMARY KEY (tenant_id, store_id)
);

CREATE TABLE IF NOT EXISTS items (
    tenant_id text NOT NULL,
    sku       text NOT NULL,
    category  text NOT NULL,
    PRIMARY KEY (tenant_id, sku)
);

CREATE TABLE IF NOT EXISTS principals (
    tenant_id   text NOT NULL,
    is_client   boolean NOT NULL,
    name        text NOT NULL,
    secret_hash text NOT NULL,
    role        text NOT NULL,
    stores      text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, is_client, name)
);

CREATE TABLE IF NOT EXISTS refresh_tokens (
    tenant_id  text NOT NULL,
    token_hash text NOT NULL,
    family     text NOT NULL,
    subject    text NOT NULL,
    is_client  boolean NOT NULL,
    expires_ms bigint NOT NULL,
    used       boolean NOT NULL DEFAULT false,
    revoked    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, token_hash)
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (tenant_id, family);

-- The cursor of every device stream; written in the ingest transaction.
CREATE TABLE IF NOT EXISTS stream_heads (
    tenant_id      text NOT NULL,
    device_id      text NOT NULL,
    epoch          bigint NOT NULL,
    class          smallint NOT NULL,
    store_id       text NOT NULL,
    seq            bigint NOT NULL,
    hash           bytea NOT NULL,
    last_event_ms  bigint,
    last_commit_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, device_id, epoch, class)
) WITH (fillfactor = 50);

CREATE TABLE IF NOT EXISTS devices (
    tenant_id     text NOT NULL,
    device_id     text NOT NULL,
    store_id      text NOT NULL,
    last_seen_ms  bigint NOT NULL,
    backlog       bigint NOT NULL,
    clock_skew_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, device_id)
);

-- Event identity: one small row per event, never partitioned, so "same key" is one index
-- probe whatever the event's time.
CREATE TABLE IF NOT EXISTS event_keys (
    tenant_id    text NOT NULL,
    device_id    text NOT NULL,
    epoch        bigint NOT NULL,
    class        smallint NOT NULL,
    seq          bigint NOT NULL,
    content_hash bytea NOT NULL,
    chain_hash   bytea NOT NULL,
    PRIMARY KEY (tenant_id, device_id, epoch, class, seq)
);

-- Idempotency of POS transactions: one entry per transaction, not per line.
CREATE TABLE IF NOT EXISTS transaction_ids (
    tenant_id      text NOT NULL,
    transaction_id text NOT NULL,
    content_hash   bytea NOT NULL,
    PRIMARY KEY (tenant_id, transaction_id)
);

CREATE TABLE IF NOT EXISTS transactions (
    tenant_id      text NOT NULL,
    at_ms          bigint NOT NULL,
    device_id      text NOT NULL,
    epoch          bigint NOT NULL,
    seq            bigint NOT NULL,
    store_id       text NOT NULL,
    transaction_id text NOT NULL,
    kind           smallint NOT NULL,
    total_e4       bigint NOT NULL,
    payment_method text NOT NULL,
    register_id    text,
    event          bytea NOT NULL,
    PRIMARY KEY (tenant_id, device_id, epoch, seq, at_ms)
) {partition};

CREATE TABLE IF NOT EXISTS line_items (
    tenant_id      text NOT NULL,
    at_ms          bigint NOT NULL,
    device_id      text NOT NULL,
    epoch          bigint NOT NULL,
    seq            bigint NOT NULL,
    line_no        smallint NOT NULL,
    store_id       text NOT NULL,
    transaction_id text NOT NULL,
    sku            text NOT NULL,
    quantity       integer NOT NULL,
    price_e4       bigint NOT NULL,
    kind           smallint NOT NULL,
    PRIMARY KEY (tenant_id, device_id, epoch, seq, line_no, at_ms)
) {partition};
CREATE INDEX IF NOT EXISTS line_items_store_sku ON line_items (tenant_id, store_id, sku, at_ms);

CREATE TABLE IF NOT EXISTS stock_movements (
    tenant_id text NOT NULL,
    at_ms     bigint NOT NULL,
    device_id text NOT NULL,
    epoch     bigint NOT NULL,
    class     smallint NOT NULL,
    seq       bigint NOT NULL,
    store_id  text NOT NULL,
    sku       text NOT NULL,
    source_id text NOT NULL,
    is_count  boolean NOT NULL,
    quantity  bigint NOT NULL,
    PRIMARY KEY (tenant_id, device_id, epoch, class, seq, at_ms)
) {partition};
CREATE INDEX IF NOT EXISTS stock_movements_store_sku ON stock_movements (tenant_id, store_id, sku, at_ms);

-- Scans, adjustments, alerts and telemetry as received (postcard bytes).
CREATE TABLE IF NOT EXISTS other_events (
    tenant_id text NOT NULL,
    at_ms     bigint NOT NULL,
    device_id text NOT NULL,
    epoch     bigint NOT NULL,
    class     smallint NOT NULL,
    seq       bigint NOT NULL,
    store_id  text NOT NULL,
    kind      smallint NOT NULL,
    event     bytea NOT NULL,
    PRIMARY KEY (tenant_id, device_id, epoch, class, seq, at_ms)
) {partition};

CREATE TABLE IF NOT EXISTS alerts (
    tenant_id  text NOT NULL,
    alert_id   text NOT NULL,
    store_id   text NOT NULL,
    kind       text NOT NULL,
    severity   text NOT NULL,
    subject    text NOT NULL,
    raised_ms  bigint NOT NULL,
    raised_offset_min smallint NOT NULL,
    state      smallint NOT NULL,
    changed_by text,
    message    text NOT NULL,
    facts      jsonb NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, alert_id)
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (tenant_id, raised_ms DESC);

-- Rollups maintained by the hub in the ingest transaction (granularity: 0 minute,
-- 1 hour, 2 day; dim: 0 store, 1 item, 2 payment, 3 register).
CREATE TABLE IF NOT EXISTS sales_rollups (
    tenant_id        text NOT NULL,
    granularity      smallint NOT NULL,
    dim              smallint NOT NULL,
    store_id         text NOT NULL,
    dim_value        text NOT NULL,
    bucket_ms        bigint NOT NULL,
    revenue_e4       bigint NOT NULL,
    units            bigint NOT NULL,
    transactions     bigint NOT NULL,
    refunds          bigint NOT NULL,
    refund_amount_e4 bigint NOT NULL,
    voids            bigint NOT NULL,
    PRIMARY KEY (tenant_id, granularity, dim, store_id, dim_value, bucket_ms)
) WITH (fillfactor = 70); -- room for HOT updates: ingest adds to existing rows all the time
CREATE INDEX IF NOT EXISTS sales_rollups_by_bucket ON sales_rollups (tenant_id, granularity, dim, bucket_ms);

CREATE TABLE IF NOT EXISTS dead_letters (
    tenant_id   text NOT NULL,
    id          bigserial NOT NULL,
    store_id    text NOT NULL,
    event_key   text NOT NULL,
    reason      text NOT NULL,
    raw         bytea NOT NULL,
    received_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
