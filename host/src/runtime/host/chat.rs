//! `chat`: messages to rooms and people, delivered after commit. A command
//! may always answer in its own room; other rooms need a grant.

use crate::roles::{is_room, is_user_id};
use crate::runtime::bindings::ikkyu::plugin::chat::Host;
use crate::runtime::state::{CallState, MAX_VALUE, Phase};
use crate::store::{OutMessage, Target};

impl Host for CallState {
    async fn send(
        &mut self,
        room: String,
        markdown: String,
    ) -> wasmtime::Result<Result<(), String>> {
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
    ) -> wasmtime::Result<Result<(), String>> {
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
}

impl CallState {
    fn push(&mut self, target: Target, body: String) -> Result<(), String> {
        if body.len() > MAX_VALUE {
            return Err(format!(
                "message too long: {} bytes, at most {MAX_VALUE}",
                body.len()
            ));
        }
        self.messages.push(OutMessage {
            target,
            body,
            reply_to: None,
            thread_root: None,
        });
        Ok(())
    }
}
