-- storesync hub schema, version 5 (PostgreSQL): no item rollup rows by hour.
--
-- An item's hour holds about one line item in store data, so a rollup row per item and hour
-- cost ingest about as much as the line item itself (two index entries, an ON CONFLICT
-- probe) and summed nothing. Reads of items by hour now sum the line items (see
-- `store/item_hours.rs`), which are kept for `retention_days`; item rows by day stay for
-- ever. The rows written before are no longer read: they go. Runs as one implicit
-- transaction, with its schema_version row.
--
-- The owner runs this, and row-level security is FORCEd on `sales_rollups` for the owner
-- too, with no tenant set here: the DELETE would see no row. It is lifted for this
-- transaction; the migration re-FORCEs it on every table before it ends.

ALTER TABLE sales_rollups NO FORCE ROW LEVEL SECURITY;

DELETE FROM sales_rollups WHERE dim = 1 AND granularity = 1;

INSERT INTO schema_version VALUES (5, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
