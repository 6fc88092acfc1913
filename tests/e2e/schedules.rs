//! The scheduler against a real database with the host's clock under the
//! test's control: declared schedules follow the config across restarts,
//! and a run is committed once even when two bots share the database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ikkyu::clock::{ManualClock, SharedClock};
use ikkyu::store::ScheduleRow;
use ikkyu_e2e::{TempPostgres, postgres_url, sqlite_url, start_bot_at};

/// 2026-11-23 (a Monday) 01:00 UTC, 09:00 in Shanghai.
const MONDAY_0900_SHANGHAI: i64 = 1_795_395_600_000;
const MINUTE: i64 = 60_000;

fn announcements(rows: &[(&str, &str)]) -> String {
    let mut text = String::from("[plugins.announce.config]\ndefault_zone = \"Asia/Shanghai\"\n");
    for (name, body) in rows {
        text.push_str(&format!(
            "[[plugins.announce.config.announcements]]\nname = {name:?}\ncron = \"0 10 * * mon\"\n\
             room = \"!team:local\"\ntext = {body:?}\n"
        ));
    }
    text
}

fn declared(rows: &[ScheduleRow]) -> Vec<(String, String, bool)> {
    rows.iter()
        .map(|r| (r.id.clone(), r.payload.clone(), r.declared))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_in_the_config_follow_it_across_restarts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    let clock = Arc::new(ManualClock::new(MONDAY_0900_SHANGHAI));
    let shared: SharedClock = clock.clone();

    let config = announcements(&[("sync", "Weekly sync"), ("retro", "Retro today")]);
    let (bot, sink) = start_bot_at(&url, dir.path(), &config, shared.clone()).await?;
    bot.run_due_schedules().await?;
    let rows = bot.db.schedules_all().await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.declared && r.next_fire_ms == Some(MONDAY_0900_SHANGHAI + 60 * MINUTE))
    );

    // It fires at 10:00 Shanghai time, once each.
    clock.set(MONDAY_0900_SHANGHAI + 60 * MINUTE);
    let pass = bot.run_due_schedules().await?;
    assert_eq!(pass.fired, 2);
    let mut posted = sink.take();
    posted.sort();
    assert_eq!(
        posted,
        vec![
            "[to !team:local] Retro today",
            "[to !team:local] Weekly sync"
        ]
    );
    bot.shutdown().await;

    // Same config again: nothing added twice, last runs kept, nothing
    // fires again at start.
    let (bot, sink) = start_bot_at(&url, dir.path(), &config, shared.clone()).await?;
    bot.run_due_schedules().await?;
    let rows = bot.db.schedules_all().await?;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.last.as_ref().is_some_and(|l| l.outcome == "ok")),
        "{rows:?}"
    );
    assert!(sink.take().is_empty());
    bot.shutdown().await;

    // Edited text, one removed, one added: updated in place.
    let config = announcements(&[("sync", "Weekly sync, room 4"), ("demo", "Demo day")]);
    let (bot, _sink) = start_bot_at(&url, dir.path(), &config, shared.clone()).await?;
    bot.run_due_schedules().await?;
    let rows = declared(&bot.db.schedules_all().await?);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "config:demo");
    assert!(rows[0].1.contains("Demo day"));
    assert_eq!(rows[1].0, "config:sync");
    assert!(rows[1].1.contains("room 4"), "{rows:?}");
    bot.shutdown().await;
    Ok(())
}

/// Two bots on one database (a restart overlapping the old process, or
/// later two replicas): each run is committed by exactly one of them.
async fn two_bots_run_a_schedule_once(url: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Arc::new(ManualClock::new(MONDAY_0900_SHANGHAI));
    let shared: SharedClock = clock.clone();
    let (a, sink_a) = start_bot_at(url, dir.path(), "", shared.clone()).await?;
    let (b, sink_b) = start_bot_at(url, dir.path(), "", shared.clone()).await?;
    let msg = ikkyu::chat::console::Console::new(MONDAY_0900_SHANGHAI);
    a.handle(&msg.message(
        "@root:local",
        "!announce every \"*/5 * * * *\" !ops:local tick",
        MONDAY_0900_SHANGHAI,
    ))
    .await?;
    sink_a.take();
    for round in 1..=20 {
        clock.set(MONDAY_0900_SHANGHAI + round * 5 * MINUTE);
        let (pa, pb) = tokio::join!(a.run_due_schedules(), b.run_due_schedules());
        assert_eq!(pa?.fired + pb?.fired, 1, "round {round}");
    }
    // Each run is on record once. (Both bots may hand the same outbox row
    // to their chat adapter; the row's delivery key makes the network drop
    // the second, which the Matrix tests check.)
    let runs =
        a.db.audit_recent(100)
            .await?
            .into_iter()
            .filter(|e| e.kind == "schedule" && e.outcome == "ok")
            .count();
    assert_eq!(runs, 20, "one audited run per due time");
    let delivered = sink_a.take().len() + sink_b.take().len();
    assert!((20..=40).contains(&delivered), "{delivered}");
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bots_on_sqlite_run_a_schedule_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    two_bots_run_a_schedule_once(&sqlite_url(dir.path())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bots_on_postgres_run_a_schedule_once() -> anyhow::Result<()> {
    let Some(admin) = postgres_url("schedules") else {
        return Ok(());
    };
    let db = TempPostgres::create(&admin).await?;
    let result = two_bots_run_a_schedule_once(&db.url).await;
    db.drop_db().await?;
    result
}

/// The schedule loop wakes for a schedule a command just wrote, rather
/// than finding it at its next idle pass (30 s on): a freeze of two
/// seconds, on the real clock, ends on time and the room is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_a_command_writes_runs_on_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let extra = "[roles]\nops = [\"@olga:local\"]\n\
                 [plugins.release]\n\
                 grants = [\"chat\", \"kv\", \"events\", \"schedule\", \"directory\", \"config\", \"log\", \"http\"]\n\
                 rooms = [\"!release:local\"]\n\
                 [plugins.release.config]\nroom = \"!release:local\"\n";
    let (bot, sink) = ikkyu_e2e::start_bot(&sqlite_url(dir.path()), dir.path(), extra).await?;
    let bot = Arc::new(bot);
    let loops = tokio::spawn({
        let bot = bot.clone();
        async move { tokio::join!(bot.run_schedules(), bot.run_delivery()) }
    });
    // The loop's first pass finds nothing due and it goes to sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let console = ikkyu::chat::console::Console::new(1);
    let froze = Instant::now();
    bot.handle(&console.message(
        "@olga:local",
        "!release freeze billing 2s a short one",
        bot.now_ms(),
    ))
    .await?;
    let mut seen = Vec::new();
    let ended = loop {
        seen.extend(sink.take());
        if seen
            .iter()
            .any(|m| m.contains("the freeze of billing ended"))
        {
            break froze.elapsed();
        }
        anyhow::ensure!(
            froze.elapsed() < Duration::from_secs(20),
            "the freeze did not end within 20 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loops.abort();
    assert!(
        seen.iter().any(|m| m.contains("billing frozen until")),
        "the freeze was taken: {seen:?}"
    );
    assert!(
        ended >= Duration::from_secs(2) && ended < Duration::from_secs(5),
        "the freeze of 2 s ended after {ended:?}: {seen:?}"
    );
    Ok(())
}
