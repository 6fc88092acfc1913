//! What builds keep in kv.
//!
//! - `build/<n, 10 digits>`: a [`Build`];
//! - `open/<n>`: present while build `n` has services not settled;
//! - `next`: the last build number given out;
//! - `job/<handle>`: which build a job belongs to and what it does;
//! - `green/<env>/<service>`: the last commit that built green there;
//! - `failed/<env>/<service>`: the build it last failed in, until green;
//! - `running/<env>/<service>`: the build building it now;
//! - `follow-up/<env>/<service>`: a newer commit waits for that build.
//!
//! Environment and service names are checked names without `/`.

use ikkyu_plugin_sdk::kv;
use serde::{Deserialize, Serialize};

use crate::flow::Build;

/// What a job does for a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "kebab-case")]
pub enum Work {
    /// Looks for changes in `repo` since `since`.
    Detect {
        /// The repository's name in the settings.
        repo: String,
        /// The commit asked about; empty for none.
        since: String,
    },
    /// Builds `service`.
    Build {
        /// The service.
        service: String,
    },
}

/// A job's build and work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOf {
    /// The build.
    pub build: u64,
    /// What the job does.
    pub work: Work,
}

/// A service's last green build in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Green {
    /// The commit.
    pub commit: String,
    /// The build.
    pub build: u64,
    /// When it ended.
    pub at_ms: i64,
}

fn build_key(n: u64) -> String {
    format!("build/{n:010}")
}

fn open_key(n: u64) -> String {
    format!("open/{n:010}")
}

fn at(what: &str, env: &str, service: &str) -> String {
    format!("{what}/{env}/{service}")
}

/// Build `n`.
pub fn load(n: u64) -> Result<Option<Build>, String> {
    kv::get(&build_key(n))
}

/// Stores `b`, keeping the open index in step.
pub fn save(b: &Build) -> Result<(), String> {
    kv::set(&build_key(b.id), b)?;
    if b.ended_ms.is_none() {
        kv::set(&open_key(b.id), &())
    } else {
        kv::delete(&open_key(b.id));
        Ok(())
    }
}

/// Builds still running, oldest first.
pub fn open() -> Result<Vec<Build>, String> {
    let mut all = Vec::new();
    for (key, ()) in kv::list::<()>("open/")? {
        let n = key
            .strip_prefix("open/")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("stored key {key:?} is not an open build"))?;
        if let Some(b) = load(n)? {
            all.push(b);
        }
    }
    Ok(all)
}

/// The `n` latest builds, newest first.
pub fn latest(n: usize) -> Result<Vec<Build>, String> {
    let last = kv::get::<u64>("next")?.unwrap_or(0);
    let mut all = Vec::new();
    for id in (1..=last).rev().take(n) {
        if let Some(b) = load(id)? {
            all.push(b);
        }
    }
    Ok(all)
}

/// The next build number.
pub fn next_id() -> Result<u64, String> {
    let n = kv::get::<u64>("next")?.unwrap_or(0) + 1;
    kv::set("next", &n)?;
    Ok(n)
}

/// Remembers what job `handle` does.
pub fn remember_job(handle: &str, of: &JobOf) -> Result<(), String> {
    kv::set(&format!("job/{handle}"), of)
}

/// What job `handle` did, forgetting it.
pub fn take_job(handle: &str) -> Result<Option<JobOf>, String> {
    let key = format!("job/{handle}");
    let of = kv::get(&key)?;
    kv::delete(&key);
    Ok(of)
}

/// `service`'s last green build in `env`.
pub fn green(env: &str, service: &str) -> Result<Option<Green>, String> {
    kv::get(&at("green", env, service))
}

/// The build `service` last failed in, in `env`, if not green since.
pub fn failed_in(env: &str, service: &str) -> Result<Option<u64>, String> {
    kv::get(&at("failed", env, service))
}

/// Records how `service` ended in `env`: green at `commit`, or red.
pub fn ended(env: &str, service: &str, build: u64, green: Option<Green>) -> Result<(), String> {
    match green {
        Some(g) => {
            kv::set(&at("green", env, service), &g)?;
            kv::delete(&at("failed", env, service));
        }
        None => kv::set(&at("failed", env, service), &build)?,
    }
    kv::delete(&at("running", env, service));
    Ok(())
}

/// The build building `service` in `env` now.
pub fn running(env: &str, service: &str) -> Result<Option<u64>, String> {
    kv::get(&at("running", env, service))
}

/// Marks build `n` as the one building `service` in `env`.
pub fn set_running(env: &str, service: &str, n: u64) -> Result<(), String> {
    kv::set(&at("running", env, service), &n)
}

/// Asks for one more build of `service` in `env` after the running one.
pub fn want_follow_up(env: &str, service: &str) -> Result<(), String> {
    kv::set(&at("follow-up", env, service), &())
}

/// Whether a follow-up of `service` in `env` was asked for, forgetting it.
pub fn take_follow_up(env: &str, service: &str) -> Result<bool, String> {
    let key = at("follow-up", env, service);
    let wanted = kv::get::<()>(&key)?.is_some();
    kv::delete(&key);
    Ok(wanted)
}
