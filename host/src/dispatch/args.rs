//! Binding typed arguments: the words a user typed, checked against a
//! command's declaration, become the values the plugin receives. Also
//! renders the usage line every error reply ends with.

use super::parse::Words;
use crate::roles::{is_room, is_user_id};
use crate::runtime::bindings::{Arg, ArgKind, ArgSpec, CommandSpec, FlagSpec, Value};
use crate::text::quoted;

/// Checks the words after the command name against `spec`. `room` is the
/// room the command came from, which `here` stands for.
pub fn bind(spec: &CommandSpec, mut words: Words<'_>, room: &str) -> Result<Vec<Arg>, String> {
    let mut out = Vec::new();
    let mut positional = spec.args.iter().peekable();
    let mut filled_repeated = false;
    let mut flags_done = false;
    loop {
        if words.rest().is_empty() {
            break;
        }
        // Free text takes the rest of the line as typed, before any quote
        // handling, so `didn't` is not an unclosed quote.
        let is_flag = !flags_done && words.at_option();
        if !is_flag && let Some(text_arg) = positional.next_if(|a| a.kind == ArgKind::Text) {
            out.push(Arg {
                name: text_arg.name.clone(),
                value: Value::Text(words.rest_as_text()),
            });
            break;
        }
        let Some(word) = words.next() else { break };
        let word = word?;
        if word == "--" && !flags_done {
            flags_done = true;
            continue;
        }
        if is_flag {
            let name = word.get(2..).unwrap_or_default();
            out.push(bind_flag(spec, name, &mut words, &out, room)?);
            continue;
        }
        let Some(spec_arg) = positional.peek().copied() else {
            return Err(format!(
                "unexpected {}; this command takes no more arguments",
                quoted(&word)
            ));
        };
        let value =
            convert(spec_arg.kind, &word, room).map_err(|e| format!("<{}>: {e}", spec_arg.name))?;
        out.push(Arg {
            name: spec_arg.name.clone(),
            value,
        });
        if spec_arg.repeated {
            filled_repeated = true;
        } else {
            positional.next();
        }
    }
    for rest in positional {
        let satisfied = rest.optional || (rest.repeated && filled_repeated);
        if !satisfied {
            return Err(format!("missing <{}> ({})", rest.name, rest.summary));
        }
    }
    Ok(out)
}

/// One `--name`, `--name value` or `--name=value`.
fn bind_flag(
    spec: &CommandSpec,
    word: &str,
    words: &mut Words<'_>,
    seen: &[Arg],
    room: &str,
) -> Result<Arg, String> {
    let (name, inline) = match word.split_once('=') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (word, None),
    };
    let flag = spec
        .options
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| {
            format!(
                "unknown option {}{}",
                quoted(&format!("--{name}")),
                known_flags(&spec.options)
            )
        })?;
    if !flag.repeated && seen.iter().any(|a| a.name == flag.name) {
        return Err(format!("--{name} is given twice"));
    }
    let value = match (flag.kind, inline) {
        (None, None) => Value::Switch,
        (None, Some(_)) => return Err(format!("--{name} is a switch and takes no value")),
        (Some(kind), Some(v)) => convert(kind, &v, room).map_err(|e| format!("--{name}: {e}"))?,
        (Some(kind), None) => {
            let v = words
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))??;
            convert(kind, &v, room).map_err(|e| format!("--{name}: {e}"))?
        }
    };
    Ok(Arg {
        name: flag.name.clone(),
        value,
    })
}

fn known_flags(flags: &[FlagSpec]) -> String {
    if flags.is_empty() {
        "; this command has no options".to_owned()
    } else {
        let names: Vec<String> = flags.iter().map(|f| format!("--{}", f.name)).collect();
        format!("; known: {}", names.join(", "))
    }
}

fn convert(kind: ArgKind, word: &str, room: &str) -> Result<Value, String> {
    match kind {
        ArgKind::Word | ArgKind::Text => Ok(Value::Text(word.to_owned())),
        ArgKind::Integer => word
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("{} is not a whole number", quoted(word))),
        ArgKind::User => {
            let id = word.strip_prefix("https://matrix.to/#/").unwrap_or(word);
            if is_user_id(id) {
                Ok(Value::Text(id.to_owned()))
            } else {
                Err(format!(
                    "{} is not a user; write it as @name:server",
                    quoted(word)
                ))
            }
        }
        ArgKind::Room => match word {
            "here" => Ok(Value::Text(room.to_owned())),
            w if is_room(w) => Ok(Value::Text(w.to_owned())),
            w => Err(format!(
                "{} is not a room; write #name:server, !id:server or here",
                quoted(w)
            )),
        },
        ArgKind::Duration => humantime::parse_duration(word)
            .map(|d| Value::Duration(d.as_secs()))
            .map_err(|_| {
                format!(
                    "{} is not a duration like 90s, 10m, 2h, 3d or 1w",
                    quoted(word)
                )
            }),
        ArgKind::Time => {
            let ok = chrono::NaiveDate::parse_from_str(word, "%Y-%m-%d").is_ok()
                || chrono::NaiveDateTime::parse_from_str(word, "%Y-%m-%dT%H:%M").is_ok();
            if ok {
                Ok(Value::Text(word.to_owned()))
            } else {
                Err(format!(
                    "{} is not a time like 2026-11-22 or 2026-11-22T10:00",
                    quoted(word)
                ))
            }
        }
    }
}

/// `!points give <user> <n> <reason...> [--flag <kind>]`
pub fn usage(prefix: &str, spec: &CommandSpec) -> String {
    let mut parts = vec![format!("{prefix}{}", spec.name)];
    parts.extend(spec.args.iter().map(render_arg));
    for f in &spec.options {
        parts.push(match f.kind {
            None => format!("[--{}]", f.name),
            Some(k) => format!(
                "[--{} <{}>]{}",
                f.name,
                kind_name(k),
                if f.repeated { "..." } else { "" }
            ),
        });
    }
    parts.join(" ")
}

fn render_arg(a: &ArgSpec) -> String {
    let dots = if a.repeated || a.kind == ArgKind::Text {
        "..."
    } else {
        ""
    };
    if a.optional {
        format!("[{}{dots}]", a.name)
    } else {
        format!("<{}{dots}>", a.name)
    }
}

/// The kind as written in help.
pub fn kind_name(kind: ArgKind) -> &'static str {
    match kind {
        ArgKind::Word => "word",
        ArgKind::Text => "text",
        ArgKind::Integer => "number",
        ArgKind::User => "@user",
        ArgKind::Room => "room",
        ArgKind::Duration => "duration",
        ArgKind::Time => "time",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(name: &str, kind: ArgKind, optional: bool, repeated: bool) -> ArgSpec {
        ArgSpec {
            name: name.into(),
            kind,
            optional,
            repeated,
            summary: format!("the {name}"),
        }
    }

    fn give() -> CommandSpec {
        CommandSpec {
            name: "points give".into(),
            aliases: vec![],
            summary: "give".into(),
            args: vec![
                arg("user", ArgKind::User, false, false),
                arg("n", ArgKind::Integer, false, false),
                arg("reason", ArgKind::Text, false, false),
            ],
            options: vec![
                FlagSpec {
                    name: "every".into(),
                    kind: Some(ArgKind::Duration),
                    repeated: false,
                    summary: "".into(),
                },
                FlagSpec {
                    name: "quiet".into(),
                    kind: None,
                    repeated: false,
                    summary: "".into(),
                },
            ],
            role: Some("admin".into()),
        }
    }

    fn words(s: &str) -> Words<'_> {
        Words::new(s)
    }

    fn values(args: &[Arg]) -> Vec<(String, Value)> {
        args.iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect()
    }

    #[test]
    fn binds_typed_values_and_rest_of_line() {
        let got = bind(
            &give(),
            words("--every 2h @bob:x -5 broke the build --not-a-flag"),
            "!r:x",
        )
        .expect("valid");
        assert_eq!(
            values(&got),
            vec![
                ("every".into(), Value::Duration(7200)),
                ("user".into(), Value::Text("@bob:x".into())),
                ("n".into(), Value::Integer(-5)),
                (
                    "reason".into(),
                    Value::Text("broke the build --not-a-flag".into())
                ),
            ]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("bob 5 x", "is not a user"),
            ("@bob:x five x", "not a whole number"),
            ("@bob:x 5", "missing <reason>"),
            (
                "--loud @bob:x 5 x",
                "unknown option `--loud`; known: --every, --quiet",
            ),
            ("--every soon @bob:x 5 x", "not a duration"),
            ("--quiet --quiet @bob:x 5 x", "given twice"),
        ];
        for (input, expected) in cases {
            let err = bind(&give(), words(input), "!r:x").expect_err(input);
            assert!(err.contains(expected), "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn repeated_and_optional_arguments() {
        let spec = CommandSpec {
            name: "contacts set".into(),
            aliases: vec![],
            summary: "".into(),
            args: vec![
                arg("module", ArgKind::Word, false, false),
                arg("users", ArgKind::User, false, true),
            ],
            options: vec![],
            role: None,
        };
        let got = bind(&spec, words("web @a:x @b:x"), "!r:x").expect("valid");
        assert_eq!(got.len(), 3);
        assert!(
            bind(&spec, words("web"), "!r:x")
                .expect_err("needs users")
                .contains("missing <users>")
        );
        let room = CommandSpec {
            args: vec![arg("room", ArgKind::Room, true, false)],
            ..spec
        };
        assert_eq!(
            values(&bind(&room, words("here"), "!r:x").expect("here"))[0].1,
            Value::Text("!r:x".into())
        );
        assert!(bind(&room, words(""), "!r:x").expect("optional").is_empty());
    }

    #[test]
    fn usage_line() {
        assert_eq!(
            usage("!", &give()),
            "!points give <user> <n> <reason...> [--every <duration>] [--quiet]"
        );
    }
}
