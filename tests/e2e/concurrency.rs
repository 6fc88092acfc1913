//! Commands arriving at the same time, and the same message arriving
//! twice: each is answered exactly once and no update is lost.

use std::path::Path;
use std::sync::Arc;

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu::dispatch::Handled;
use ikkyu_e2e::{TempPostgres, postgres_url, sqlite_url, start_bot};

async fn bot(db_url: &str, data: &Path) -> anyhow::Result<(Bot, RecordingSink)> {
    start_bot(db_url, data, "").await
}

async fn concurrent_gives_all_count(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (bot, sink) = bot(db_url, data).await?;
    let bot = Arc::new(bot);
    let console = Console::new(1);
    let n = 24;
    let mut tasks = Vec::new();
    for i in 0..n {
        let msg = console.message(
            "@root:local",
            &format!("!points give @bob:local 1 \"task {i}\""),
            0,
        );
        let bot = bot.clone();
        tasks.push(tokio::spawn(async move { bot.handle(&msg).await }));
    }
    for t in tasks {
        assert!(matches!(t.await??, Handled::Answered(_)));
    }
    let replies = sink.take();
    assert_eq!(replies.len(), n, "one reply per command: {replies:#?}");
    assert!(
        replies.iter().all(|r| r.contains("@bob:local +1 points")),
        "{replies:#?}"
    );
    bot.handle(&console.message("@bob:local", "!points", 0))
        .await?;
    assert_eq!(
        sink.take(),
        vec![format!("@bob:local: {n} points, rank 1 of 1")]
    );
    bot.shutdown().await;
    Ok(())
}

async fn a_message_is_answered_once(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let console = Console::new(2);
    let msg = console.message("@root:local", "!points give @bob:local 3 once", 0);
    {
        let (bot, sink) = bot(db_url, data).await?;
        let bot = Arc::new(bot);
        let (a, b) = tokio::join!(bot.handle(&msg), bot.handle(&msg));
        let outcomes = [a?, b?];
        assert!(outcomes.contains(&Handled::Duplicate), "{outcomes:?}");
        assert_eq!(sink.take().len(), 1);
        bot.shutdown().await;
    }
    // After a restart the same message id is still known.
    let (bot, sink) = bot(db_url, data).await?;
    assert_eq!(bot.handle(&msg).await?, Handled::Duplicate);
    assert!(sink.take().is_empty());
    bot.handle(&console.message("@bob:local", "!points", 0))
        .await?;
    assert_eq!(
        sink.take(),
        vec!["@bob:local: 3 points, rank 1 of 1".to_owned()]
    );
    bot.shutdown().await;
    Ok(())
}

/// Concurrent commands each flush pending event deliveries; every event
/// must still change points exactly once.
async fn each_event_is_delivered_once(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let sources = "[plugins.points.config.sources]\nrelease = [\"emitter\"]\n";
    let (bot, sink) = start_bot(db_url, data, sources).await?;
    let bot = Arc::new(bot);
    let console = Console::new(3);
    let n = 12;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let msg = console.message(
            "@alice:local",
            r#"!emit release.finished {"initiator": "@bob:local"}"#,
            0,
        );
        let bot = bot.clone();
        tasks.push(tokio::spawn(async move { bot.handle(&msg).await }));
    }
    for t in tasks {
        t.await??;
    }
    bot.flush().await?;
    sink.take();
    bot.handle(&console.message("@bob:local", "!points", 0))
        .await?;
    assert_eq!(
        sink.take(),
        vec![format!("@bob:local: {} points, rank 1 of 1", n * 10)]
    );
    bot.shutdown().await;
    Ok(())
}

/// Two hosts on one database (a standby replica answering a webhook,
/// later): what one writes is never hidden from the other by what the
/// other keeps of the plugin's data in memory. A command that writes on
/// stale data runs again on fresh data, so no point is lost; one that
/// only reads sees the other's writes within seconds.
async fn another_host_s_writes_reach_this_one(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (here, here_sink) = start_bot(db_url, &data.join("here"), "").await?;
    let (there, there_sink) = start_bot(db_url, &data.join("there"), "").await?;
    let (c1, c2) = (Console::new(11), Console::new(12));
    here.handle(&c1.message("@bob:local", "!points", 0)).await?;
    assert_eq!(here_sink.take(), ["@bob:local: 0 points, not ranked yet"]);
    there
        .handle(&c2.message("@root:local", "!points give @bob:local 5 \"для релиза\"", 0))
        .await?;
    assert_eq!(
        there_sink.take(),
        ["@bob:local +5 points (для релиза); now 5"]
    );
    here.handle(&c1.message("@root:local", "!points give @bob:local 1 didn't", 0))
        .await?;
    assert_eq!(here_sink.take(), ["@bob:local +1 points (didn't); now 6"]);
    here.handle(&c1.message("@bob:local", "!points", 0)).await?;
    assert_eq!(here_sink.take(), ["@bob:local: 6 points, rank 1 of 1"]);
    there
        .handle(&c2.message("@root:local", "!points give @bob:local 2 🚀", 0))
        .await?;
    assert_eq!(there_sink.take(), ["@bob:local +2 points (🚀); now 8"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        here.handle(&c1.message("@bob:local", "!points", 0)).await?;
        let seen = here_sink.take();
        if seen == ["@bob:local: 8 points, rank 1 of 1"] {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the other host's +2 is still not seen: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    here.shutdown().await;
    there.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_s_writes_reach_this_one_on_sqlite() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    another_host_s_writes_reach_this_one(&sqlite(data.path()), data.path()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_host_s_writes_reach_this_one_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres_url("another host's writes") else {
        return Ok(());
    };
    let data = tempfile::tempdir()?;
    let db = TempPostgres::create(&url).await?;
    let result = another_host_s_writes_reach_this_one(&db.url, data.path()).await;
    db.drop_db().await?;
    result
}

fn sqlite(data: &Path) -> String {
    sqlite_url(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gives_all_count_on_sqlite() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    concurrent_gives_all_count(&sqlite(data.path()), data.path()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gives_all_count_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres_url("concurrent gives") else {
        return Ok(());
    };
    let data = tempfile::tempdir()?;
    let db = TempPostgres::create(&url).await?;
    let result = concurrent_gives_all_count(&db.url, data.path()).await;
    db.drop_db().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_answered_once_on_sqlite() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    a_message_is_answered_once(&sqlite(data.path()), data.path()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_answered_once_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres_url("answered once") else {
        return Ok(());
    };
    let data = tempfile::tempdir()?;
    let db = TempPostgres::create(&url).await?;
    let result = a_message_is_answered_once(&db.url, data.path()).await;
    db.drop_db().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_on_sqlite() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    each_event_is_delivered_once(&sqlite(data.path()), data.path()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres_url("event delivery") else {
        return Ok(());
    };
    let data = tempfile::tempdir()?;
    let db = TempPostgres::create(&url).await?;
    let result = each_event_is_delivered_once(&db.url, data.path()).await;
    db.drop_db().await?;
    result
}

/// A prune beside commands on one runtime thread, as `ikkyu run` has: no
/// command waits for it. A prune that held SQLite's write lock across an
/// await stalled the next commit, which waits for that lock on the same
/// thread the prune needed to finish, for the whole busy timeout (5 s).
#[tokio::test(flavor = "current_thread")]
async fn a_prune_does_not_hold_up_commands_on_one_thread() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, sink) = bot(&sqlite_url(data.path()), data.path()).await?;
    let console = Console::new(3);
    let cut = ikkyu::store::Cutoffs {
        audit_ms: 1,
        processed_ms: 1,
        outbox_ms: 1,
        events_ms: 1,
    };
    // Old finished events enough for the prune to take a while.
    let seed = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&sqlite_url(data.path()))
        .await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
         INSERT INTO events (created_ms, topic, payload, source_plugin, depth) \
         SELECT 0, 'old', '{}', 'points', 0 FROM n",
    )
    .execute(&seed)
    .await?;
    sqlx::query(
        "INSERT INTO event_deliveries (event_id, plugin, state) \
         SELECT id, 'contacts', 'done' FROM events WHERE created_ms = 0",
    )
    .execute(&seed)
    .await?;
    seed.close().await;
    // Commands one after another for as long as the prune runs.
    let commands = async {
        let mut slowest = std::time::Duration::ZERO;
        for i in 0..20 {
            let msg = console.message(&format!("@u{i}:local"), "!points", 0);
            let started = std::time::Instant::now();
            let handled = bot.handle(&msg).await?;
            anyhow::ensure!(matches!(handled, Handled::Answered(_)), "{handled:?}");
            slowest = slowest.max(started.elapsed());
        }
        anyhow::Ok(slowest)
    };
    let (pruned, slowest) = tokio::join!(bot.db.prune(cut), commands);
    assert_eq!(pruned?.events, 100_000, "the old events went");
    let slowest = slowest?;
    assert_eq!(sink.take().len(), 20, "one reply per command");
    assert!(
        slowest < std::time::Duration::from_secs(2),
        "a command beside a prune took {slowest:?}"
    );
    Ok(())
}
