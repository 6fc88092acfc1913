//! `chat`: messages to rooms and people, delivered after commit. A command
//! may always answer in its own room; other rooms need a grant. Every
//! message gets a handle its plugin can edit it by; an edit goes where
//! the message went, so it is delivered after it, and only the plugin
//! that sent a message can edit it.

use crate::roles::{is_room, is_user_id};
use crate::runtime::bindings::ikkyu::plugin::chat::Host;
use crate::runtime::state::{CallState, MAX_VALUE, Phase};
use crate::store::{Edit, OutMessage, Target};

impl Host for CallState {
    async fn send(
        &mut self,
        room: String,
        markdown: String,
    ) -> wasmtime::Result<Result<String, String>> {
        self.require("chat")?;
        self.count_effect()?;
        self.charge(room.len() + markdown.len(), "chat.send")?;
        if !is_room(&room) {
            return Ok(Err(format!(
                "{} is not a room id or alias like !id:server or #name:server",
                crate::text::quoted(&room)
            )));
        }
        let own_room = matches!(&self.phase, Phase::Command { room: r } if *r == room);
        if !own_room && !self.grants.rooms.contains(&room) {
            if !self.grants.rooms.contains("*") {
                return Ok(Err(format!(
                    "not allowed to post in {room}; the operator can add it to rooms = [...] under [plugins.{}]",
                    self.plugin
                )));
            }
            // "*" is the group rooms the bot was invited to, not the rooms
            // where someone talks to the bot alone.
            if self.rooms.is_direct(&room) {
                return Ok(Err(format!(
                    "not allowed to post in {room}: it is a direct-message room, which rooms = [\"*\"] \
                     does not cover; the operator can list it under [plugins.{}] rooms = [...]",
                    self.plugin
                )));
            }
        }
        Ok(self.push(Target::Room(room), markdown))
    }

    async fn direct(
        &mut self,
        user: String,
        markdown: String,
    ) -> wasmtime::Result<Result<String, String>> {
        self.require("chat")?;
        self.count_effect()?;
        self.charge(user.len() + markdown.len(), "chat.direct")?;
        if !is_user_id(&user) {
            return Ok(Err(format!(
                "{} is not a user id like @alice:example.org",
                crate::text::quoted(&user)
            )));
        }
        if !self.grants.interfaces.contains("direct") {
            return Ok(Err(format!(
                "not allowed to send direct messages; the operator can add \"direct\" to grants under [plugins.{}] (and limit it with direct_to = [...])",
                self.plugin
            )));
        }
        let server = user.split_once(':').map_or("", |(_, s)| s);
        let allowed = self.grants.direct_to.is_empty()
            || self.grants.direct_to.contains(&user)
            || self.grants.direct_to.contains(&format!(":{server}"));
        if !allowed {
            return Ok(Err(format!(
                "not allowed to send direct messages to {user}; the operator can add it to direct_to = [...] under [plugins.{}]",
                self.plugin
            )));
        }
        Ok(self.push(Target::User(user), markdown))
    }

    async fn edit(
        &mut self,
        message: String,
        markdown: String,
    ) -> wasmtime::Result<Result<(), String>> {
        self.require("chat")?;
        self.count_effect()?;
        self.charge(message.len() + markdown.len(), "chat.edit")?;
        let earlier = self
            .messages
            .iter()
            .find(|m| m.handle.as_deref() == Some(message.as_str()))
            .map(|m| m.target.clone());
        let target = match earlier {
            Some(t) => Some(t),
            None if !is_handle(&message) => None,
            None => self
                .db
                .outbox_target_of(&self.plugin, &message)
                .await
                .map_err(|e| wasmtime::format_err!("reading the message to edit: {e}"))?,
        };
        let Some(target) = target else {
            return Ok(Err(format!(
                "{} is not a message this plugin sent (or it is older than the outbox keeps); send a new one",
                crate::text::quoted(&message)
            )));
        };
        Ok(self
            .push_as(target, markdown, None, Some(message))
            .map(|_| ()))
    }
}

/// Whether `text` could be a handle this host gave out.
fn is_handle(text: &str) -> bool {
    text.strip_prefix(HANDLE_PREFIX)
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

const HANDLE_PREFIX: &str = "msg-";

impl CallState {
    /// Buffers a new message; its handle.
    fn push(&mut self, target: Target, body: String) -> Result<String, String> {
        let handle = format!("{HANDLE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        self.push_as(target, body, Some(handle), None)
    }

    fn push_as(
        &mut self,
        target: Target,
        body: String,
        handle: Option<String>,
        edits: Option<String>,
    ) -> Result<String, String> {
        if body.len() > MAX_VALUE {
            return Err(format!(
                "message too long: {} bytes, at most {MAX_VALUE}",
                body.len()
            ));
        }
        self.messages.push(OutMessage {
            handle: handle.clone(),
            edit: edits.map(|of| Edit {
                of,
                remote_id: None,
            }),
            ..OutMessage::to(target, body)
        });
        Ok(handle.unwrap_or_default())
    }
}
