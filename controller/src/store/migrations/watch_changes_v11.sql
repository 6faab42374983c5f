
ALTER TABLE watches ADD COLUMN changes BIGINT NOT NULL DEFAULT 0;
UPDATE watches SET changes = (SELECT COUNT(*) FROM watch_events WHERE watch_events.watch_id = watches.id);
