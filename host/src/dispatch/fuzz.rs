//! Property test over everything people and plugins type that the host
//! parses or checks before a plugin runs: command lines (recognising,
//! word splitting, binding every argument kind), cron expressions in
//! zones with any instant, durations, times, and user and room ids. The
//! property is that nothing panics and every refusal is a plain message.
//!
//! `IKKYU_FUZZ_CASES` sets the number of cases (CI runs a bounded number;
//! BENCHMARKS.md records a run of 1,000,000 by hand).

use proptest::prelude::*;

use super::args::bind;
use super::parse::{Words, recognise};
use crate::runtime::bindings::{ArgKind, ArgSpec, CommandSpec, FlagSpec};
use crate::schedule::when::{Cron, parse_zone};

fn cases() -> u32 {
    std::env::var("IKKYU_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// A command taking every kind of argument and flag.
fn every_kind() -> CommandSpec {
    let arg = |name: &str, kind, optional, repeated| ArgSpec {
        name: name.into(),
        kind,
        optional,
        repeated,
        summary: name.into(),
    };
    let flag = |name: &str, kind| FlagSpec {
        name: name.into(),
        kind,
        repeated: false,
        summary: name.into(),
    };
    CommandSpec {
        name: "all kinds".into(),
        aliases: vec![],
        summary: "".into(),
        args: vec![
            arg("word", ArgKind::Word, false, false),
            arg("user", ArgKind::User, false, false),
            arg("n", ArgKind::Integer, true, false),
            arg("rooms", ArgKind::Room, true, true),
            arg("rest", ArgKind::Text, true, false),
        ],
        options: vec![
            flag("every", Some(ArgKind::Duration)),
            flag("at", Some(ArgKind::Time)),
            flag("quiet", None),
            flag("who", Some(ArgKind::User)),
        ],
        role: None,
    }
}

/// Text shaped like what people type, with the characters that broke
/// things before: quotes, backslashes, NUL, escapes, other scripts.
fn typed() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[!@#:a-z0-9 '\"\\\\\\-=.*/,\u{0}\u{1b}мié周🚀]{0,60}",
        "!(points give|all kinds|role grant) [@a-z:0-9 '\"\\-]{0,40}",
    ]
}

fn cron_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9*/,\\- ]{0,30}",
        "([0-9*/,\\-]{1,6} ){4}[a-zа-яé0-9*/,\\-]{1,8}",
    ]
}

fn zone_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just("Europe/Moscow".to_owned()),
        Just("Asia/Shanghai".to_owned()),
        Just("Pacific/Kiritimati".to_owned()),
        "[A-Za-z_/]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn nothing_typed_or_handed_over_panics(
        line in typed(),
        expression in cron_text(),
        zone in zone_text(),
        instant in prop_oneof![any::<i64>(), -10_000_000_000_000i64..10_000_000_000_000],
        id in typed(),
    ) {
        let spec = every_kind();
        if let Some(command) = recognise(&line, "!", "@ikkyu:local") {
            let _ = crate::text::refusal(command);
            let mut words = Words::new(command);
            let head = words.plain(4);
            prop_assert!(head.len() <= 4);
            words.skip_plain(2);
            let _ = words.rest_as_text();
            let _ = bind(&spec, words.clone(), "!room:local");
            for w in Words::new(command).take(64) {
                let _ = w;
            }
        }
        let _ = bind(&spec, Words::new(&line), "!room:local");
        prop_assert!(crate::text::quoted(&line).starts_with('`'));
        prop_assert!(!crate::text::storable(&line, 255).contains('\0'));
        prop_assert!(!crate::text::one_line(&line).contains('\n'));
        let _ = crate::roles::is_user_id(&id);
        let _ = crate::roles::is_room(&id);
        let _ = humantime::parse_duration(&id);
        if let Ok(cron) = Cron::parse(&expression, &zone) {
            let next = cron.next_after(instant);
            prop_assert!(next.is_none_or(|n| n > instant));
            let _ = cron.last_in(instant, instant.saturating_add(600_000));
        }
        let _ = parse_zone(&zone);
    }
}
