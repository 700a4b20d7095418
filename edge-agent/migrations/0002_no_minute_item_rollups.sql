-- Minute rollups by item are no longer stored (the agent answers them from the sales log,
-- see storesync_edge::rollup); drop the ones written before.
DELETE FROM rollups WHERE granularity = 0 AND dim_kind = 1;
