//! Recognising a command in a chat message and splitting it into words.
//! Pure functions: no I/O, no knowledge of which commands exist.

/// The command line of `body` without its prefix or mention, or none when
/// the message is not addressed to the bot.
///
/// Recognised: `!cmd`, `@bot:server cmd`, `@bot:server: cmd`, `bot: cmd`
/// and `bot, cmd` (the localpart, as clients write a mention in plain text).
pub fn recognise<'a>(body: &'a str, prefix: &str, bot_user: &str) -> Option<&'a str> {
    let body = body.trim_start();
    let rest = if let Some(rest) = body.strip_prefix(prefix) {
        rest
    } else {
        let localpart = bot_user.strip_prefix('@')?.split(':').next()?;
        let after = body.strip_prefix(bot_user).or_else(|| {
            let lower = body.get(..localpart.len())?;
            lower
                .eq_ignore_ascii_case(localpart)
                .then(|| &body[localpart.len()..])
        })?;
        let after = after.strip_prefix([':', ',']).unwrap_or(after);
        // "ikkyuX" is not a mention of "ikkyu": a separator must follow.
        if !after.starts_with(char::is_whitespace) && !after.is_empty() {
            return None;
        }
        after
    };
    let rest = rest.trim();
    (!rest.is_empty()).then_some(rest)
}

/// Splits a command line shell-style: quotes group words, backslashes
/// escape. An unclosed quote is an error the user must fix.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    shlex::split(line)
        .ok_or_else(|| "a quote is not closed; put a matching \" or ' at the end".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "@ikkyu:example.org";

    #[test]
    fn prefix_and_mentions_are_commands() {
        assert_eq!(recognise("!points top 3", "!", BOT), Some("points top 3"));
        assert_eq!(recognise("  !help", "!", BOT), Some("help"));
        assert_eq!(recognise("@ikkyu:example.org help", "!", BOT), Some("help"));
        assert_eq!(
            recognise("@ikkyu:example.org: help", "!", BOT),
            Some("help")
        );
        assert_eq!(recognise("ikkyu: help", "!", BOT), Some("help"));
        assert_eq!(recognise("Ikkyu, help", "!", BOT), Some("help"));
    }

    #[test]
    fn other_messages_are_not() {
        for body in ["hello", "!", "ikkyuX help", "ikkyu", "see !points", ""] {
            assert_eq!(recognise(body, "!", BOT), None, "{body:?}");
        }
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(
            split(r#"points give @b:x 5 "fixed the build""#).expect("valid"),
            vec!["points", "give", "@b:x", "5", "fixed the build"]
        );
        assert!(split("give \"unclosed").is_err());
    }
}
