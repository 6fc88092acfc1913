//! The host interfaces a plugin can import, one file each. Each implements
//! the generated `Host` trait on [`CallState`](super::state::CallState),
//! checks its grant on every call, and only buffers effects: the caller
//! commits them.

mod chat;
mod config;
mod directory;
mod events;
mod http;
mod jobs;
mod kv;
mod log;
mod schedule;

use super::bindings::ikkyu::plugin::types;
use super::state::CallState;

// `types` holds only type definitions; its host trait has nothing to do.
impl types::Host for CallState {}
