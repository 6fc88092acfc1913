-- HTTP requests plugins send as effects (sqlite). Keep in step with
-- migrations/postgres/0007_http_sends.sql.

-- Committed with the call that asked for them, performed by the host after
-- the commit, retried on timeouts and 5xx with growing delays under one
-- Idempotency-Key, and ended (done or failed) in the transaction that
-- delivers the outcome to the plugin. Header values keep `{secret:NAME}`:
-- secrets are never stored.
CREATE TABLE http_sends (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms      INTEGER NOT NULL,
    plugin          TEXT    NOT NULL,
    tag             TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    headers         TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL DEFAULT 'pending',
    status          INTEGER,
    last_error      TEXT,
    done_ms         INTEGER
);
CREATE INDEX http_sends_pending ON http_sends (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX http_sends_age ON http_sends (created_ms);
