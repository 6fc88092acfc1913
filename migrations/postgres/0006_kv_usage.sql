-- Bytes per kv namespace (PostgreSQL). Keep in step with
-- migrations/sqlite/0006_kv_usage.sql.

-- What each plugin's namespace holds (keys and values, in bytes), kept by
-- a trigger on plugin_kv so a namespace's quota is checked with one read,
-- whichever path wrote or deleted the rows.
CREATE TABLE plugin_kv_usage (
    plugin TEXT   PRIMARY KEY,
    bytes  BIGINT NOT NULL
);

INSERT INTO plugin_kv_usage (plugin, bytes)
SELECT plugin, SUM(octet_length(key) + octet_length(value)) FROM plugin_kv GROUP BY plugin;

CREATE FUNCTION plugin_kv_usage_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE plugin_kv_usage
        SET bytes = bytes - octet_length(OLD.key) - octet_length(OLD.value)
        WHERE plugin = OLD.plugin;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO plugin_kv_usage (plugin, bytes)
        VALUES (NEW.plugin, octet_length(NEW.key) + octet_length(NEW.value))
        ON CONFLICT (plugin) DO UPDATE SET bytes = plugin_kv_usage.bytes + excluded.bytes;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER plugin_kv_usage AFTER INSERT OR UPDATE OR DELETE ON plugin_kv
FOR EACH ROW EXECUTE FUNCTION plugin_kv_usage_track();
