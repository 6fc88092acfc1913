#![warn(missing_docs)]
// No panics from slicing: text and lists from outside are read with `get`.
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::string_slice))]
//! ikkyu: a ChatOps bot host whose commands are WebAssembly component
//! plugins. See ARCHITECTURE.md for the map of this crate.

pub mod attempt;
pub mod bot;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod code_pages;
pub mod config;
pub mod directory;
pub mod dispatch;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod outage;
pub mod registry;
pub mod roles;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod text;
pub mod transcript;
pub mod watch;
pub mod web;
