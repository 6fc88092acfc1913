//! Plugin kv entries as last read or written by this process, so that a
//! command's `kv.get` and `kv.scan` cost no database round trip.
//!
//! Most commands read a key or a prefix and write nothing (`!points`
//! scans every balance and reads one), and every such read was a round
//! trip (PostgreSQL) or a turn on the one SQLite connection every commit
//! also needs. The database stays the only truth: a copy is what a read
//! may return, never what a commit checks. A commit validates each version
//! its call read inside its transaction, so a stale copy can cost a re-run
//! of the call, never a lost update.
//!
//! The copy is kept exact for this process's own commits: the writer
//! applies each commit's writes here, in commit order, after its
//! transaction and before it answers anyone. Another process's writes (a
//! standby replica handling a webhook, later) reach a read that writes
//! nothing within [`FRESH_FOR`], as roles do, and a command that writes
//! meets them at once as a conflict, which forgets the namespace's copy
//! before the call runs again.
//!
//! A scan is served only under a prefix whose every key was read together
//! (a "complete" prefix); it also answers a `get` of a key it does not
//! hold: absent. The copy is bounded by [`MAX_BYTES`]; one that grows past
//! it is dropped whole, which is rare and costs only reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::KvRow;

/// How long what was read is trusted without a write of ours.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// Keys and values the copy holds at most, over every namespace.
const MAX_BYTES: usize = 4 << 20;

/// A scan this large is not kept: it would push most else out.
const MAX_SCAN_BYTES: usize = MAX_BYTES / 4;

/// What an entry costs beyond its key and value (map node, entry), so
/// that many small keys are bounded too.
const OVERHEAD: usize = 96;

/// A stored value and its version, or (none, 0) for a key known absent.
pub(super) type Value = (Option<Vec<u8>>, i64);

/// The copy; cheap to clone, shared by the store and its writer.
#[derive(Debug, Default, Clone)]
pub(super) struct Copies(Arc<Mutex<Entries>>);

#[derive(Debug, Default)]
struct Entries {
    spaces: HashMap<String, Space>,
    bytes: usize,
    /// Numbers every entry put in, so a read can tell entries put in
    /// while it read (newer than what it saw) from older ones.
    next: u64,
    /// Counts forgettings: a read that began before one is not kept.
    epoch: u64,
}

#[derive(Debug, Default)]
struct Space {
    entries: BTreeMap<String, Entry>,
    /// Prefixes whose every key is in `entries`, with when they were read.
    complete: Vec<(String, Instant)>,
}

#[derive(Debug)]
struct Entry {
    value: Value,
    at: Instant,
    number: u64,
}

/// What a read that missed saw, for [`Copies::fill`] and
/// [`Copies::fill_scan`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Miss {
    epoch: u64,
    /// Entries numbered above this were put in after the read began.
    since: u64,
}

fn cost(key: &str, value: &Value) -> usize {
    key.len() + value.0.as_ref().map_or(0, Vec::len) + OVERHEAD
}

fn fresh(at: Instant) -> bool {
    at.elapsed() < FRESH_FOR
}

impl Space {
    /// The fresh complete prefix that `prefix` (or key) falls under.
    fn covers(&self, prefix: &str) -> bool {
        self.complete
            .iter()
            .any(|(p, at)| prefix.starts_with(p.as_str()) && fresh(*at))
    }
}

impl Entries {
    fn miss(&self) -> Miss {
        Miss {
            epoch: self.epoch,
            since: self.next,
        }
    }

    /// Puts `value` under `key`, unless `since` is given and the entry
    /// there was put in after it (it is newer than the read putting this).
    fn put(&mut self, ns: &str, key: &str, value: Value, at: Instant, since: Option<u64>) {
        if !self.spaces.contains_key(ns) {
            self.spaces.insert(ns.to_owned(), Space::default());
        }
        let Some(space) = self.spaces.get_mut(ns) else {
            return;
        };
        let old = space.entries.get(key);
        if let (Some(old), Some(since)) = (old, since)
            && old.number > since
        {
            return;
        }
        let freed = old.map_or(0, |old| cost(key, &old.value));
        let added = cost(key, &value);
        self.next += 1;
        let entry = Entry {
            value,
            at,
            number: self.next,
        };
        space.entries.insert(key.to_owned(), entry);
        self.bytes = self.bytes.saturating_sub(freed).saturating_add(added);
    }

    /// Drops everything once the copy is past its bound.
    fn bound(&mut self) {
        if self.bytes > MAX_BYTES {
            self.spaces.clear();
            self.bytes = 0;
            self.epoch += 1;
        }
    }
}

impl Copies {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry under `key` if what is known of it is fresh; otherwise
    /// what to hand to [`Copies::fill`] with what the database says.
    pub(super) fn get(&self, ns: &str, key: &str) -> Result<Value, Miss> {
        let entries = self.lock();
        if let Some(space) = entries.spaces.get(ns) {
            match space.entries.get(key) {
                Some(e) if fresh(e.at) => return Ok(e.value.clone()),
                None if space.covers(key) => return Ok((None, 0)),
                _ => {}
            }
        }
        Err(entries.miss())
    }

    /// Every stored entry under `prefix`, sorted by key, if the prefix is
    /// known complete and fresh; otherwise what to hand to
    /// [`Copies::fill_scan`].
    pub(super) fn scan(&self, ns: &str, prefix: &str) -> Result<Vec<KvRow>, Miss> {
        let entries = self.lock();
        match entries.spaces.get(ns) {
            Some(space) if space.covers(prefix) => Ok(space
                .entries
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter_map(|(k, e)| {
                    e.value.0.as_ref().map(|v| KvRow {
                        key: k.clone(),
                        value: v.clone(),
                        version: e.value.1,
                    })
                })
                .collect()),
            _ => Err(entries.miss()),
        }
    }

    /// Keeps what the database said of `key` after `miss` (read at
    /// `read`), unless a commit of ours put the key in meanwhile or the
    /// copy was forgotten: what those left is newer than this read.
    pub(super) fn fill(&self, ns: &str, key: &str, miss: Miss, read: Instant, value: Value) {
        let mut entries = self.lock();
        if entries.epoch == miss.epoch {
            entries.put(ns, key, value, read, Some(miss.since));
            entries.bound();
        }
    }

    /// Keeps a whole scan of `prefix` after `miss` (read at `read`), as
    /// [`Copies::fill`] does each key, and drops the entries under it the
    /// database no longer holds; the prefix is then complete.
    pub(super) fn fill_scan(
        &self,
        ns: &str,
        prefix: &str,
        miss: Miss,
        read: Instant,
        rows: &[KvRow],
    ) {
        let bytes: usize = rows.iter().map(|r| r.key.len() + r.value.len()).sum();
        let mut entries = self.lock();
        if entries.epoch != miss.epoch || bytes > MAX_SCAN_BYTES {
            return;
        }
        for r in rows {
            let value = (Some(r.value.clone()), r.version);
            entries.put(ns, &r.key, value, read, Some(miss.since));
        }
        // A scan that found nothing makes its namespace known too.
        let space = entries.spaces.entry(ns.to_owned()).or_default();
        // Every key of `rows` now has an entry newer than the read began;
        // any older one under the prefix is gone from the database.
        let gone: Vec<String> = space
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.number <= miss.since)
            .map(|(k, _)| k.clone())
            .collect();
        let mut freed = 0;
        for key in gone {
            if let Some(e) = space.entries.remove(&key) {
                freed += cost(&key, &e.value);
            }
        }
        let known = space.complete.len();
        space.complete.retain(|(p, _)| p != prefix);
        let added = if space.complete.len() < known {
            0
        } else {
            prefix.len() + OVERHEAD
        };
        space.complete.push((prefix.to_owned(), read));
        entries.bytes = entries.bytes.saturating_sub(freed).saturating_add(added);
        entries.bound();
    }

    /// A commit of ours wrote `writes` in `ns`, each at version `stamp`:
    /// called by the writer in commit order, before the commit's caller
    /// (or any later one) is answered.
    pub(super) fn committed(
        &self,
        ns: &str,
        writes: &BTreeMap<String, Option<Vec<u8>>>,
        stamp: i64,
    ) {
        let now = Instant::now();
        let mut entries = self.lock();
        for (key, value) in writes {
            let version = if value.is_some() { stamp } else { 0 };
            entries.put(ns, key, (value.clone(), version), now, None);
        }
        entries.bound();
    }

    /// A commit in `ns` found that what its call read had changed:
    /// perhaps by another process, so nothing copied of the namespace is
    /// trusted any more.
    pub(super) fn forget(&self, ns: &str) {
        let mut entries = self.lock();
        if let Some(space) = entries.spaces.remove(ns) {
            let freed: usize = space
                .entries
                .iter()
                .map(|(k, e)| cost(k, &e.value))
                .chain(space.complete.iter().map(|(p, _)| p.len() + OVERHEAD))
                .sum();
            entries.bytes = entries.bytes.saturating_sub(freed);
        }
        entries.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &str, version: i64) -> Value {
        (Some(v.as_bytes().to_vec()), version)
    }

    fn row(k: &str, v: &str, version: i64) -> KvRow {
        KvRow {
            key: k.to_owned(),
            value: v.as_bytes().to_vec(),
            version,
        }
    }

    fn keys(rows: &[KvRow]) -> Vec<(&str, i64)> {
        rows.iter().map(|r| (r.key.as_str(), r.version)).collect()
    }

    fn writes(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<Vec<u8>>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn missed<T: std::fmt::Debug>(r: Result<T, Miss>) -> Miss {
        match r {
            Err(miss) => miss,
            Ok(v) => panic!("expected a miss, got {v:?}"),
        }
    }

    fn long_ago() -> Instant {
        let ago = FRESH_FOR + Duration::from_millis(1);
        Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
    }

    #[test]
    fn a_read_that_missed_is_kept_and_served() {
        let c = Copies::default();
        let miss = missed(c.get("points", "balance/ann"));
        c.fill("points", "balance/ann", miss, Instant::now(), value("5", 7));
        assert_eq!(c.get("points", "balance/ann").ok(), Some(value("5", 7)));
        assert!(c.get("oncall", "balance/ann").is_err(), "namespaces apart");
    }

    #[test]
    fn a_read_racing_a_commit_does_not_replace_what_the_commit_wrote() {
        let c = Copies::default();
        let miss = missed(c.get("points", "seq"));
        c.committed("points", &writes(&[("seq", Some("2"))]), 20);
        // The read saw the database before that commit.
        c.fill("points", "seq", miss, Instant::now(), value("1", 10));
        assert_eq!(c.get("points", "seq").ok(), Some(value("2", 20)));
    }

    #[test]
    fn a_stale_entry_is_read_again_and_a_racing_commit_still_wins() {
        let c = Copies::default();
        let miss = missed(c.get("points", "seq"));
        c.fill("points", "seq", miss, long_ago(), value("1", 10));
        let miss = missed(c.get("points", "seq"));
        c.committed("points", &writes(&[("seq", Some("2"))]), 20);
        c.fill("points", "seq", miss, Instant::now(), value("1", 10));
        assert_eq!(c.get("points", "seq").ok(), Some(value("2", 20)));
    }

    #[test]
    fn a_complete_scan_serves_scans_under_it_and_gets_of_absent_keys() {
        let c = Copies::default();
        assert!(c.scan("points", "balance/").is_err());
        // Known before the scan, but gone from the database since.
        let miss = missed(c.get("points", "balance/gone"));
        c.fill("points", "balance/gone", miss, long_ago(), value("1", 1));
        let miss = missed(c.scan("points", "balance/"));
        let rows = [row("balance/ann", "5", 3), row("balance/bob", "2", 4)];
        c.fill_scan("points", "balance/", miss, Instant::now(), &rows);
        let all = c.scan("points", "balance/").ok().unwrap_or_default();
        assert_eq!(keys(&all), [("balance/ann", 3), ("balance/bob", 4)]);
        assert_eq!(
            keys(&c.scan("points", "balance/b").ok().unwrap_or_default()),
            [("balance/bob", 4)]
        );
        assert_eq!(c.get("points", "balance/gone").ok(), Some((None, 0)));
        assert_eq!(c.get("points", "balance/cy").ok(), Some((None, 0)));
        assert!(c.get("points", "seq").is_err(), "outside the prefix");
        assert!(c.scan("points", "bal").is_err(), "wider than the prefix");
        // Writes keep it complete: a new key shows, a deleted one goes.
        let w = writes(&[("balance/cy", Some("1")), ("balance/ann", None)]);
        c.committed("points", &w, 9);
        let all = c.scan("points", "balance/").ok().unwrap_or_default();
        assert_eq!(keys(&all), [("balance/bob", 4), ("balance/cy", 9)]);
    }

    #[test]
    fn a_scan_racing_a_commit_keeps_the_commit_s_writes() {
        let c = Copies::default();
        let miss = missed(c.scan("points", "balance/"));
        c.committed("points", &writes(&[("balance/new", Some("1"))]), 5);
        // The scan read the database before that commit.
        c.fill_scan(
            "points",
            "balance/",
            miss,
            Instant::now(),
            &[row("balance/old", "1", 2)],
        );
        let all = c.scan("points", "balance/").ok().unwrap_or_default();
        assert_eq!(keys(&all), [("balance/new", 5), ("balance/old", 2)]);
    }

    #[test]
    fn forgetting_drops_a_namespace_and_reads_under_way() {
        let c = Copies::default();
        c.committed("points", &writes(&[("a", Some("x")), ("b", None)]), 30);
        assert_eq!(c.get("points", "b").ok(), Some((None, 0)));
        let miss = missed(c.get("points", "c"));
        let scan = missed(c.scan("points", ""));
        c.forget("points");
        assert!(c.get("points", "a").is_err());
        c.fill("points", "c", miss, Instant::now(), value("old", 1));
        c.fill_scan("points", "", scan, Instant::now(), &[row("a", "x", 30)]);
        assert!(c.get("points", "c").is_err());
        assert!(c.scan("points", "").is_err());
    }

    #[test]
    fn a_prefix_scanned_again_is_counted_once() {
        let c = Copies::default();
        for _ in 0..3 {
            let miss = missed(c.scan("points", "balance/"));
            c.fill_scan("points", "balance/", miss, long_ago(), &[]);
        }
        assert_eq!(c.lock().bytes, "balance/".len() + OVERHEAD);
        // A fresh scan that found nothing answers both reads of `!points`
        // for someone without points yet.
        let miss = missed(c.scan("points", "balance/"));
        c.fill_scan("points", "balance/", miss, Instant::now(), &[]);
        assert_eq!(c.scan("points", "balance/").ok().map(|r| r.len()), Some(0));
        assert_eq!(c.get("points", "balance/@new:local").ok(), Some((None, 0)));
    }

    #[test]
    fn the_copy_stays_within_its_bound() {
        let c = Copies::default();
        let big = "x".repeat(64 << 10);
        for i in 0..(MAX_BYTES / big.len() + 8) {
            c.committed("notes", &writes(&[(&format!("k{i}"), Some(&big))]), 1);
            assert!(c.lock().bytes <= MAX_BYTES);
        }
        assert!(c.lock().bytes > 0, "kept what came after the drop");
        let huge: Vec<KvRow> = (0..20).map(|i| row(&format!("h{i}"), &big, 1)).collect();
        let miss = missed(c.scan("notes", "h"));
        c.fill_scan("notes", "h", miss, Instant::now(), &huge);
        assert!(c.scan("notes", "h").is_err(), "too large to keep");
    }
}
