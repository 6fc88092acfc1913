//! Telling people: the release room, the initiator, approvers and ops.
//!
//! Every message is an effect of the call (delivered after it commits),
//! so a refused or failed step tells nobody anything. A message that
//! cannot be sent (the room is not granted, no `direct` grant) is logged
//! for the operator and never fails the step: the reply still says what
//! happened.

use ikkyu_plugin_sdk::{chat, log_warn};

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
