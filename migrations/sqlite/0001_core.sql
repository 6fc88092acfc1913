-- Core tables of the ikkyu host (SQLite). Keep in step with
-- migrations/postgres/0001_core.sql: same tables, same columns.

-- Each plugin's key-value namespace. `version` changes on every write and is
-- what optimistic concurrency checks compare.
CREATE TABLE plugin_kv (
    plugin  TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    value   BLOB    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (plugin, key)
) WITHOUT ROWID;

-- Chat messages already handled, so a replay does nothing.
CREATE TABLE processed_messages (
    message_id   TEXT    PRIMARY KEY,
    processed_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Everything a command, event or schedule did, allowed or not.
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms          INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    room           TEXT,
    command        TEXT    NOT NULL,
    plugin         TEXT,
    plugin_version TEXT,
    decision       TEXT    NOT NULL,
    outcome        TEXT    NOT NULL,
    detail         TEXT,
    duration_us    INTEGER NOT NULL
);

-- Messages to deliver once the transaction that produced them committed.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms   INTEGER NOT NULL,
    target_kind  TEXT    NOT NULL,
    target       TEXT    NOT NULL,
    reply_to     TEXT,
    body         TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_ms INTEGER
);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_ms IS NULL;

-- Events emitted by plugins, and their delivery to each subscriber.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms    INTEGER NOT NULL,
    topic         TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    source_plugin TEXT    NOT NULL,
    depth         INTEGER NOT NULL
);
CREATE TABLE event_deliveries (
    event_id   INTEGER NOT NULL REFERENCES events (id),
    plugin     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state      TEXT    NOT NULL DEFAULT 'pending',
    PRIMARY KEY (event_id, plugin)
);
CREATE INDEX event_deliveries_pending ON event_deliveries (event_id) WHERE state = 'pending';

-- Roles granted in chat (the config's roles are not stored).
CREATE TABLE roles (
    user_id    TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    granted_by TEXT    NOT NULL,
    granted_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, role)
) WITHOUT ROWID;
