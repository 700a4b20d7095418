-- storesync hub schema, version 4 (PostgreSQL): no primary key on `transactions` and
-- `line_items`.
--
-- An event's identity is its row in `event_keys`, inserted in the same transaction as the
-- event's rows (a known key is a duplicate or a conflict, and then no row of that event is
-- written), so a second key on the fact tables enforced nothing `event_keys` does not, while
-- it cost every ingested line item an insert into a six-column index, about a fifth of the
-- database's work per transaction. No query reads these tables by that key: line items are
-- read by store and SKU (`line_items_store_sku`), transactions by tenant. Runs as one
-- implicit transaction, with its schema_version row.

ALTER TABLE line_items DROP CONSTRAINT IF EXISTS line_items_pkey;
ALTER TABLE transactions DROP CONSTRAINT IF EXISTS transactions_pkey;

INSERT INTO schema_version VALUES (4, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
