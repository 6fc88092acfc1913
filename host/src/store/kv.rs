//! Plugin key-value data: reads during a call, and the validation and
//! writes at commit.
//!
//! Concurrency is optimistic. A call remembers the version of everything it
//! read; when it commits writes, the versions are checked again inside the
//! transaction and a difference aborts the commit with
//! [`StoreError::Conflict`], so the caller re-runs the (side-effect free)
//! plugin call. No lock is held while plugin code runs.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use sqlx::Row;

use super::{Db, StoreError, classify};

/// One stored entry.
#[derive(Debug, Clone)]
pub struct KvRow {
    /// The key.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Changes on every write; what validation compares.
    pub version: i64,
}

/// What a call read, to be validated at commit.
#[derive(Debug, Default, Clone)]
pub struct KvReads {
    /// Key -> version seen (0 = absent).
    pub keys: HashMap<String, i64>,
    /// Prefix -> digest of the (key, version) pairs seen.
    pub scans: HashMap<String, u64>,
}

/// Everything one call changes in one namespace.
#[derive(Debug, Default, Clone)]
pub struct KvChanges {
    /// The plugin's name.
    pub namespace: String,
    /// Key -> new value, or none to delete.
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    /// What the call read, to validate at commit.
    pub reads: KvReads,
}

impl Db {
    /// The entry under `key`, if any.
    pub async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<KvRow>, StoreError> {
        let row =
            sqlx::query("SELECT value, version FROM plugin_kv WHERE plugin = $1 AND key = $2")
                .bind(ns)
                .bind(key)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|r| KvRow {
            key: key.to_owned(),
            value: r.get(0),
            version: r.get(1),
        }))
    }

    /// Every entry whose key starts with `prefix`, sorted by key (bytewise).
    pub async fn kv_scan(&self, ns: &str, prefix: &str) -> Result<Vec<KvRow>, StoreError> {
        Ok(scan_rows(&self.read, ns, prefix).await?)
    }
}

/// The scan query, shared by reads during a call and validation at commit.
async fn scan_rows<'e, E>(exec: E, ns: &str, prefix: &str) -> Result<Vec<KvRow>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = match prefix_end(prefix) {
        Some(end) => {
            sqlx::query(
                "SELECT key, value, version FROM plugin_kv \
                 WHERE plugin = $1 AND key >= $2 AND key < $3 ORDER BY key",
            )
            .bind(ns.to_owned())
            .bind(prefix.to_owned())
            .bind(end)
            .fetch_all(exec)
            .await?
        }
        None => {
            sqlx::query("SELECT key, value, version FROM plugin_kv WHERE plugin = $1 ORDER BY key")
                .bind(ns.to_owned())
                .fetch_all(exec)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|r| KvRow {
            key: r.get(0),
            value: r.get(1),
            version: r.get(2),
        })
        .collect())
}

/// A digest of what a scan saw, cheap to keep and compare.
pub fn scan_digest<'a>(rows: impl Iterator<Item = (&'a str, i64)>) -> u64 {
    let mut h = DefaultHasher::new();
    for (key, version) in rows {
        key.hash(&mut h);
        version.hash(&mut h);
    }
    h.finish()
}

/// The smallest string greater than every string starting with `prefix`,
/// under bytewise order; none when there is no upper bound (empty prefix,
/// or a prefix of only `char::MAX`).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Checks the reads and applies the writes inside the commit's transaction.
pub(super) async fn apply(
    tx: &mut sqlx::AnyConnection,
    changes: &KvChanges,
    stamp: i64,
) -> Result<(), StoreError> {
    if changes.writes.is_empty() {
        return Ok(());
    }
    validate(tx, changes).await?;
    for (key, value) in &changes.writes {
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO plugin_kv (plugin, key, value, version) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, version = excluded.version",
                )
                .bind(&changes.namespace)
                .bind(key)
                .bind(value)
                .bind(stamp)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            None => {
                sqlx::query("DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2")
                    .bind(&changes.namespace)
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
        }
    }
    Ok(())
}

async fn validate(tx: &mut sqlx::AnyConnection, changes: &KvChanges) -> Result<(), StoreError> {
    let ns = &changes.namespace;
    for (key, seen) in &changes.reads.keys {
        let now: Option<i64> =
            sqlx::query_scalar("SELECT version FROM plugin_kv WHERE plugin = $1 AND key = $2")
                .bind(ns)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
        if now.unwrap_or(0) != *seen {
            return Err(StoreError::Conflict);
        }
    }
    for (prefix, seen) in &changes.reads.scans {
        let rows = scan_rows(&mut *tx, ns, prefix).await.map_err(classify)?;
        if scan_digest(rows.iter().map(|r| (r.key.as_str(), r.version))) != *seen {
            return Err(StoreError::Conflict);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_upper_bounds() {
        assert_eq!(prefix_end("balance/").as_deref(), Some("balance0"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
    }
}
