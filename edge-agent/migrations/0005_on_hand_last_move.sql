-- On hand knows the time of the latest movement it applied, so a count that arrives after
-- a later movement refolds the SKU instead of overriding that movement. Cells from before
-- do not know it: they take the greatest time, so their next count refolds once and learns
-- it from the log.
ALTER TABLE on_hand ADD COLUMN last_move_ms INTEGER;
UPDATE on_hand SET last_move_ms = 9223372036854775807;
