//! The release permission queue of `seeds/003` ("dobro"): requests that
//! are not lost in a busy chat, approvals, admins, one release of a
//! critical component at a time, first in first out per component, freezes
//! and a full log.
//!
//! So far this crate holds the queue's rules ([`flow`]), pure and tested;
//! the chat commands, the tracker checks and the notifications that use
//! them are not built yet, so it is not shipped as a plugin.

pub mod flow;
