-- The heads of the outbox's queues are found by id among the messages
-- still waiting; without an index of its own that search walked every
-- message ever sent, so each delivery cost more as history grew.
-- Keep in step with the other backend's 0009_outbox_waiting.sql.
CREATE INDEX outbox_waiting ON outbox (id) WHERE delivered_ms IS NULL AND given_up_ms IS NULL;
