//! PostgreSQL unreachable for ten seconds in the middle of commands, a
//! scheduled run and event deliveries (cut by a proxy the test owns): the
//! bot stays up, waits, and afterwards has answered every command once,
//! fired the run, delivered the events, and quarantined nobody.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu::clock::{ManualClock, SharedClock};
use ikkyu::dispatch::Handled;
use ikkyu::store::Outcome;
use ikkyu_e2e::proxy::Proxy;
use ikkyu_e2e::{TempPostgres, postgres_url, start_bot_at};

const START: i64 = 1_795_000_000_000;
const AWARDS: &str = "[plugins.points.config.awards]\n\"release.finished\" = 7\n\
                      [plugins.points.config.sources]\nrelease = [\"emitter\"]\n";

/// Asks `body` until the reply contains `want` (deliveries run beside).
async fn eventually(bot: &Bot, sink: &RecordingSink, body: &str, want: &str) -> anyhow::Result<()> {
    let console = Console::new(99);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        bot.handle(&console.message("@root:local", body, START))
            .await?;
        last = sink.take();
        if last.iter().any(|r| r.contains(want)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{body:?} never answered {want:?}; last: {last:#?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_nothing_and_blames_no_plugin() -> anyhow::Result<()> {
    let Some(url) = postgres_url("database outage") else {
        return Ok(());
    };
    let db = TempPostgres::create(&url).await?;
    let result = outage(&db.url).await;
    db.drop_db().await?;
    result
}

async fn outage(url: &str) -> anyhow::Result<()> {
    let (proxy, via) = Proxy::before_postgres(url).await?;
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(START));
    let shared: SharedClock = clock.clone();
    let (bot, sink) = start_bot_at(&via, dir.path(), AWARDS, shared).await?;
    let bot = Arc::new(bot);
    let console = Console::new(1);

    // A scheduled run that emits an event, due during the outage.
    bot.handle(&console.message("@root:local", "!emit-later test.tick", START))
        .await?;
    assert!(sink.take()[0].contains("in a minute"));
    let loops = tokio::spawn({
        let bot = bot.clone();
        async move { tokio::join!(bot.run_schedules(), bot.run_delivery()) }
    });

    proxy.cut();
    clock.set(START + 61_000);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let msg = console.message(
            "@root:local",
            &format!("!points give @bob:local 1 \"during the outage {i}\""),
            START,
        );
        let bot = bot.clone();
        tasks.push(tokio::spawn(async move { bot.handle(&msg).await }));
    }
    let emit = console.message(
        "@root:local",
        "!emit release.finished {\"initiator\": \"@carol:local\", \"ticket\": \"REL-9\"}",
        START,
    );
    tasks.push(tokio::spawn({
        let bot = bot.clone();
        async move { bot.handle(&emit).await }
    }));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "commands wait for the database instead of failing"
    );
    assert!(!loops.is_finished(), "the background loops are still up");
    proxy.restore();

    for t in tasks {
        let handled = t.await??;
        assert_eq!(handled, Handled::Answered(Outcome::Ok));
    }
    let replies = sink.take();
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.contains("@bob:local +1 points"))
            .count(),
        10,
        "each command answered once: {replies:#?}"
    );
    eventually(
        &bot,
        &sink,
        "!points @bob:local",
        "@bob:local has 10 points",
    )
    .await?;
    eventually(
        &bot,
        &sink,
        "!points @carol:local",
        "@carol:local has 7 points",
    )
    .await?;
    eventually(&bot, &sink, "!seen", "seen 1 events").await?;

    // Nobody was blamed: no plugin quarantined, no crash on record.
    bot.handle(&console.message("@root:local", "!plugins", START))
        .await?;
    let plugins = sink.take().join("\n");
    assert!(!plugins.contains("quarantined"), "{plugins}");
    let audit = bot.db.audit_recent(200).await?;
    assert!(
        audit
            .iter()
            .all(|e| e.outcome != "trap" && e.outcome != "timeout"),
        "{audit:#?}"
    );
    let runs = audit
        .iter()
        .filter(|e| e.kind == "schedule" && e.command == "later-test.tick")
        .count();
    assert_eq!(runs, 1, "the run fired once: {audit:#?}");
    loops.abort();
    let _ = loops.await;
    bot.shutdown().await;
    Ok(())
}
