//! Hostile and odd input: each message gets a clear reply, changes nothing
//! it should not, is on record, and the bot answers the next command. On
//! SQLite and PostgreSQL (which refuses NUL in text, so a NUL message once
//! crash-looped the bot there).

use std::path::Path;

use ikkyu::bot::Bot;
use ikkyu::chat::Incoming;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu::dispatch::Handled;
use ikkyu::store::{AuditRecord, Commit, OutMessage, Target};
use ikkyu_e2e::{command_record, start_bot};

/// Sends `body` as `user` and returns the one reply.
async fn say(bot: &Bot, sink: &RecordingSink, console: &Console, user: &str, body: &str) -> String {
    let msg = console.message(user, body, 0);
    let handled = bot.handle(&msg).await.expect("handled without error");
    assert!(
        matches!(handled, Handled::Answered(_)),
        "{handled:?} for {body:?}"
    );
    let replies = sink.take();
    assert_eq!(replies.len(), 1, "one reply to {body:?}: {replies:#?}");
    replies.into_iter().next().unwrap_or_default()
}

async fn hostile_input_gets_clear_replies(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (bot, sink) = start_bot(db_url, data, "").await?;
    let console = Console::new(1);
    let root = "@root:local";

    let nul = say(
        &bot,
        &sink,
        &console,
        root,
        "!points give @bob:local 1 fixed\0it",
    )
    .await;
    assert!(
        nul.contains("U+0000") && nul.contains("send the command again"),
        "{nul}"
    );
    let esc = say(
        &bot,
        &sink,
        &console,
        root,
        "!points give @bob:local 1 \x1b[2J\x1b[31mred",
    )
    .await;
    assert!(esc.contains("U+001B"), "{esc}");
    let paste = format!("!points give @bob:local 1 {}", "x".repeat(200 * 1024));
    let long = say(&bot, &sink, &console, root, &paste).await;
    assert!(long.contains("KiB"), "{long}");

    // A user id with a 10 KB server part is not a user, and no number of
    // them makes the points plugin count as crashed.
    let huge_user = format!("@a:{}", "x".repeat(10 * 1024));
    for _ in 0..7 {
        let reply = say(
            &bot,
            &sink,
            &console,
            root,
            &format!("!points give {huge_user} 1 x"),
        )
        .await;
        assert!(reply.contains("is not a user"), "{reply}");
    }

    // Weekdays in other languages are errors with a hint, not panics.
    for dow in ["mié", "пн", "周一"] {
        let reply = say(
            &bot,
            &sink,
            &console,
            root,
            &format!("!announce every \"0 9 * * {dow}\" here hi"),
        )
        .await;
        assert!(reply.contains("unknown day"), "{dow}: {reply}");
    }

    // Apostrophes and other scripts in free text are kept as typed.
    let ok = say(
        &bot,
        &sink,
        &console,
        root,
        "!points give @bob:local 2 didn't break prod this time",
    )
    .await;
    assert!(ok.contains("@bob:local +2 points"), "{ok}");
    let ok = say(
        &bot,
        &sink,
        &console,
        root,
        "!points give @bob:local 3 Ann's and Bob's 发布 🚀",
    )
    .await;
    assert!(ok.contains("+3"), "{ok}");
    let log = say(&bot, &sink, &console, root, "!points log @bob:local").await;
    assert!(log.contains("didn't break prod this time"), "{log}");
    assert!(log.contains("Ann's and Bob's 发布 🚀"), "{log}");
    bot.handle(&console.message(root, "!announce here Release train's leaving at 15:00", 0))
        .await?;
    let sent = sink.take();
    assert!(
        sent.iter()
            .any(|m| m.contains("Release train's leaving at 15:00")),
        "{sent:#?}"
    );
    assert!(!sent.iter().any(|m| m.contains("quote")), "{sent:#?}");

    // Echoed text cannot become a link.
    let echo = say(
        &bot,
        &sink,
        &console,
        root,
        "!points top \"[Sign in](https://evil.example)\"",
    )
    .await;
    assert!(echo.contains("`[Sign in](https://evil.example)`"), "{echo}");

    // Only the refused messages were refused: bob has 5, points still runs.
    let total = say(&bot, &sink, &console, "@bob:local", "!points").await;
    assert_eq!(total, "@bob:local: 5 points, rank 1 of 1");

    // Every refusal is on record.
    let audit = bot.db.audit_recent(100).await?;
    assert!(
        audit
            .iter()
            .any(|e| e.detail.as_deref().is_some_and(|d| d.contains("U+0000")))
    );
    assert!(audit.iter().all(|e| e.outcome != "trap"), "{audit:#?}");
    bot.shutdown().await;
    Ok(())
}

/// A message replayed after a restart (the homeserver sends it again) is
/// known, even when it was one the bot refused.
async fn a_refused_message_is_not_replayed(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let console = Console::new(2);
    let poison = console.message("@root:local", "!points give @bob:local 1 \0", 0);
    {
        let (bot, sink) = start_bot(db_url, data, "").await?;
        assert!(matches!(bot.handle(&poison).await?, Handled::Answered(_)));
        assert_eq!(sink.take().len(), 1);
        bot.shutdown().await;
    }
    let (bot, sink) = start_bot(db_url, data, "").await?;
    assert_eq!(bot.handle(&poison).await?, Handled::Duplicate);
    assert!(sink.take().is_empty());
    let next = say(&bot, &sink, &console, "@bob:local", "!points").await;
    assert!(next.contains("0 points"), "{next}");
    bot.shutdown().await;
    Ok(())
}

/// A message whose sender, room and id a broken or hostile server made
/// odd: refused, on record, and known when it comes again.
async fn odd_ids_are_refused_and_recorded(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (bot, sink) = start_bot(db_url, data, "").await?;
    let long_id = format!("${}", "e".repeat(5000));
    let odd = Incoming {
        id: long_id.clone(),
        sender: format!("@mallory:{}", "m".repeat(10 * 1024)),
        room: "!console:local".into(),
        body: "!points".into(),
        thread_root: None,
        sent_ms: 0,
    };
    assert!(matches!(bot.handle(&odd).await?, Handled::Answered(_)));
    let replies = sink.take();
    assert!(
        replies
            .iter()
            .any(|r| r.contains("not a valid Matrix user id")),
        "{replies:#?}"
    );
    assert_eq!(bot.handle(&odd).await?, Handled::Duplicate);
    let room = Incoming {
        id: "$odd-room".into(),
        room: format!("!r:{}", "x".repeat(300)),
        sender: "@bob:local".into(),
        ..odd
    };
    bot.handle(&room).await?;
    assert!(
        sink.take()
            .iter()
            .any(|r| r.contains("not a valid Matrix room id"))
    );
    bot.shutdown().await;
    Ok(())
}

/// The store's backstop: a commit the database refuses for what is in it
/// (here a target with NUL, which PostgreSQL cannot store) still records
/// the work once, so nothing replays it forever.
async fn a_refused_commit_keeps_its_record(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (bot, _sink) = start_bot(db_url, data, "").await?;
    let audit = AuditRecord {
        room: Some("!console:local".into()),
        detail: Some("detail with \0 inside".into()),
        ..command_record("@bob:local", "points \0 give", 1)
    };
    let poison = OutMessage::to(Target::Room("!bad\0room:local".into()), "hi".into());
    let commit = Commit::only_audit(Some("$poison".into()), audit, vec![poison]);
    bot.db.commit(&commit).await?;
    // Committed once: a second time is a duplicate.
    assert!(matches!(
        bot.db.commit(&commit).await,
        Err(ikkyu::store::StoreError::Duplicate(_))
    ));
    let row = bot.db.audit_recent(1).await?.remove(0);
    assert_eq!(row.actor, "@bob:local");
    assert!(!row.command.contains('\0') && !row.detail.unwrap_or_default().contains('\0'));
    bot.shutdown().await;
    Ok(())
}

on_both!(
    hostile_input_gets_clear_replies,
    hostile_input_gets_clear_replies_on_sqlite,
    hostile_input_gets_clear_replies_on_postgres
);
on_both!(
    a_refused_message_is_not_replayed,
    a_refused_message_is_not_replayed_on_sqlite,
    a_refused_message_is_not_replayed_on_postgres
);
on_both!(
    odd_ids_are_refused_and_recorded,
    odd_ids_are_refused_and_recorded_on_sqlite,
    odd_ids_are_refused_and_recorded_on_postgres
);
on_both!(
    a_refused_commit_keeps_its_record,
    a_refused_commit_keeps_its_record_on_sqlite,
    a_refused_commit_keeps_its_record_on_postgres
);

/// Commits that arrive together share a transaction, not a fate: sixty at
/// once, ten of them replays of messages already handled and three with a
/// target PostgreSQL cannot store. The replays alone are refused, the
/// poison ones alone shrink to their record, and every other commits once.
async fn commits_that_arrive_together_fail_alone(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (bot, _sink) = start_bot(db_url, data, "").await?;
    let record = |i: usize, command: &str| AuditRecord {
        room: Some("!console:local".into()),
        ..command_record(&format!("@u{i}:local"), command, 1)
    };
    for i in 0..10 {
        let first = Commit::only_audit(Some(format!("$m{i}")), record(i, "first"), vec![]);
        bot.db.commit(&first).await?;
    }
    let mut all = tokio::task::JoinSet::new();
    for i in 0..60 {
        let room = if i % 20 == 7 {
            "!bad\0room:local"
        } else {
            "!ok:local"
        };
        let reply = OutMessage::to(Target::Room(room.into()), format!("reply {i}"));
        let commit = Commit::only_audit(Some(format!("$m{i}")), record(i, "second"), vec![reply]);
        let db = bot.db.clone();
        all.spawn(async move { (i, db.commit(&commit).await) });
    }
    while let Some(done) = all.join_next().await {
        let (i, result) = done?;
        if i < 10 {
            assert!(
                matches!(result, Err(ikkyu::store::StoreError::Duplicate(_))),
                "#{i} was handled before: {result:?}"
            );
        } else {
            assert!(result.is_ok(), "#{i} commits: {result:?}");
        }
    }
    let rows = bot.db.audit_recent(500).await?;
    let mut second: Vec<String> = rows
        .iter()
        .filter(|r| r.command == "second")
        .map(|r| r.actor.clone())
        .collect();
    second.sort();
    let committed = second.len();
    second.dedup();
    assert_eq!(
        (committed, second.len()),
        (50, 50),
        "each new message once: {second:?}"
    );
    assert_eq!(rows.iter().filter(|r| r.command == "first").count(), 10);
    bot.shutdown().await;
    Ok(())
}

on_both!(
    commits_that_arrive_together_fail_alone,
    commits_that_arrive_together_fail_alone_on_sqlite,
    commits_that_arrive_together_fail_alone_on_postgres
);
