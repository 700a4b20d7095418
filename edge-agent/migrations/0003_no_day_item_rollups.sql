-- Day rollups by item are no longer stored (the agent sums them from the hour rows, see
-- storesync_edge::rollup); drop the ones written before.
DELETE FROM rollups WHERE granularity = 2 AND dim_kind = 1;
