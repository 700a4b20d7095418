-- Hour rollups by item are folded in from the sales log a few thousand transactions at a
-- time instead of in every commit (see storesync_edge::rollup). The mark says, per epoch,
-- the last sales event whose items the stored rows count; readers add the events past it.
CREATE TABLE item_fold (
    epoch INTEGER PRIMARY KEY NOT NULL,
    seq   INTEGER NOT NULL
);
-- Until now every commit kept those rows current: they count every stored sales event.
INSERT INTO item_fold (epoch, seq) SELECT epoch, seq FROM stream_heads WHERE class = 0;
