-- Durable schedules (PostgreSQL). Keep in step with
-- migrations/sqlite/0003_schedules.sql.

-- One timer of one plugin: a cron expression in a zone, or one instant.
-- next_fire_ms is when it is due; firing moves it on in the same
-- transaction as the run's effects, and only if it still holds the value
-- the run started from, so a run commits at most once.
CREATE TABLE schedules (
    plugin       TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    cron         TEXT,
    zone         TEXT,
    at_ms        BIGINT,
    payload      TEXT    NOT NULL,
    -- 1 for schedules declared in describe(): kept in step with the plugin.
    declared     BIGINT NOT NULL DEFAULT 0,
    next_fire_ms BIGINT,
    created_ms   BIGINT NOT NULL,
    last_fire_ms BIGINT,
    last_outcome TEXT,
    last_detail  TEXT,
    PRIMARY KEY (plugin, id)
);
CREATE INDEX schedules_due ON schedules (next_fire_ms);
