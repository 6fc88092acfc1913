//! Telling people: the release room, the initiator, approvers and ops.
//!
//! Every message is an effect of the call (delivered after it commits),
//! so a refused or failed step tells nobody anything. A message that
//! cannot be sent (the room is not granted, no `direct` grant) is logged
//! for the operator and never fails the step: the reply still says what
//! happened.

use ikkyu_plugin_sdk::{Invocation, chat, log_warn};

use crate::flow::Request;
use crate::settings::Settings;

/// Who is told about one step, besides the caller's reply.
#[derive(Debug, Default)]
pub struct Notice<'a> {
    /// Posted in the release room (unless the command came from there:
    /// the reply is that post).
    pub room: Option<String>,
    /// Sent directly to each, except the caller (who has the reply).
    pub direct: Vec<(&'a str, String)>,
}

impl<'a> Notice<'a> {
    /// `text` in the release room only.
    pub fn room(text: &str) -> Self {
        Self {
            room: Some(text.to_owned()),
            direct: Vec::new(),
        }
    }

    /// `text` in the release room and to the request's initiator and admin.
    pub fn everyone(request: &'a Request, text: &str) -> Self {
        let mut direct = vec![(request.initiator.as_str(), text.to_owned())];
        if let Some(admin) = &request.admin {
            direct.push((admin.as_str(), text.to_owned()));
        }
        Self {
            room: Some(text.to_owned()),
            direct,
        }
    }
}

/// Sends `notice` about a command: its caller has the reply, and its room
/// has seen it.
pub fn after(settings: &Settings, inv: &Invocation, notice: Notice<'_>) {
    send(settings, &inv.sender, Some(&inv.room), notice);
}

/// Sends `notice` for a step `caller` took in `from_room`.
pub fn send(settings: &Settings, caller: &str, from_room: Option<&str>, notice: Notice<'_>) {
    if let (Some(room), Some(text)) = (&settings.room, notice.room)
        && from_room != Some(room.as_str())
        && let Err(e) = chat::send(room, &text)
    {
        log_warn(&format!(
            "could not post in the release room {room}: {e}; grant it under [plugins.release] rooms"
        ));
    }
    let mut told: Vec<&str> = Vec::new();
    for (user, text) in notice.direct {
        if user == caller || told.contains(&user) {
            continue;
        }
        told.push(user);
        if let Err(e) = chat::direct(user, &text) {
            log_warn(&format!("could not message {user}: {e}"));
        }
    }
}
