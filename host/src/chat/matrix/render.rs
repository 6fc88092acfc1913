//! What the bot's Markdown becomes on Matrix: a notice with a plain-text
//! body, HTML for clients that show it, user mentions as pills, and the
//! relation that makes it an answer (a reply, or a reply inside a thread).
//! Pure functions, so the shapes are unit-tested without a homeserver.

use std::sync::LazyLock;

use matrix_sdk::ruma::events::Mentions;
use matrix_sdk::ruma::events::relation::{InReplyTo, Reply, Thread};
use matrix_sdk::ruma::events::room::message::{
    FormattedBody, Relation, RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
};
use matrix_sdk::ruma::{OwnedEventId, OwnedUserId, UserId};
use regex::Regex;

/// A Matrix user id as people write it in text.
static USER_ID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"@[a-z0-9._=/+\-]+:[A-Za-z0-9.\-]+(?::[0-9]+)?").expect("valid regex")
});

/// The content of a message without any relation: notices, because bots
/// answer with `m.notice` so other bots do not answer them in turn.
pub fn message(markdown: &str) -> RoomMessageEventContentWithoutRelation {
    let (linked, mentioned) = pills(markdown);
    let content = match FormattedBody::markdown(&linked) {
        Some(html) => RoomMessageEventContentWithoutRelation::notice_html(markdown, html.body),
        None => RoomMessageEventContentWithoutRelation::notice_plain(markdown),
    };
    // Always explicit, empty unless the text names someone: with
    // `m.mentions` present, clients and servers ignore `@room` and names
    // in the body, so echoed text cannot ping a room.
    content.add_mentions(Mentions::with_user_ids(mentioned))
}

/// The answer to `reply_to`: inside its thread when it was in one.
pub fn answer(
    markdown: &str,
    reply_to: Option<OwnedEventId>,
    thread_root: Option<OwnedEventId>,
) -> RoomMessageEventContent {
    let relation = match (reply_to, thread_root) {
        (Some(event), Some(root)) => Some(Relation::Thread(Thread::reply(root, event))),
        (Some(event), None) => Some(Relation::Reply(Reply::new(InReplyTo::new(event)))),
        (None, Some(root)) => Some(Relation::Thread(Thread::without_fallback(root))),
        (None, None) => None,
    };
    message(markdown).with_relation(relation)
}

/// An edit of the bot's earlier message `original`: a real `m.replace`,
/// so clients show the new text in place of the old.
pub fn edit(markdown: &str, original: OwnedEventId) -> RoomMessageEventContent {
    use matrix_sdk::ruma::events::room::message::ReplacementMetadata;
    message(markdown).make_replacement(ReplacementMetadata::new(original, None))
}

/// The Markdown with each user id outside code turned into a matrix.to
/// link (which clients show as a pill), and the ids mentioned.
fn pills(markdown: &str) -> (String, Vec<OwnedUserId>) {
    let mut out = String::with_capacity(markdown.len() + 32);
    let mut mentioned = Vec::new();
    // Backticks toggle code; user ids inside code stay literal text.
    for (i, part) in markdown.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(part);
            continue;
        }
        let mut last = 0;
        // Outside code, `<` is written as an entity so no raw HTML gets
        // through the Markdown renderer; inside code it is already text.
        let push_text = |out: &mut String, text: &str| out.push_str(&text.replace('<', "&lt;"));
        for m in USER_ID.find_iter(part) {
            let Ok(user) = UserId::parse(m.as_str()) else {
                continue;
            };
            push_text(&mut out, part.get(last..m.start()).unwrap_or_default());
            out.push_str(&format!("[{0}](https://matrix.to/#/{0})", m.as_str()));
            last = m.end();
            if !mentioned.contains(&user) {
                mentioned.push(user);
            }
        }
        push_text(&mut out, part.get(last..).unwrap_or_default());
    }
    (out, mentioned)
}

#[cfg(test)]
mod tests {
    use matrix_sdk::ruma::events::room::message::MessageType;
    use matrix_sdk::ruma::{event_id, user_id};

    use super::*;

    fn html(content: &RoomMessageEventContent) -> (String, Option<String>) {
        match &content.msgtype {
            MessageType::Notice(n) => {
                (n.body.clone(), n.formatted.as_ref().map(|f| f.body.clone()))
            }
            other => panic!("expected a notice, got {}", other.msgtype()),
        }
    }

    #[test]
    fn markdown_has_a_plain_body_and_html() {
        let c = answer("**done**: 3 points", None, None);
        let (body, formatted) = html(&c);
        assert_eq!(body, "**done**: 3 points");
        assert!(formatted.expect("html").contains("<strong>done</strong>"));
    }

    #[test]
    fn user_ids_become_pills_and_mentions_but_not_in_code() {
        let c = answer("@bob:local got 5; run `!points @carol:local`", None, None);
        let (body, formatted) = html(&c);
        assert_eq!(body, "@bob:local got 5; run `!points @carol:local`");
        let formatted = formatted.expect("html");
        assert!(
            formatted.contains(r#"<a href="https://matrix.to/#/@bob:local">@bob:local</a>"#),
            "{formatted}"
        );
        assert!(!formatted.contains("matrix.to/#/@carol"), "{formatted}");
        let mentions = c.mentions.expect("mentions");
        assert!(mentions.user_ids.contains(user_id!("@bob:local")));
        assert_eq!(mentions.user_ids.len(), 1);
    }

    #[test]
    fn no_raw_html_and_no_room_pings() {
        let c = answer(
            "@room look <img src=x onerror=alert(1)> <b>bold</b> `<i>code</i>`",
            None,
            None,
        );
        let (_, formatted) = html(&c);
        let formatted = formatted.unwrap_or_default();
        assert!(!formatted.contains("<img"), "{formatted}");
        assert!(!formatted.contains("<b>"), "{formatted}");
        let mentions = c.mentions.expect("explicit mentions");
        assert!(!mentions.room && mentions.user_ids.is_empty());
    }

    #[test]
    fn answers_reply_and_stay_in_their_thread() {
        let c = answer("ok", Some(event_id!("$cmd").to_owned()), None);
        assert!(
            matches!(c.relates_to, Some(Relation::Reply(ref r)) if r.in_reply_to.event_id == "$cmd")
        );
        let c = answer(
            "ok",
            Some(event_id!("$cmd").to_owned()),
            Some(event_id!("$root").to_owned()),
        );
        match c.relates_to {
            Some(Relation::Thread(t)) => {
                assert_eq!(t.event_id, "$root");
                assert_eq!(t.in_reply_to.expect("reply").event_id, "$cmd");
                assert!(!t.is_falling_back);
            }
            other => panic!("expected a thread relation, got {other:?}"),
        }
    }

    #[test]
    fn edits_are_replacements() {
        let c = edit("3 minutes left", event_id!("$first").to_owned());
        match c.relates_to {
            Some(Relation::Replacement(r)) => assert_eq!(r.event_id, "$first"),
            other => panic!("expected a replacement, got {other:?}"),
        }
    }
}
