-- Hour rollups by item are not upserted by every commit (see storesync_edge::rollup): each
-- commit appends its item-hour increments here, as one row, in its own transaction, and
-- the writer folds the rows into `rollups` and deletes them, in one transaction.
CREATE TABLE item_deltas (
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
