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
use std::sync::{Arc, Mutex};

use super::sql::{Conn, Query, Row, query};
use super::{Db, StoreError};

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
    /// Bytes (keys and values) the namespace may hold; a commit that
    /// would grow it past this is refused.
    pub quota: u64,
}

/// Upper bounds of what each namespace holds, so the quota costs a read
/// only when a commit could reach it: every commit adds what it writes to
/// the bound before it checks, and an exact read resets it. With several
/// processes on one PostgreSQL database each keeps its own bound, so the
/// quota can be passed by what the others wrote since the last exact read.
#[derive(Debug, Default, Clone)]
pub(super) struct Usage(Arc<Mutex<HashMap<String, u64>>>);

impl Usage {
    /// Adds `grows` to the bound of `ns`; whether it may now pass `quota`
    /// (or is not known yet), so the commit must read the exact figure.
    fn reserve(&self, ns: &str, grows: u64, quota: u64) -> bool {
        let mut bounds = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match bounds.get_mut(ns) {
            Some(bound) => {
                *bound = bound.saturating_add(grows);
                *bound > quota
            }
            None => true,
        }
    }

    fn set(&self, ns: &str, bytes: u64) {
        let mut bounds = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bounds.insert(ns.to_owned(), bytes);
    }
}

impl Db {
    /// The entry under `key`, if any: from the copy of what this process
    /// last read or wrote (`kv_copy`) when it is fresh.
    pub async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<KvRow>, StoreError> {
        let (value, version) = match self.kv_copy.get(ns, key) {
            Ok(copied) => copied,
            Err(miss) => {
                let read = std::time::Instant::now();
                let stored = self.kv_read(ns, key).await?;
                self.kv_copy.fill(ns, key, miss, read, stored.clone());
                stored
            }
        };
        Ok(value.map(|value| KvRow {
            key: key.to_owned(),
            value,
            version,
        }))
    }

    /// The entry under `key` as the database holds it: (none, 0) if absent.
    async fn kv_read(&self, ns: &str, key: &str) -> Result<(Option<Vec<u8>>, i64), StoreError> {
        let q = query("SELECT value, version FROM plugin_kv WHERE plugin = $1 AND key = $2")
            .bind(ns)
            .bind(key);
        match self.read_all(&q).await?.first() {
            Some(r) => Ok((Some(r.get(0)?), r.get(1)?)),
            None => Ok((None, 0)),
        }
    }

    /// Every entry whose key starts with `prefix`, sorted by key
    /// (bytewise); none when there are more than [`MAX_SCAN_ROWS`] or their
    /// keys and values pass `max_bytes`. Rows are read one at a time, so a
    /// refused scan never holds more than `max_bytes` and one row.
    pub async fn kv_scan(
        &self,
        ns: &str,
        prefix: &str,
        max_bytes: usize,
    ) -> Result<Option<Vec<KvRow>>, StoreError> {
        let mut scan = Scan::new(max_bytes);
        match self.kv_copy.scan(ns, prefix) {
            Ok(rows) => {
                for row in rows {
                    if !scan.push(row) {
                        break;
                    }
                }
            }
            Err(miss) => {
                let read = std::time::Instant::now();
                self.read_while(&scan_query(ns, prefix), |row| scan.take(&row))
                    .await?;
                if !scan.over {
                    self.kv_copy.fill_scan(ns, prefix, miss, read, &scan.rows);
                }
            }
        }
        Ok(scan.rows())
    }
}

/// At most this many entries come back from one `kv.scan`: a plugin keeps
/// larger collections under several prefixes.
pub const MAX_SCAN_ROWS: usize = 10_000;

/// A scan of the keys from `$2` up to (not including) `$3`. Its limit is
/// written in (one more than [`MAX_SCAN_ROWS`], to tell a scan that is too
/// large): SQLite prepares a statement again every time a parameter its
/// plan looked at is bound, and it looks at `LIMIT`'s.
pub(super) const SCAN_PREFIX: &str = "SELECT key, value, version FROM plugin_kv \
     WHERE plugin = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT 10001";

/// The scan query, shared by reads during a call and validation at commit.
fn scan_query(ns: &str, prefix: &str) -> Query {
    match prefix_end(prefix) {
        Some(end) => query(SCAN_PREFIX).bind(ns).bind(prefix).bind(end),
        None => query(
            "SELECT key, value, version FROM plugin_kv WHERE plugin = $1 ORDER BY key LIMIT 10001",
        )
        .bind(ns),
    }
}

/// A scan's rows as they arrive, stopped once there are more than
/// [`MAX_SCAN_ROWS`] or their keys and values pass the byte bound.
struct Scan {
    rows: Vec<KvRow>,
    bytes: usize,
    max_bytes: usize,
    over: bool,
}

impl Scan {
    fn new(max_bytes: usize) -> Self {
        Self {
            rows: Vec::new(),
            bytes: 0,
            max_bytes,
            over: false,
        }
    }

    /// Takes one row: whether to go on.
    fn take(&mut self, r: &Row) -> Result<bool, StoreError> {
        Ok(self.push(KvRow {
            key: r.get(0)?,
            value: r.get(1)?,
            version: r.get(2)?,
        }))
    }

    /// [`Scan::take`] for a row already read.
    fn push(&mut self, row: KvRow) -> bool {
        self.bytes = self.bytes.saturating_add(row.key.len() + row.value.len());
        if self.rows.len() >= MAX_SCAN_ROWS || self.bytes > self.max_bytes {
            self.over = true;
            return false;
        }
        self.rows.push(row);
        true
    }

    /// The rows, or none if the scan went over its bounds.
    fn rows(self) -> Option<Vec<KvRow>> {
        (!self.over).then_some(self.rows)
    }
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

/// Checks the reads and the quota and applies the writes inside the
/// commit's transaction.
pub(super) async fn apply(
    tx: &mut Conn<'_>,
    changes: &KvChanges,
    stamp: i64,
    usage: &Usage,
) -> Result<(), StoreError> {
    if changes.writes.is_empty() {
        return Ok(());
    }
    validate(tx, changes).await?;
    let ns = &changes.namespace;
    let written: usize = changes
        .writes
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| k.len() + v.len()))
        .sum();
    let grows = u64::try_from(written).unwrap_or(u64::MAX);
    let before = if grows > 0 && usage.reserve(ns, grows, changes.quota) {
        Some(used(tx, ns).await?)
    } else {
        None
    };
    write(tx, changes, stamp).await?;
    if let Some(before) = before {
        let after = used(tx, ns).await?;
        // Shrinking a namespace that is over its quota (the quota was
        // lowered) is always allowed.
        if after > changes.quota && after > before {
            usage.set(ns, before);
            return Err(StoreError::Full {
                plugin: ns.clone(),
                used: before,
                quota: changes.quota,
            });
        }
        usage.set(ns, after);
    }
    Ok(())
}

/// Bytes the namespace holds, as the triggers of `plugin_kv_usage` keep it.
async fn used(tx: &mut Conn<'_>, ns: &str) -> Result<u64, StoreError> {
    let bytes: Option<i64> = query("SELECT bytes FROM plugin_kv_usage WHERE plugin = $1")
        .bind(ns)
        .scalar(tx)
        .await?;
    Ok(bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0)))
}

async fn write(tx: &mut Conn<'_>, changes: &KvChanges, stamp: i64) -> Result<(), StoreError> {
    for (key, value) in &changes.writes {
        match value {
            Some(value) => {
                query(
                    "INSERT INTO plugin_kv (plugin, key, value, version) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, version = excluded.version",
                )
                .bind(&changes.namespace)
                .bind(key)
                .bind(value)
                .bind(stamp)
                .execute(tx)
                .await?;
            }
            None => {
                query("DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2")
                    .bind(&changes.namespace)
                    .bind(key)
                    .execute(tx)
                    .await?;
            }
        }
    }
    Ok(())
}

async fn validate(tx: &mut Conn<'_>, changes: &KvChanges) -> Result<(), StoreError> {
    let ns = &changes.namespace;
    for (key, seen) in &changes.reads.keys {
        let now: Option<i64> =
            query("SELECT version FROM plugin_kv WHERE plugin = $1 AND key = $2")
                .bind(ns)
                .bind(key)
                .scalar(tx)
                .await?;
        if now.unwrap_or(0) != *seen {
            return Err(StoreError::Conflict);
        }
    }
    for (prefix, seen) in &changes.reads.scans {
        // A scan the call saw complete that is now too large changed.
        let mut scan = Scan::new(usize::MAX);
        scan_query(ns, prefix)
            .fetch_while(tx, |row| scan.take(&row))
            .await?;
        let rows = scan.rows().ok_or(StoreError::Conflict)?;
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
    fn scans_stop_one_past_the_most_rows() {
        let limit = format!("LIMIT {}", super::MAX_SCAN_ROWS + 1);
        assert!(super::SCAN_PREFIX.ends_with(&limit));
    }

    #[test]
    fn prefix_upper_bounds() {
        assert_eq!(prefix_end("balance/").as_deref(), Some("balance0"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
    }
}
