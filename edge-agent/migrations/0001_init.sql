-- The edge agent's schema. See the crate documentation of storesync_edge::store for why
-- the tables are keyed the way they are.

-- Device identity: device_id, epoch, dir_identity, tenant, store.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Every epoch this data directory has had, with the fork heads it started from.
CREATE TABLE epochs (
    epoch      INTEGER PRIMARY KEY NOT NULL,
    started_ms INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    link       BLOB
);

-- The sealer's heads and the hub's acknowledged position, per (epoch, class). Written in
-- the same transaction as the events they describe.
CREATE TABLE stream_heads (
    epoch INTEGER NOT NULL,
    class INTEGER NOT NULL,
    seq   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (epoch, class)
) WITHOUT ROWID;

-- The outbox and the log: one row per sealed event. The key is append-only per stream,
-- so inserts touch the right edge of the tree only.
CREATE TABLE events (
    epoch        INTEGER NOT NULL,
    class        INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    prev         BLOB NOT NULL,
    content_hash BLOB NOT NULL,
    body         BLOB NOT NULL,
    recorded_ms  INTEGER NOT NULL,
    -- 63-bit hash of the record's idempotency id (transactionId, scanId, adjustmentId);
    -- deliberately not indexed: the writer keeps these in memory.
    dedupe_key   INTEGER,
    content_tag  INTEGER,
    PRIMARY KEY (epoch, class, seq)
) WITHOUT ROWID;

-- Idempotency keys of pruned events, kept for retention.dedupe_days.
CREATE TABLE dedupe_archive (
    dedupe_key  INTEGER PRIMARY KEY NOT NULL,
    content_tag INTEGER NOT NULL,
    pruned_ms   INTEGER NOT NULL
);

-- Local rollups. granularity: 0 minute, 1 hour, 2 day; dim_kind: 0 store, 1 item,
-- 2 payment method, 3 register. Money in ten-thousandths.
CREATE TABLE rollups (
    granularity      INTEGER NOT NULL,
    bucket_ms        INTEGER NOT NULL,
    dim_kind         INTEGER NOT NULL,
    dim_value        TEXT NOT NULL,
    revenue_e4       INTEGER NOT NULL,
    units            INTEGER NOT NULL,
    transactions     INTEGER NOT NULL,
    refunds          INTEGER NOT NULL,
    refund_amount_e4 INTEGER NOT NULL,
    voids            INTEGER NOT NULL,
    PRIMARY KEY (granularity, bucket_ms, dim_kind, dim_value)
) WITHOUT ROWID;

-- Inventory on hand per SKU, maintained with the shared fold.
CREATE TABLE on_hand (
    sku           TEXT PRIMARY KEY NOT NULL,
    quantity      INTEGER NOT NULL,
    last_count_ms INTEGER,
    updated_ms    INTEGER NOT NULL
) WITHOUT ROWID;

-- Records that could not be accepted, with their raw bytes.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    source      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw         BLOB NOT NULL,
    state       TEXT NOT NULL DEFAULT 'open',
    resolved_ms INTEGER
);

CREATE TABLE alerts (
    alert_id   TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    severity   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    raised_ms  INTEGER NOT NULL,
    state      TEXT NOT NULL,
    changed_by TEXT,
    changed_ms INTEGER,
    message    TEXT NOT NULL,
    facts      TEXT NOT NULL
);
CREATE INDEX alerts_raised ON alerts (raised_ms);
