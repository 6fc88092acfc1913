-- Delivery that no one target can hold up, and tables that do not grow
-- forever (postgres). Keep in step with migrations/sqlite/0004_delivery.sql.

-- Messages keep their order per target (a room, or a user's DM), not
-- across targets: the head of each target's queue is sent, retried with
-- growing delays (next_attempt_ms), and given up after a bound.
ALTER TABLE outbox ADD COLUMN next_attempt_ms BIGINT;
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (target_kind, target, id)
    WHERE delivered_ms IS NULL AND given_up_ms IS NULL;
CREATE INDEX outbox_done ON outbox (created_ms)
    WHERE delivered_ms IS NOT NULL OR given_up_ms IS NOT NULL;

-- A failed event delivery waits before it is tried again.
ALTER TABLE event_deliveries ADD COLUMN next_attempt_ms BIGINT;
DROP INDEX event_deliveries_pending;
CREATE INDEX event_deliveries_pending ON event_deliveries (plugin, event_id)
    WHERE state = 'pending';

-- Retention: rows older than [retention] are pruned by the host.
CREATE INDEX processed_messages_age ON processed_messages (processed_ms);
CREATE INDEX audit_log_age ON audit_log (at_ms);
CREATE INDEX events_age ON events (created_ms);
