-- Bytes per kv namespace (sqlite). Keep in step with
-- migrations/postgres/0006_kv_usage.sql.

-- What each plugin's namespace holds (keys and values, in bytes), kept by
-- triggers on plugin_kv so a namespace's quota is checked with one read,
-- whichever path wrote or deleted the rows.
CREATE TABLE plugin_kv_usage (
    plugin TEXT    NOT NULL PRIMARY KEY,
    bytes  INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO plugin_kv_usage (plugin, bytes)
SELECT plugin, SUM(length(CAST(key AS BLOB)) + length(value)) FROM plugin_kv GROUP BY plugin;

CREATE TRIGGER plugin_kv_usage_insert AFTER INSERT ON plugin_kv BEGIN
    INSERT INTO plugin_kv_usage (plugin, bytes)
    VALUES (NEW.plugin, length(CAST(NEW.key AS BLOB)) + length(NEW.value))
    ON CONFLICT (plugin) DO UPDATE SET bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER plugin_kv_usage_update AFTER UPDATE ON plugin_kv BEGIN
    UPDATE plugin_kv_usage
    SET bytes = bytes - length(CAST(OLD.key AS BLOB)) - length(OLD.value)
                      + length(CAST(NEW.key AS BLOB)) + length(NEW.value)
    WHERE plugin = NEW.plugin;
END;

CREATE TRIGGER plugin_kv_usage_delete AFTER DELETE ON plugin_kv BEGIN
    UPDATE plugin_kv_usage
    SET bytes = bytes - length(CAST(OLD.key AS BLOB)) - length(OLD.value)
    WHERE plugin = OLD.plugin;
END;
