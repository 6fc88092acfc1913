-- Fails the statement it is part of with `why` unless `ok`: a statement
-- that commits on its own (the writer's one-statement batches, see
-- host/src/store/grouped.rs) checks what it did before it ends, so a
-- failed check leaves nothing behind. PostgreSQL only: SQLite commits
-- every batch in a transaction of its own, in process.
CREATE FUNCTION ikkyu_check(ok boolean, why text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION '%', why;
    END IF;
    RETURN true;
END
$$;
