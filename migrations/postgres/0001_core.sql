-- Core tables of the ikkyu host (PostgreSQL). Keep in step with
-- migrations/sqlite/0001_core.sql: same tables, same columns.
-- Keys use the "C" collation so prefix ranges order bytes like SQLite does.

CREATE TABLE plugin_kv (
    plugin  TEXT   NOT NULL,
    key     TEXT   COLLATE "C" NOT NULL,
    value   BYTEA  NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (plugin, key)
);

CREATE TABLE processed_messages (
    message_id   TEXT   PRIMARY KEY,
    processed_ms BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    at_ms          BIGINT NOT NULL,
    kind           TEXT   NOT NULL,
    actor          TEXT   NOT NULL,
    room           TEXT,
    command        TEXT   NOT NULL,
    plugin         TEXT,
    plugin_version TEXT,
    decision       TEXT   NOT NULL,
    outcome        TEXT   NOT NULL,
    detail         TEXT,
    duration_us    BIGINT NOT NULL
);

CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    created_ms   BIGINT NOT NULL,
    target_kind  TEXT   NOT NULL,
    target       TEXT   NOT NULL,
    reply_to     TEXT,
    body         TEXT   NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_ms BIGINT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_ms IS NULL;

CREATE TABLE events (
    id            BIGSERIAL PRIMARY KEY,
    created_ms    BIGINT NOT NULL,
    topic         TEXT   NOT NULL,
    payload       TEXT   NOT NULL,
    source_plugin TEXT   NOT NULL,
    depth         BIGINT NOT NULL
);
CREATE TABLE event_deliveries (
    event_id   BIGINT NOT NULL REFERENCES events (id),
    plugin     TEXT   NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    state      TEXT   NOT NULL DEFAULT 'pending',
    PRIMARY KEY (event_id, plugin)
);
CREATE INDEX event_deliveries_pending ON event_deliveries (event_id) WHERE state = 'pending';

CREATE TABLE roles (
    user_id    TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    granted_by TEXT   NOT NULL,
    granted_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, role)
);
