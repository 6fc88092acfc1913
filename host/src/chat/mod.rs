//! Chat adapters: where messages come from and where replies go.
//!
//! An adapter turns what it receives into [`Incoming`] messages for the
//! bot, and implements [`ChatSink`] to deliver what the bot committed. The
//! rest of the host never knows which chat network it is on.

pub mod console;
mod link;
pub mod matrix;

pub use link::{Link, LinkState};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
    /// The root of the thread the message was sent in, if any; the answer
    /// goes into the same thread.
    pub thread_root: Option<String>,
    /// When the homeserver (or console) received it, ms since the epoch.
    pub sent_ms: i64,
}

/// Why a message could not be delivered. A transient failure leaves it in
/// the outbox for a retry; a permanent one (the bot was thrown out of the
/// room, the user does not exist) is recorded and given up.
#[derive(Debug, thiserror::Error)]
#[error("delivering to {target}: {message}")]
pub struct ChatError {
    /// Room or user the message was for.
    pub target: String,
    /// What went wrong, as the adapter reported it.
    pub message: String,
    /// Retrying cannot help.
    pub permanent: bool,
}

/// A boxed future, so sinks can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Delivers committed messages to the chat network.
pub trait ChatSink: Send + Sync {
    /// Delivers one message; the network's id for it, if it has ids (an
    /// edit of it later is sent against that id). `key` is unique to this
    /// message and the same on every attempt, so a network that
    /// deduplicates by it (Matrix transaction ids) never shows a message
    /// twice when a crash made the bot send it again. A message with
    /// `edit` set replaces the earlier one where the network can
    /// (`edit.remote_id`), and is shown as new text where it cannot.
    fn deliver<'a>(
        &'a self,
        key: &'a str,
        message: &'a OutMessage,
    ) -> BoxFuture<'a, Result<Option<String>, ChatError>>;

    /// Whether `room` (an id or an alias) is a direct-message room of the
    /// bot's, which `rooms = ["*"]` does not cover. Answered from what the
    /// adapter already holds, without a network round trip; a room it does
    /// not know is not one.
    fn is_direct_room(&self, _room: &str) -> bool {
        false
    }
}

/// The one question plugin calls may ask the chat adapter: which rooms are
/// direct-message rooms. A handle rather than the sink itself, so nothing
/// in a call can deliver before its commit.
#[derive(Clone)]
pub struct RoomKinds(Option<Arc<dyn ChatSink>>);

impl RoomKinds {
    /// Answers for `sink`.
    pub fn of(sink: Arc<dyn ChatSink>) -> Self {
        Self(Some(sink))
    }

    /// Knows no direct-message rooms (benchmarks, tools without chat).
    pub fn none() -> Self {
        Self(None)
    }

    /// See [`ChatSink::is_direct_room`].
    pub fn is_direct(&self, room: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|sink| sink.is_direct_room(room))
    }
}

impl std::fmt::Debug for RoomKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomKinds")
    }
}
