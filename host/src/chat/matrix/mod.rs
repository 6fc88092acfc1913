//! The Matrix adapter: the bot in real rooms, encrypted ones included.
//!
//! [`session`] logs in and keeps the device, [`sync`] reads rooms and
//! hands commands to the bot without losing or repeating any, [`incoming`]
//! and [`render`] translate between Matrix events and the bot's messages,
//! and [`MatrixChat`] delivers the outbox.

mod incoming;
mod render;
mod session;
mod sync;
mod verify;

use std::sync::Arc;

use matrix_sdk::ruma::{EventId, OwnedEventId, OwnedTransactionId, RoomAliasId, RoomId, UserId};
use matrix_sdk::{Client, Room};

pub use incoming::{Seen, classify};
pub use session::connect;
pub use sync::Syncer;
pub use verify::{DeviceIdentity, bootstrap};

use super::{BoxFuture, ChatError, ChatSink};
use crate::store::{OutMessage, Target};

/// Delivers the bot's messages to Matrix rooms and users.
#[derive(Clone, Debug)]
pub struct MatrixChat {
    client: Client,
    /// Direct-message rooms are created one at a time, so two messages to
    /// a new user do not open two rooms.
    dm: Arc<tokio::sync::Mutex<()>>,
    /// Rooms joined from an invite marked `is_direct`, known here before
    /// the SDK's m.direct mark comes back with the next sync.
    direct_joins: DirectJoins,
}

/// Rooms the bot joined as direct-message rooms, shared by the syncer
/// (which joins them) and the sink (which answers [`ChatSink::is_direct_room`]).
pub type DirectJoins = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

impl MatrixChat {
    /// The set the syncer adds direct-message rooms to as it joins them.
    pub fn direct_joins(&self) -> DirectJoins {
        self.direct_joins.clone()
    }

    /// A sink over a logged-in client.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            dm: Arc::default(),
            direct_joins: Arc::default(),
        }
    }

    /// The client, for the sync loop and the CLI.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends Markdown to a room now, not through the outbox; the event id
    /// is what [`MatrixChat::edit`] takes to change it later (countdowns).
    pub async fn send(&self, room: &str, markdown: &str) -> Result<OwnedEventId, ChatError> {
        let room = self.room(room).await?;
        let sent = room
            .send(render::answer(markdown, None, None))
            .await
            .map_err(|e| error(room.room_id().as_str(), &e))?;
        Ok(sent.response.event_id)
    }

    /// Replaces the text of the bot's earlier message `original` with a
    /// real `m.replace` edit.
    pub async fn edit(
        &self,
        room: &str,
        original: &str,
        markdown: &str,
    ) -> Result<OwnedEventId, ChatError> {
        let room = self.room(room).await?;
        let original = EventId::parse(original).map_err(|e| ChatError {
            target: original.to_owned(),
            message: format!("not an event id: {e}"),
            permanent: true,
        })?;
        let sent = room
            .send(render::edit(markdown, original))
            .await
            .map_err(|e| error(room.room_id().as_str(), &e))?;
        Ok(sent.response.event_id)
    }

    /// A joined room by id, or by alias (`#ops:example.org`), which the
    /// homeserver resolves; an alias that does not exist is permanent.
    async fn room(&self, id: &str) -> Result<Room, ChatError> {
        if id.starts_with('#') {
            let alias = RoomAliasId::parse(id).map_err(|e| ChatError {
                target: id.to_owned(),
                message: format!("not a room alias: {e}"),
                permanent: true,
            })?;
            let resolved = self.client.resolve_room_alias(&alias).await.map_err(|e| {
                let missing = e
                    .as_client_api_error()
                    .is_some_and(|c| c.status_code.as_u16() == 404);
                ChatError {
                    target: id.to_owned(),
                    message: format!("cannot resolve the alias: {e}"),
                    permanent: missing,
                }
            })?;
            return self.joined(id, &resolved.room_id);
        }
        let parsed = RoomId::parse(id).map_err(|e| ChatError {
            target: id.to_owned(),
            message: format!("not a room id: {e}"),
            permanent: true,
        })?;
        self.joined(id, &parsed)
    }

    fn joined(&self, id: &str, room: &RoomId) -> Result<Room, ChatError> {
        self.client.get_room(room).ok_or_else(|| ChatError {
            target: id.to_owned(),
            message: "the bot is not in this room".into(),
            permanent: true,
        })
    }

    /// The direct-message room with `user`, opened (encrypted) if there is
    /// none yet.
    async fn direct_room(&self, user: &str) -> Result<Room, ChatError> {
        let parsed = UserId::parse(user).map_err(|e| ChatError {
            target: user.to_owned(),
            message: format!("not a user id: {e}"),
            permanent: true,
        })?;
        let _one_at_a_time = self.dm.lock().await;
        if let Some(room) = self.client.get_dm_room(&parsed) {
            return Ok(room);
        }
        tracing::info!(%user, "opening a direct-message room");
        self.client
            .create_dm(&parsed)
            .await
            .map_err(|e| error(user, &e))
    }
}

impl ChatSink for MatrixChat {
    fn deliver<'a>(
        &'a self,
        key: &'a str,
        message: &'a OutMessage,
    ) -> BoxFuture<'a, Result<Option<String>, ChatError>> {
        Box::pin(async move {
            let room = match &message.target {
                Target::Room(id) => self.room(id).await?,
                Target::User(user) => self.direct_room(user).await?,
            };
            let event = |id: Option<&str>| id.and_then(|i| EventId::parse(i).ok());
            let replaces = event(message.edit.as_ref().and_then(|e| e.remote_id.as_deref()));
            let content = match replaces {
                Some(original) => render::edit(&message.body, original),
                None => render::answer(
                    &message.body,
                    event(message.reply_to.as_deref()),
                    event(message.thread_root.as_deref()),
                ),
            };
            // The same key on every attempt: the homeserver drops a repeat
            // of a transaction it already stored, so a crash between sending
            // and marking the message delivered cannot show it twice.
            let txn: OwnedTransactionId = key.into();
            tracing::debug!(room = %room.room_id(), %key, "sending");
            let sent = room
                .send(content)
                .with_transaction_id(txn)
                .await
                .map_err(|e| error(room.room_id().as_str(), &e))?;
            Ok(Some(sent.response.event_id.to_string()))
        })
    }

    fn is_direct_room(&self, id: &str) -> bool {
        // m.direct as the SDK holds it: rooms the bot opened with create_dm
        // and rooms it joined from an invite marked is_direct.
        let is_dm = |room: &Room| room.direct_targets_length() > 0;
        if id.starts_with('#') {
            return RoomAliasId::parse(id).is_ok_and(|alias| {
                self.client.joined_rooms().iter().any(|room| {
                    (room.canonical_alias().as_ref() == Some(&alias)
                        || room.alt_aliases().contains(&alias))
                        && is_dm(room)
                })
            });
        }
        let joined_as_dm = self
            .direct_joins
            .lock()
            .is_ok_and(|rooms| rooms.contains(id));
        joined_as_dm
            || RoomId::parse(id)
                .ok()
                .and_then(|room| self.client.get_room(&room))
                .is_some_and(|room| is_dm(&room))
    }
}

/// A delivery error; refusals by the server (not in the room, no such
/// user) are permanent, rate limits and network trouble are not.
fn error(target: &str, e: &matrix_sdk::Error) -> ChatError {
    let permanent = e
        .as_client_api_error()
        .is_some_and(|api| api.status_code.is_client_error() && api.status_code.as_u16() != 429);
    ChatError {
        target: target.to_owned(),
        message: e.to_string(),
        permanent,
    }
}
