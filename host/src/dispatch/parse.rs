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
                .then(|| body.get(localpart.len()..))
                .flatten()
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

/// One word of a command line, with quotes and escapes removed.
pub type Word = String;

/// Splits a command line shell-style, one word at a time: quotes group
/// words, a backslash escapes the next character outside single quotes.
/// Word by word, because a free-text argument takes the rest of the line
/// exactly as typed (JSON, apostrophes and all) and must not be split.
#[derive(Debug, Clone)]
pub struct Words<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Words<'a> {
    /// Words of `line`.
    pub fn new(line: &'a str) -> Self {
        Self { line, pos: 0 }
    }

    /// The rest of the line, unsplit, without leading spaces.
    pub fn rest(&self) -> &'a str {
        self.line.get(self.pos..).unwrap_or_default().trim()
    }

    /// Whether the rest of the line, as typed, starts with `--`: an option
    /// and not free text.
    pub fn at_option(&self) -> bool {
        self.rest().starts_with("--")
    }

    /// The rest as one value, exactly as typed (apostrophes, JSON, quotes
    /// inside), except that one pair of quotes around the whole of it is
    /// removed (`"fixed the build"`).
    pub fn rest_as_text(&self) -> String {
        let rest = self.rest();
        for q in ['"', '\'', '\u{201c}'] {
            let close = if q == '\u{201c}' { '\u{201d}' } else { q };
            if let Some(inner) = rest.strip_prefix(q).and_then(|r| r.strip_suffix(close))
                && !inner.contains(q)
                && !inner.contains(close)
            {
                return inner.to_owned();
            }
        }
        rest.to_owned()
    }

    /// The next `n` words split only at whitespace, with no quote handling:
    /// what is scanned to find a command's name, which never has quotes, so
    /// an apostrophe in the free text after it (`didn't`) is no error.
    pub fn plain(&self, n: usize) -> Vec<&'a str> {
        self.line
            .get(self.pos..)
            .unwrap_or_default()
            .split_whitespace()
            .take(n)
            .collect()
    }

    /// Skips the next `n` words as [`Words::plain`] splits them.
    pub fn skip_plain(&mut self, n: usize) {
        for _ in 0..n {
            let rest = self.line.get(self.pos..).unwrap_or_default();
            let start = rest.len() - rest.trim_start().len();
            let word = rest
                .get(start..)
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default();
            self.pos += start + word.len();
        }
    }
}

impl Iterator for Words<'_> {
    type Item = Result<Word, String>;

    /// The next word; an unclosed quote is an error the user must fix.
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.line.get(self.pos..)?;
        let skipped = rest.len() - rest.trim_start().len();
        self.pos += skipped;
        let mut chars = self.line.get(self.pos..)?.char_indices().peekable();
        chars.peek()?;
        let mut text = String::new();
        let mut end = self.line.len() - self.pos;
        while let Some((i, c)) = chars.next() {
            match c {
                c if c.is_whitespace() => {
                    end = i;
                    break;
                }
                '\'' | '"' => loop {
                    match chars.next() {
                        None => {
                            self.pos = self.line.len();
                            return Some(Err(format!(
                                "a quote is not closed; put a matching {c} at the end"
                            )));
                        }
                        Some((_, q)) if q == c => break,
                        Some((_, '\\')) if c == '"' => text.extend(chars.next().map(|(_, e)| e)),
                        Some((_, other)) => text.push(other),
                    }
                },
                '\\' => text.extend(chars.next().map(|(_, e)| e)),
                other => text.push(other),
            }
        }
        self.pos += end;
        Some(Ok(text))
    }
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
        let words: Result<Vec<Word>, String> =
            Words::new(r#"points give  @b:x 5 "fixed the build" it\'s"#).collect();
        assert_eq!(
            words.expect("valid"),
            vec!["points", "give", "@b:x", "5", "fixed the build", "it's"]
        );
        let err: Result<Vec<Word>, String> = Words::new("give \"unclosed").collect();
        assert!(err.expect_err("unclosed").contains("quote is not closed"));
    }

    #[test]
    fn the_rest_of_the_line_is_kept_as_typed() {
        let mut w = Words::new(r#"emit release.finished {"initiator": "@b:x"}"#);
        assert_eq!(w.next(), Some(Ok("emit".into())));
        assert_eq!(w.next(), Some(Ok("release.finished".into())));
        assert_eq!(w.rest_as_text(), r#"{"initiator": "@b:x"}"#);
        let mut w = Words::new("announce here it's time");
        w.next();
        w.next();
        assert_eq!(w.rest_as_text(), "it's time");
        let mut w = Words::new(r#"give "fixed the build" "#);
        w.next();
        assert_eq!(w.rest_as_text(), "fixed the build");
    }

    #[test]
    fn apostrophes_in_free_text_are_kept() {
        for text in [
            "didn't break prod this time",
            "Ann's and Bob's",
            "Release train's leaving at 15:00",
            r#"say "hi" to 'them'"#,
            "Релиз в 15:00, 发布 🚀",
        ] {
            let line = format!("points give @b:x 2 {text}");
            let mut w = Words::new(&line);
            assert_eq!(w.plain(4), vec!["points", "give", "@b:x", "2"]);
            w.skip_plain(4);
            assert_eq!(w.rest_as_text(), text);
        }
    }
}
