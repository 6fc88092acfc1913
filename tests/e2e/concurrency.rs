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
