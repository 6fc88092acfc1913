#![warn(missing_docs)]
//! ikkyu: a ChatOps bot host whose commands are WebAssembly component
//! plugins. See ARCHITECTURE.md for the map of this crate.

pub mod bot;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod directory;
pub mod dispatch;
pub mod registry;
pub mod roles;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod transcript;
pub mod watch;
