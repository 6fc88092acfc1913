//! Text from outside (chat, plugins, homeservers) checked and bounded where
//! it enters, so nothing a person types or a plugin returns can make a
//! commit fail, a terminal misbehave or a log line lie.
//!
//! Three jobs, one each: [`refusal`] says why a command line cannot be
//! taken (a control character, too long); [`storable`] is the backstop of
//! the store, making any string fit a TEXT column on both backends;
//! [`printable`] escapes control characters for terminals and logs.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest command line taken, in bytes. Longer messages are answered with
/// a refusal, not run: nothing a command needs is this long, and a paste
/// of this size is almost always a mistake.
pub const MAX_COMMAND: usize = 16 * 1024;
/// Longest user id, room id, alias or event id (the Matrix limit).
pub const MAX_ID: usize = 255;
/// Longest text kept in one audit field.
pub const MAX_AUDIT_FIELD: usize = 8 * 1024;

/// Why `line`, as typed, cannot be run; none when it can.
pub fn refusal(line: &str) -> Option<String> {
    if line.len() > MAX_COMMAND {
        return Some(format!(
            "that message is {} KiB; commands can be at most {} KiB. Shorten it, or put long text in a file or a link and send that.",
            line.len().div_ceil(1024),
            MAX_COMMAND / 1024
        ));
    }
    let (at, c) = line.chars().enumerate().find(|(_, c)| is_forbidden(*c))?;
    Some(format!(
        "that message contains the control character U+{:04X} (character {}), which I do not accept in commands; remove it and send the command again.",
        u32::from(c),
        at + 1
    ))
}

/// An error with its causes, on one line: `outer: cause: root cause`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// A size in bytes as people read it: `512 bytes`, `12 KiB`, `63.9 MiB`.
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if bytes < KIB {
        format!("{bytes} bytes")
    } else if bytes < MIB {
        format!("{} KiB", bytes.div_ceil(KIB))
    } else {
        // Tenths of a MiB, rounded down, so a full quota never reads as
        // less than it is only by rounding up the figure below it.
        let tenths = bytes.saturating_mul(10) / MIB;
        format!("{}.{} MiB", tenths / 10, tenths % 10)
    }
}

/// Control characters other than tab and line breaks: NUL, which
/// PostgreSQL cannot store, and the escapes that drive terminals.
fn is_forbidden(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// `s` made safe for a TEXT column: NUL becomes U+FFFD and the text is cut
/// (at a character boundary, marked with `…`) to at most `max` bytes.
pub fn storable(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max && !s.contains('\0') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c == '\0' { '\u{fffd}' } else { c };
        if out.len() + c.len_utf8() > max.saturating_sub('…'.len_utf8()) {
            out.push('…');
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// `s` with every control character but the line break written as
/// `\u{..}`, for a terminal or a log line: no escape sequence or forged
/// line gets through.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` on one line for a log: line breaks escaped as well.
pub fn one_line(s: &str) -> String {
    printable(s).replace('\n', "\\n")
}

/// Longest piece of a person's text shown back in a reply.
const MAX_QUOTED: usize = 120;

/// Text someone typed, shown back in a host reply: an inline code span,
/// so it cannot become a link, an image, HTML or a mention; on one line,
/// backticks replaced by a look-alike, and cut to [`MAX_QUOTED`] bytes.
pub fn quoted(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| match c {
            '`' => '\u{2cb}',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let cut = storable(flat.trim(), MAX_QUOTED);
    format!("`{cut}`")
}

/// Whether `s` is a valid identifier for storage: not empty, at most
/// [`MAX_ID`] bytes, printable ASCII without spaces.
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size(0), "0 bytes");
        assert_eq!(size(1023), "1023 bytes");
        assert_eq!(size(1025), "2 KiB");
        assert_eq!(size(64 << 20), "64.0 MiB");
        assert_eq!(size((64 << 20) - 1), "63.9 MiB");
        assert_eq!(size(u64::MAX), "1759218604441.5 MiB");
    }

    #[test]
    fn refusals_name_the_problem() {
        assert!(refusal("points give @b:x 1 didn't").is_none());
        assert!(refusal("Релиз 发布 🚀\tok\n").is_none());
        let nul = refusal("x\u{0}y").expect("NUL");
        assert!(
            nul.contains("U+0000") && nul.contains("character 2"),
            "{nul}"
        );
        assert!(refusal("\u{1b}[31mred").expect("ESC").contains("U+001B"));
        let long = refusal(&"a".repeat(200 * 1024)).expect("long");
        assert!(
            long.contains("200 KiB") && long.contains("16 KiB"),
            "{long}"
        );
    }

    #[test]
    fn storable_text_has_no_nul_and_fits() {
        assert_eq!(storable("a\u{0}b", 10), "a\u{fffd}b");
        let long = "я".repeat(100);
        let cut = storable(&long, 21);
        assert!(cut.len() <= 21 && cut.ends_with('…'), "{cut}");
        assert!(matches!(storable("fine", 10), Cow::Borrowed(_)));
    }

    #[test]
    fn quoted_text_stays_code() {
        assert_eq!(
            quoted("a`[x](http://e)`b"),
            "`a\u{2cb}[x](http://e)\u{2cb}b`"
        );
        assert_eq!(quoted("two\nlines"), "`two lines`");
        assert!(quoted(&"x".repeat(500)).len() < 130);
    }

    #[test]
    fn printable_text_has_no_escapes() {
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(one_line("a\nb\rc"), "a\\nb\\u{d}c");
    }
}
