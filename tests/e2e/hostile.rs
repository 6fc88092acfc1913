//! A hostile team's plugin dropped into the folder: it cannot take another
//! plugin's name (and with it the grants, kv and schedules), answer for a
//! built-in or another plugin's command, make `!plugin reload` load a file
//! from outside the plugins folder, exhaust the host's memory or disk,
//! storm or forge events, post where it was not allowed or write as if it
//! were the host.

use std::path::{Path, PathBuf};

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu_e2e::{plugins_dir, sqlite_url, start_bot_with};

/// A private plugins folder holding `files`: (plugin built, file name).
fn folder(data: &Path, files: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let dir = data.join("plugins");
    std::fs::create_dir_all(&dir)?;
    for (plugin, file) in files {
        std::fs::copy(
            plugins_dir()?.join(format!("{plugin}.wasm")),
            dir.join(file),
        )?;
    }
    Ok(dir)
}

async fn say(bot: &Bot, sink: &RecordingSink, body: &str) -> anyhow::Result<String> {
    // One console for the whole test process, so message ids never repeat.
    static CONSOLE: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
    let console = CONSOLE.get_or_init(|| Console::new(7));
    bot.handle(&console.message("@root:local", body, 0)).await?;
    Ok(sink.take().join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_cannot_claim_another_plugins_name() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    // `aaa.wasm` sorts first and declares the name `emitter`.
    let dir = folder(
        data.path(),
        &[("points", "points.wasm"), ("emitter", "aaa.wasm")],
    )?;
    let (bot, sink) = start_bot_with(&sqlite_url(data.path()), data.path(), &dir, "").await?;
    let plugins = say(&bot, &sink, "!plugins").await?;
    assert!(
        plugins.contains("aaa.wasm") && plugins.contains("declares the plugin name \"emitter\""),
        "{plugins}"
    );
    assert!(!plugins.contains("emitter 0.1.0 — ok"), "{plugins}");
    assert!(
        !plugins.contains(&dir.display().to_string()),
        "no host paths in chat: {plugins}"
    );
    let points = say(&bot, &sink, "!points").await?;
    assert!(points.contains("0 points"), "{points}");

    // Another plugin's binary put in place of points.wasm does not replace
    // points: the reload is refused and points keeps serving its data.
    say(&bot, &sink, "!points give @bob:local 3 thanks").await?;
    std::fs::copy(plugins_dir()?.join("emitter.wasm"), dir.join("points.wasm"))?;
    let reload = say(&bot, &sink, "!plugin reload points").await?;
    assert!(
        reload.contains("reload failed") && reload.contains("declares the plugin name \"emitter\""),
        "{reload}"
    );
    let bob = say(&bot, &sink, "!points @bob:local").await?;
    assert!(bob.contains("@bob:local has 3 points"), "{bob}");
    // And the folder watcher's path gets the same answer.
    let watched = bot.registry().reload_path(&dir.join("aaa.wasm")).await;
    assert!(watched.is_err());
    bot.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_reload_takes_only_a_name() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let dir = folder(data.path(), &[("points", "points.wasm")])?;
    // A component outside the folder, which a path could reach.
    std::fs::copy(
        plugins_dir()?.join("emitter.wasm"),
        data.path().join("outside.wasm"),
    )?;
    let (bot, sink) = start_bot_with(&sqlite_url(data.path()), data.path(), &dir, "").await?;
    for name in [
        "../outside",
        "../../outside",
        &data.path().join("outside").display().to_string(),
    ] {
        let reply = say(&bot, &sink, &format!("!plugin reload {name}")).await?;
        assert!(reply.contains("is not a plugin name"), "{name}: {reply}");
    }
    let plugins = say(&bot, &sink, "!plugins").await?;
    assert!(!plugins.contains("emitter"), "{plugins}");
    bot.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_answer_for_a_built_in_or_another_plugin() -> anyhow::Result<()> {
    for (declare, clash) in [
        (
            "plugin reload points",
            "overlaps the built-in `plugin reload`",
        ),
        ("help points", "overlaps the built-in `help`"),
        ("points steal", "overlaps `points` of plugin points"),
    ] {
        let data = tempfile::tempdir()?;
        let dir = folder(
            data.path(),
            &[("points", "points.wasm"), ("emitter", "emitter.wasm")],
        )?;
        let extra = format!("[plugins.emitter.config]\ndeclare = {declare:?}\n");
        let (bot, sink) =
            start_bot_with(&sqlite_url(data.path()), data.path(), &dir, &extra).await?;
        let plugins = say(&bot, &sink, "!plugins").await?;
        assert!(
            plugins.contains("plugin \"emitter\"") && plugins.contains(clash),
            "{declare}: {plugins}"
        );
        assert!(plugins.contains("points 0.1.0 — ok"), "{plugins}");
        let reload = say(&bot, &sink, "!plugin reload points").await?;
        assert!(reload.contains("reloaded points"), "{declare}: {reload}");
        let points = say(&bot, &sink, "!points").await?;
        assert!(points.contains("0 points"), "{declare}: {points}");
        bot.shutdown().await;
    }
    // A name that overlaps nothing is served.
    let data = tempfile::tempdir()?;
    let dir = folder(
        data.path(),
        &[("points", "points.wasm"), ("emitter", "emitter.wasm")],
    )?;
    let extra = "[plugins.emitter.config]\ndeclare = \"emit-more\"\n";
    let (bot, sink) = start_bot_with(&sqlite_url(data.path()), data.path(), &dir, extra).await?;
    let plugins = say(&bot, &sink, "!plugins").await?;
    assert!(plugins.contains("emitter 0.1.0 — ok"), "{plugins}");
    bot.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_exhaust_the_host() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    // Room in the plugin for a 50 MiB string and its copy.
    let extra = "quarantine_after = 1000\nmemory_limit_mb = 256";
    let (bot, sink) = ikkyu_e2e::start_bot(&sqlite_url(data.path()), data.path(), extra).await?;
    say(&bot, &sink, "!noop").await?;
    let _alone = ikkyu_e2e::memory_test().await;
    let before = ikkyu_e2e::rss_kib();
    // 10,000 values of 1 MiB in one call: stopped at the call's budget,
    // nothing of it committed.
    // (As JSON each 1 MiB value is 2 MiB, over the value limit at once;
    // 256 KiB ones reach the budget.)
    for n in ["1024", "256", "256", "256", "256"] {
        let flood = say(&bot, &sink, &format!("!flood 10000 {n}")).await?;
        assert!(flood.contains("crashed"), "{flood}");
    }
    let peek = say(&bot, &sink, "!peek flood/0").await?;
    assert_eq!(peek, "flood/0 = None");
    // A 20 MiB key to delete, 20 and 50 MiB zone names: refused before any
    // work.
    let del = say(&bot, &sink, "!bigdel 20").await?;
    assert!(del.contains("crashed"), "{del}");
    let zone = say(&bot, &sink, "!bigzone 20").await?;
    assert!(zone.contains("at most 64 bytes"), "{zone}");
    // 50 MiB is past the call's budget before the host looks at it.
    let zone = say(&bot, &sink, "!bigzone 50").await?;
    assert!(zone.contains("crashed"), "{zone}");
    let grown_mib = ikkyu_e2e::rss_kib().saturating_sub(before) / 1024;
    // Loose, since other tests share the process; unbounded buffering
    // would have held gigabytes.
    assert!(grown_mib < 400, "the host grew by {grown_mib} MiB");
    let audit = bot.db.audit_recent(20).await?;
    let details: Vec<String> = audit.iter().filter_map(|e| e.detail.clone()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("more than 32 MiB in one call")),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|d| d.contains("is too long")),
        "{details:#?}"
    );
    let points = say(&bot, &sink, "!points").await?;
    assert!(
        points.contains("0 points"),
        "others are still served: {points}"
    );
    bot.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_need_their_own_grant() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, sink) = ikkyu_e2e::start_bot(&sqlite_url(data.path()), data.path(), "").await?;
    let refused = say(&bot, &sink, "!dm @ceo:elsewhere.example").await?;
    assert!(
        refused.contains("not allowed to send direct messages"),
        "{refused}"
    );
    assert!(
        !refused.contains("[direct to"),
        "nothing was sent: {refused}"
    );
    bot.shutdown().await;
    Ok(())
}

/// What the emitter has seen, from `!seen`.
async fn seen(bot: &Bot, sink: &RecordingSink) -> anyhow::Result<u64> {
    let seen = say(bot, sink, "!seen").await?;
    Ok(seen
        .trim_start_matches("seen ")
        .trim_end_matches(" events")
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_storm_is_bounded() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, sink) = ikkyu_e2e::start_bot(
        &sqlite_url(data.path()),
        data.path(),
        "quarantine_after = 1000",
    )
    .await?;
    let _alone = ikkyu_e2e::memory_test().await;
    let before = ikkyu_e2e::rss_kib();
    // A delivery that emits 10,000 events (and counts what it saw) is over
    // the effects one call may have: it fails whole, so nothing of it is
    // kept and nothing descends from it.
    say(&bot, &sink, "!emit test.storm {\"fanout\": 10000}").await?;
    assert_eq!(seen(&bot, &sink).await?, 0);
    let audit = bot.db.audit_recent(10).await?;
    assert!(
        audit.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("more than 10000 effects in one call"))),
        "{audit:#?}"
    );
    // Each delivery emits 5,000 more, and the emitter receives its own
    // events: the chain stops at the first event and 1,000 descendants,
    // not 5,000^8.
    let started = std::time::Instant::now();
    say(&bot, &sink, "!emit test.storm {\"fanout\": 5000}").await?;
    let n = seen(&bot, &sink).await?;
    assert!((1000..=1001).contains(&n), "seen {n}");
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
    let grown_mib = ikkyu_e2e::rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 400, "the host grew by {grown_mib} MiB");
    let points = say(&bot, &sink, "!points").await?;
    assert!(points.contains("0 points"), "{points}");
    bot.shutdown().await;
    Ok(())
}

/// A plugin that stores 16 MiB per command (keys count too) fits three
/// times in its 64 MiB namespace; the fourth is refused and changes
/// nothing, and a scan of more than the call's budget is refused too.
/// Other plugins keep working.
async fn a_full_namespace_refuses_more(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (bot, sink) = ikkyu_e2e::start_bot(db_url, data, "").await?;
    for from in [0, 16, 32] {
        let stored = say(&bot, &sink, &format!("!fill {from}")).await?;
        assert_eq!(stored, format!("stored fill/{from}..{}", from + 16));
    }
    let _alone = ikkyu_e2e::memory_test().await;
    let before = ikkyu_e2e::rss_kib();
    for _ in 0..3 {
        let full = say(&bot, &sink, "!fill 48").await?;
        assert_eq!(
            full,
            "misbehave's storage is full: it holds 48.0 MiB, and this would take it past its \
             64.0 MiB quota (kv_quota_mb under [plugins.misbehave]); an admin can raise the \
             quota, or the plugin's data can be removed with its own commands. \
             This command changed nothing."
        );
    }
    let grown_mib = ikkyu_e2e::rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 200, "the host grew by {grown_mib} MiB");
    let peek = say(&bot, &sink, "!peek fill/48").await?;
    assert_eq!(peek, "fill/48 = None");
    // 48 MiB under one prefix is more than one call may take back.
    let count = say(&bot, &sink, "!count fill/").await?;
    assert!(count.contains("crashed"), "{count}");
    let audit = bot.db.audit_recent(5).await?;
    assert!(
        audit.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("kv.scan of \"fill/\" matched more than"))),
        "{audit:#?}"
    );
    let few = say(&bot, &sink, "!count fill/1").await?;
    assert_eq!(few, "11 under fill/1", "fill/1, fill/10..fill/19");
    // Overwriting with values of the same size does not grow it.
    let again = say(&bot, &sink, "!fill 0").await?;
    assert_eq!(again, "stored fill/0..16");
    let points = say(&bot, &sink, "!points give @bob:local 2 thanks").await?;
    assert!(
        points.contains("@bob:local"),
        "others still store: {points}"
    );
    bot.shutdown().await;
    Ok(())
}

on_both!(
    a_full_namespace_refuses_more,
    a_full_namespace_refuses_more_on_sqlite,
    a_full_namespace_refuses_more_on_postgres
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_room_is_not_a_direct_message_room() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, sink) = ikkyu_e2e::start_bot(&sqlite_url(data.path()), data.path(), "").await?;
    // Bob talks to the bot alone in !bob-dm:local; announce has
    // rooms = ["*"].
    sink.mark_direct("!bob-dm:local");
    let refused = say(&bot, &sink, "!announce !bob-dm:local you are fired").await?;
    assert!(
        refused.contains("it is a direct-message room, which rooms = [\"*\"] does not cover"),
        "{refused}"
    );
    assert!(!refused.contains("[to !bob-dm:local]"), "{refused}");
    let posted = say(&bot, &sink, "!announce !team:local stand-up at ten").await?;
    assert!(
        posted.contains("[to !team:local] stand-up at ten"),
        "{posted}"
    );
    bot.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_release_events_award_nothing() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, sink) = ikkyu_e2e::start_bot(&sqlite_url(data.path()), data.path(), "").await?;
    for topic in ["release.finished", "deploy.finished"] {
        let forged = say(&bot, &sink, &format!("!forge {topic} @mallory:local")).await?;
        assert_eq!(forged, format!("emitted {topic}"));
    }
    let mallory = say(&bot, &sink, "!points @mallory:local").await?;
    assert!(mallory.contains("@mallory:local has 0 points"), "{mallory}");
    bot.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_write_as_the_host() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, sink) = ikkyu_e2e::start_bot(&sqlite_url(data.path()), data.path(), "").await?;
    let forged = say(&bot, &sink, "!impersonate").await?;
    assert!(
        forged.starts_with("misbehave: ikkyu: plugin points 0.1.0 is quarantined"),
        "{forged}"
    );
    bot.shutdown().await;
    Ok(())
}
