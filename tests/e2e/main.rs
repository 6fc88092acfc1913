//! End-to-end tests of ikkyu: the real host, real plugins, real databases.
//! One binary, one module per area (ripgrep's layout).

mod concurrency;
mod containment;
mod lifecycle;
mod matrix;
mod schedules;
mod transcripts;
