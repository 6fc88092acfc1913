//! What the queue keeps in kv, and how it reads back.
//!
//! - `req/<n, 10 digits>`: a [`Record`]: the request as the state machine
//!   sees it, plus its history, the signs as they were at request time,
//!   its links and what became of its tracker updates;
//! - `open/<n>`: the [`Request`] of every open request, and only those, so
//!   the commands that look at the whole queue read a few small rows
//!   however many releases are on record (a scan would pass
//!   `kv.scan`'s row limit after years of them);
//! - `next`: the last number given out;
//! - `lock/<component>`: the running release of a critical component,
//!   written by `start` and deleted by the step that ends it, in the same
//!   commit as the state change, so a lock never outlives its release
//!   (two starts racing for it both read every `open/` row, so the second
//!   to commit conflicts, is re-run and finds the first started);
//! - `freeze/<component or all>`: a [`Freeze`].
//!
//! A fresh plugin instance runs every call, so everything lives here.

use ikkyu_plugin_sdk::kv;
use serde::{Deserialize, Serialize};

use crate::flow::{Freeze, Request, State};
use crate::signs::Evidence;

/// A request with everything kept about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// What the state machine works on.
    pub request: Request,
    /// The ticket as a Markdown link.
    pub link: String,
    /// The tickets it covers (one, or those of a version), for write-backs.
    pub keys: Vec<String>,
    /// `--docs`.
    pub docs: Option<String>,
    /// `--rollback`.
    pub rollback: Option<String>,
    /// The signs as they were when it was requested.
    pub signs: Vec<Evidence>,
    /// Every step, oldest first.
    pub history: Vec<Entry>,
    /// What became of each tracker update.
    pub updates: Vec<Update>,
}

impl Record {
    /// When its last step named `what` (`requested`, `started`, …) was
    /// taken, if it was.
    pub fn last(&self, what: &str) -> Option<i64> {
        self.history
            .iter()
            .rev()
            .find(|e| e.what == what)
            .map(|e| e.at_ms)
    }
}

/// One step on record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who.
    pub by: String,
    /// What: `requested`, `accepted`, `taken`, `started`, …
    pub what: String,
    /// The state before (none for the request itself).
    pub from: Option<State>,
    /// Anything said about it (`--force`, a hand-over).
    pub note: Option<String>,
}

/// A tracker update sent after a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Update {
    /// `comment on REL-1`.
    pub what: String,
    /// The tag its outcome comes back with.
    pub tag: String,
    /// `pending`, `done (204)` or `failed: …`.
    pub outcome: String,
}

fn key(n: u64) -> String {
    format!("req/{n:010}")
}

/// The request numbered `n`, or what to do when there is none.
pub fn load(n: i64) -> Result<Record, String> {
    let missing = || format!("there is no request #{n}; `!release queue` lists the open ones");
    let n = u64::try_from(n).map_err(|_| missing())?;
    kv::get::<Record>(&key(n))?.ok_or_else(missing)
}

/// Stores `record`, and keeps the open index in step with its state.
pub fn save(record: &Record) -> Result<(), String> {
    let n = record.request.n;
    kv::set(&key(n), record)?;
    let open = format!("open/{n:010}");
    if record.request.state.is_open() {
        kv::set(&open, &record.request)
    } else {
        kv::delete(&open);
        Ok(())
    }
}

/// The open requests, oldest first.
pub fn open() -> Result<Vec<Request>, String> {
    Ok(kv::list::<Request>("open/")?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// The newest requests first, looking at no more than `look_at` of them,
/// keeping those `keep` says, at most `max`.
pub fn newest(
    look_at: u64,
    max: usize,
    keep: impl Fn(&Record) -> bool,
) -> Result<Vec<Record>, String> {
    let last = kv::get::<u64>("next")?.unwrap_or(0);
    let mut found = Vec::new();
    for n in (1..=last)
        .rev()
        .take(usize::try_from(look_at).unwrap_or(usize::MAX))
    {
        if found.len() >= max {
            break;
        }
        if let Some(r) = kv::get::<Record>(&key(n))?
            && keep(&r)
        {
            found.push(r);
        }
    }
    Ok(found)
}

/// The next request number.
pub fn next_number() -> Result<u64, String> {
    let n = kv::get::<u64>("next")?.unwrap_or(0) + 1;
    kv::set("next", &n)?;
    Ok(n)
}

/// Every freeze, ended ones included (they are removed when their end
/// fires).
pub fn freezes() -> Result<Vec<Freeze>, String> {
    Ok(kv::list::<Freeze>("freeze/")?
        .into_iter()
        .map(|(_, f)| f)
        .collect())
}

/// Sets a freeze.
pub fn freeze(f: &Freeze) -> Result<(), String> {
    kv::set(&format!("freeze/{}", f.component), f)
}

/// Lifts the freeze of `component`; whether there was one.
pub fn unfreeze(component: &str) -> Result<bool, String> {
    let key = format!("freeze/{component}");
    let was = kv::get::<Freeze>(&key)?.is_some();
    kv::delete(&key);
    Ok(was)
}

/// Every lock held: (component, request number), by component.
pub fn locks() -> Result<Vec<(String, u64)>, String> {
    Ok(kv::list::<u64>("lock/")?
        .into_iter()
        .map(|(key, n)| (key.trim_start_matches("lock/").to_owned(), n))
        .collect())
}

/// Takes or frees locks as a step says.
pub fn apply_locks(n: u64, takes: Option<&str>, frees: Option<&str>) -> Result<(), String> {
    if let Some(c) = frees {
        kv::delete(&format!("lock/{c}"));
    }
    if let Some(c) = takes {
        kv::set(&format!("lock/{c}"), &n)?;
    }
    Ok(())
}
