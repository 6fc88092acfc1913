-- What a real chat network needs (PostgreSQL). Keep in step with
-- migrations/sqlite/0002_chat.sql.

-- How far each chat adapter has read its network's stream (a Matrix sync
-- token). Saved only after every message before it was committed, so a
-- crash re-reads rather than loses; processed_messages drops the re-reads.
CREATE TABLE chat_positions (
    adapter  TEXT   PRIMARY KEY,
    position TEXT   NOT NULL,
    saved_ms BIGINT NOT NULL
);

-- A reply inside a thread goes to the thread's root.
ALTER TABLE outbox ADD COLUMN thread_root TEXT;
-- A message the network refused for good (or after too many attempts) is
-- kept on record but no longer blocks the messages after it.
ALTER TABLE outbox ADD COLUMN given_up_ms BIGINT;
