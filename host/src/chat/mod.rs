//! Chat adapters: where messages come from and where replies go.
//!
//! An adapter turns what it receives into [`Incoming`] messages for the
//! bot, and implements [`ChatSink`] to deliver what the bot committed. The
//! rest of the host never knows which chat network it is on.

pub mod console;

use std::future::Future;
use std::pin::Pin;

use crate::store::OutMessage;

/// A chat message as the bot sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Unique and stable: the same message always has the same id, which is
    /// what makes "never answer twice" possible.
    pub id: String,
    /// User id of the author.
    pub sender: String,
    /// Room id the message was sent in.
    pub room: String,
    /// The plain-text body.
    pub body: String,
    /// When the homeserver (or console) received it, ms since the epoch.
    pub sent_ms: i64,
}

/// Why a message could not be delivered; it stays in the outbox.
#[derive(Debug, thiserror::Error)]
#[error("delivering to {target}: {message}")]
pub struct ChatError {
    /// Room or user the message was for.
    pub target: String,
    /// What went wrong, as the adapter reported it.
    pub message: String,
}

/// A boxed future, so sinks can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Delivers committed messages to the chat network.
pub trait ChatSink: Send + Sync {
    /// Delivers one message; an error leaves it in the outbox for a retry.
    fn deliver<'a>(&'a self, message: &'a OutMessage) -> BoxFuture<'a, Result<(), ChatError>>;
}
