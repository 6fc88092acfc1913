-- Jobs and editable messages (sqlite). Keep in step with
-- migrations/postgres/0008_jobs_and_edits.sql.

-- The operator's jobs that plugins started, as effects of their calls:
-- inserted 'queued' with the call's commit, claimed 'running' by one
-- host (owner, renewed lease), ended in the transaction that hands the
-- outcome to the plugin. A 'running' row whose owner is gone is 'lost':
-- the host never runs it again by itself. The output kept is the last
-- lines, with the job's secrets masked.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_key          TEXT    NOT NULL UNIQUE,
    created_ms       INTEGER  NOT NULL,
    plugin           TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    tag              TEXT    NOT NULL,
    params           TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'queued',
    cancel_requested INTEGER  NOT NULL DEFAULT 0,
    owner            TEXT,
    lease_until_ms   INTEGER,
    pid              INTEGER,
    started_ms       INTEGER,
    ended_ms         INTEGER,
    exit_code        INTEGER,
    output           TEXT    NOT NULL DEFAULT '',
    error            TEXT
);
CREATE INDEX jobs_open ON jobs (id) WHERE state IN ('queued', 'running');
CREATE INDEX jobs_age ON jobs (created_ms);

-- A message a plugin may edit later has a handle (its plugin's, given
-- by chat.send); an edit names the handle it replaces; the chat
-- network's id of a delivered message is what an edit is sent against.
ALTER TABLE outbox ADD COLUMN plugin TEXT;
ALTER TABLE outbox ADD COLUMN handle TEXT;
ALTER TABLE outbox ADD COLUMN edits TEXT;
ALTER TABLE outbox ADD COLUMN remote_id TEXT;
CREATE UNIQUE INDEX outbox_handle ON outbox (handle) WHERE handle IS NOT NULL;
