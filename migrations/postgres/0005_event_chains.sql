-- Event chains (postgres). Keep in step with migrations/sqlite/0005_event_chains.sql.

-- The event a chain started from (a command's or a run's), for events
-- emitted by event handlers; NULL for that first event itself. A chain's
-- size is bounded, so handlers that feed each other cannot storm.
ALTER TABLE events ADD COLUMN root_id BIGINT;
CREATE INDEX events_root ON events (root_id) WHERE root_id IS NOT NULL;
