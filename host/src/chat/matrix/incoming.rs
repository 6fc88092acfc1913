//! What an event in a room's timeline means to the bot: a message that may
//! be a command, the bot's own arrival in the room, a message it could not
//! decrypt, or nothing. Pure functions over the event, unit-tested.

use std::sync::LazyLock;

use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::events::room::message::{MessageType, Relation};
use matrix_sdk::ruma::events::{
    AnySyncMessageLikeEvent, AnySyncStateEvent, AnySyncTimelineEvent, SyncMessageLikeEvent,
    SyncStateEvent,
};
use matrix_sdk::ruma::{RoomId, UserId};
use regex::Regex;

use crate::chat::Incoming;

/// A pill at the start of a formatted body: `<a href="https://matrix.to/#/@bot:server">Name</a>`.
static LEADING_PILL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*<a href="https://matrix\.to/#/([^"?]+)[^"]*">([^<]*)</a>"#)
        .expect("valid regex")
});

/// One timeline event, as far as the bot cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A text message from someone else; the dispatcher decides whether it
    /// is a command.
    Message(Incoming),
    /// The bot joined the room with this event: anything earlier in the
    /// timeline is history from before it was there, not for it to answer.
    BotJoined,
    /// An encrypted event the bot has no key for.
    Undecryptable(Incoming),
    /// Anything else (state, reactions, edits, the bot's own messages,
    /// notices from other bots).
    Other,
}

/// Classifies `event` from `room` for the bot `bot`.
pub fn classify(event: &TimelineEvent, room: &RoomId, bot: &UserId) -> Seen {
    if event.kind.is_utd() {
        let (Some(id), Some(sender)) = (event.event_id(), event.sender()) else {
            return Seen::Other;
        };
        if sender == bot {
            return Seen::Other;
        }
        return Seen::Undecryptable(Incoming {
            id: id.to_string(),
            sender: sender.to_string(),
            room: room.to_string(),
            body: String::new(),
            thread_root: None,
            sent_ms: millis(event),
        });
    }
    let Ok(parsed) = event.raw().deserialize() else {
        return Seen::Other;
    };
    match parsed {
        AnySyncTimelineEvent::State(AnySyncStateEvent::RoomMember(SyncStateEvent::Original(m)))
            if m.state_key == bot
                && m.content.membership == MembershipState::Join
                && m.unsigned.prev_content.as_ref().map(|p| &p.membership)
                    != Some(&MembershipState::Join) =>
        {
            Seen::BotJoined
        }
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            SyncMessageLikeEvent::Original(m),
        )) if m.sender != bot => {
            let MessageType::Text(text) = &m.content.msgtype else {
                return Seen::Other;
            };
            let thread_root = match &m.content.relates_to {
                // An edit is not a new command; running it again would
                // answer twice.
                Some(Relation::Replacement(_)) => return Seen::Other,
                Some(Relation::Thread(t)) => Some(t.event_id.to_string()),
                _ => None,
            };
            let is_reply = matches!(&m.content.relates_to, Some(Relation::Reply(_)));
            let (body, formatted) = if is_reply {
                (
                    without_reply_fallback(&text.body),
                    text.formatted.as_ref().map(|f| without_mx_reply(&f.body)),
                )
            } else {
                (
                    text.body.as_str(),
                    text.formatted.as_ref().map(|f| f.body.as_str()),
                )
            };
            Seen::Message(Incoming {
                id: m.event_id.to_string(),
                sender: m.sender.to_string(),
                room: room.to_string(),
                body: addressed(body, formatted, bot),
                thread_root,
                sent_ms: i64::from(m.origin_server_ts.0),
            })
        }
        _ => Seen::Other,
    }
}

/// The body with a leading pill of the bot replaced by the bot's user id,
/// which the dispatcher recognises as addressing it. Clients show a pill
/// by the display name ("Ikkyu Bot: help"), which is not in the config.
pub fn addressed(body: &str, formatted: Option<&str>, bot: &UserId) -> String {
    let Some(caps) = formatted.and_then(|f| LEADING_PILL.captures(f)) else {
        return body.to_owned();
    };
    let target = caps[1]
        .replace("%40", "@")
        .replace("%3A", ":")
        .replace("%3a", ":");
    if target != bot.as_str() {
        return body.to_owned();
    }
    let shown = caps[2].trim();
    match body.trim_start().strip_prefix(shown) {
        Some(rest) if !shown.is_empty() => format!("{bot}{rest}"),
        _ => body.to_owned(),
    }
}

/// A reply's own text: clients put a quote of the message replied to
/// (`> <@u:hs> original`, then a blank line) before it, which would hide
/// a command typed as a reply.
fn without_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") && !body.starts_with(">\n") {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        rest = rest.split_once('\n').map_or("", |(_, after)| after);
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// A reply's HTML without the `<mx-reply>` block clients put first.
fn without_mx_reply(html: &str) -> &str {
    match html.find("</mx-reply>") {
        Some(end) if html.trim_start().starts_with("<mx-reply>") => {
            html.get(end + "</mx-reply>".len()..).unwrap_or(html)
        }
        _ => html,
    }
}

fn millis(event: &TimelineEvent) -> i64 {
    event.timestamp().map_or(0, |t| i64::from(t.0))
}

#[cfg(test)]
mod tests {
    use matrix_sdk::ruma::serde::Raw;
    use matrix_sdk::ruma::{room_id, user_id};
    use serde_json::json;

    use super::*;

    const BOT: &str = "@ikkyu:hs";

    fn event(value: serde_json::Value) -> TimelineEvent {
        let raw = Raw::new(&value).expect("json").cast_unchecked();
        TimelineEvent::from_plaintext(raw)
    }

    fn text(body: &str, extra: serde_json::Value) -> TimelineEvent {
        let mut content = json!({ "msgtype": "m.text", "body": body });
        if let (Some(c), Some(e)) = (content.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        event(json!({
            "type": "m.room.message", "event_id": "$e1", "sender": "@alice:hs",
            "origin_server_ts": 1_700_000_000_000u64, "content": content,
        }))
    }

    fn classify(e: &TimelineEvent) -> Seen {
        super::classify(e, room_id!("!r:hs"), user_id!("@ikkyu:hs"))
    }

    #[test]
    fn text_messages_become_incoming() {
        let Seen::Message(m) = classify(&text("!points", json!({}))) else {
            panic!("expected a message");
        };
        assert_eq!(
            (m.id.as_str(), m.sender.as_str(), m.room.as_str()),
            ("$e1", "@alice:hs", "!r:hs")
        );
        assert_eq!(
            (m.body.as_str(), m.sent_ms, m.thread_root),
            ("!points", 1_700_000_000_000, None)
        );
    }

    #[test]
    fn a_command_sent_as_a_rich_reply_is_recognised() {
        let e = text(
            "> <@bob:hs> the build is red again\n> second line\n\n!points give @bob:hs 1 didn't fix it",
            json!({ "m.relates_to": { "m.in_reply_to": { "event_id": "$prev" } },
                "format": "org.matrix.custom.html",
                "formatted_body": "<mx-reply><blockquote>quoted</blockquote></mx-reply>!points give" }),
        );
        let Seen::Message(m) = classify(&e) else {
            panic!("expected a message")
        };
        assert_eq!(m.body, "!points give @bob:hs 1 didn't fix it");
        // A reply from a client that sends no fallback is taken as it is.
        let bare = text(
            "!points",
            json!({ "m.relates_to": { "m.in_reply_to": { "event_id": "$prev" } } }),
        );
        let Seen::Message(m) = classify(&bare) else {
            panic!("expected a message")
        };
        assert_eq!(m.body, "!points");
    }

    #[test]
    fn thread_messages_carry_their_root() {
        let e = text(
            "!points",
            json!({ "m.relates_to": { "rel_type": "m.thread", "event_id": "$root",
                "is_falling_back": true, "m.in_reply_to": { "event_id": "$root" } } }),
        );
        let Seen::Message(m) = classify(&e) else {
            panic!("expected a message")
        };
        assert_eq!(m.thread_root.as_deref(), Some("$root"));
    }

    #[test]
    fn edits_notices_and_own_messages_are_not_commands() {
        let edit = text(
            "* !points",
            json!({ "m.new_content": { "msgtype": "m.text", "body": "!points" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": "$e0" } }),
        );
        assert_eq!(classify(&edit), Seen::Other);
        let notice = event(json!({
            "type": "m.room.message", "event_id": "$n", "sender": "@other-bot:hs",
            "origin_server_ts": 1, "content": { "msgtype": "m.notice", "body": "!points" },
        }));
        assert_eq!(classify(&notice), Seen::Other);
        let own = event(json!({
            "type": "m.room.message", "event_id": "$o", "sender": BOT,
            "origin_server_ts": 1, "content": { "msgtype": "m.text", "body": "!points" },
        }));
        assert_eq!(classify(&own), Seen::Other);
    }

    #[test]
    fn the_bots_own_join_is_seen_but_a_rename_is_not() {
        let join = |prev: serde_json::Value| {
            event(json!({
                "type": "m.room.member", "state_key": BOT, "event_id": "$j", "sender": BOT,
                "origin_server_ts": 1, "content": { "membership": "join" },
                "unsigned": { "prev_content": prev },
            }))
        };
        assert_eq!(
            classify(&join(json!({ "membership": "invite" }))),
            Seen::BotJoined
        );
        assert_eq!(
            classify(&join(json!({ "membership": "join" }))),
            Seen::Other
        );
    }

    #[test]
    fn a_leading_pill_addresses_the_bot_by_its_id() {
        let bot = user_id!("@ikkyu:hs");
        let html = r#"<a href="https://matrix.to/#/@ikkyu:hs">Ikkyu Bot</a>: help"#;
        assert_eq!(
            addressed("Ikkyu Bot: help", Some(html), bot),
            "@ikkyu:hs: help"
        );
        let encoded = r#"<a href="https://matrix.to/#/%40ikkyu%3Ahs">Ikkyu</a> help"#;
        assert_eq!(
            addressed("Ikkyu help", Some(encoded), bot),
            "@ikkyu:hs help"
        );
        let other = r#"<a href="https://matrix.to/#/@bob:hs">Bob</a>: help"#;
        assert_eq!(addressed("Bob: help", Some(other), bot), "Bob: help");
        assert_eq!(addressed("plain", None, bot), "plain");
    }
}
