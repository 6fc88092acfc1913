//! The `jobs` capability: programs the operator defined (`[jobs.<name>]`),
//! started by plugins as effects of their calls and run by the host.
//!
//! A plugin's `jobs.start` is checked during the call (grant, parameters
//! against their patterns) and committed with it as a `queued` row; a
//! failed call starts nothing. The [`Runner`] claims queued rows up to the
//! host-wide concurrency, runs each as a child process ([`child`]) under an
//! owner lease, and ends it in the transaction that records its outcome
//! and hands `job.finished` to the plugin. A row still `running` under an
//! owner that is gone (this host restarted, or another's lease ran out) is
//! `lost`: reported, never run again by itself.

mod child;
mod runner;
pub mod show;
mod spec;
mod tail;

pub use runner::{FINISHED_TOPIC, Runner};
pub use spec::{Job, JobDef, JobsConfig};
pub use tail::{Stream, Tail, last_bytes};
