//! What deploys keep in kv, and how it reads back.
//!
//! - `task/<n, 10 digits>`: a [`Record`]: the task as the state machine
//!   sees it, plus its history;
//! - `open/<n>`: present for every open task, and only those, so the
//!   commands that look at the whole queue read a few rows however many
//!   deploys are on record (every call that may start a task reads them
//!   all, so two calls starting tasks at once conflict at commit and one
//!   is re-run: the concurrency limit holds);
//! - `job/<handle>`: the task a job belongs to, so `job.finished` finds it;
//! - `next`: the last number given out.

use ikkyu_plugin_sdk::kv;
use serde::{Deserialize, Serialize};

use crate::flow::Task;

/// A task with its history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// What the state machine works on.
    pub task: Task,
    /// Every step, oldest first.
    pub history: Vec<Entry>,
}

/// One step on record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// When.
    pub at_ms: i64,
    /// Who (a user id, or `ikkyu` for what happened by itself).
    pub who: String,
    /// What happened, in words.
    pub what: String,
}

impl Record {
    /// Adds a step to the history.
    pub fn note(&mut self, at_ms: i64, who: &str, what: impl Into<String>) {
        self.history.push(Entry {
            at_ms,
            who: who.to_owned(),
            what: what.into(),
        });
    }
}

fn task_key(n: u64) -> String {
    format!("task/{n:010}")
}

fn open_key(n: u64) -> String {
    format!("open/{n:010}")
}

/// Task `n`.
pub fn load(n: u64) -> Result<Option<Record>, String> {
    kv::get(&task_key(n))
}

/// Stores `r`, keeping the open index in step.
pub fn save(r: &Record) -> Result<(), String> {
    kv::set(&task_key(r.task.id), r)?;
    if r.task.phase.is_open() {
        kv::set(&open_key(r.task.id), &())
    } else {
        kv::delete(&open_key(r.task.id));
        Ok(())
    }
}

/// Every open task, oldest first.
pub fn open() -> Result<Vec<Record>, String> {
    let mut all = Vec::new();
    for (key, ()) in kv::list::<()>("open/")? {
        let n = key
            .strip_prefix("open/")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("stored key {key:?} is not an open task"))?;
        if let Some(r) = load(n)? {
            all.push(r);
        }
    }
    Ok(all)
}

/// The next task number.
pub fn next_id() -> Result<u64, String> {
    let n = kv::get::<u64>("next")?.unwrap_or(0) + 1;
    kv::set("next", &n)?;
    Ok(n)
}

/// Remembers that job `handle` is task `n`'s.
pub fn remember_job(handle: &str, n: u64) -> Result<(), String> {
    kv::set(&format!("job/{handle}"), &n)
}

/// The task job `handle` belongs to, forgetting it.
pub fn take_job(handle: &str) -> Result<Option<u64>, String> {
    let key = format!("job/{handle}");
    let n = kv::get(&key)?;
    kv::delete(&key);
    Ok(n)
}
