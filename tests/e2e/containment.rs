//! A wrong, slow, greedy or hostile plugin does not stop the bot from
//! serving everyone else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ikkyu::chat::console::Console;
use ikkyu_e2e::{rss_kib, sqlite_url, start_bot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_does_not_block_other_commands() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, sink) = start_bot(
        &sqlite_url(data.path()),
        data.path(),
        "call_timeout = \"2s\"",
    )
    .await?;
    let bot = Arc::new(bot);
    let console = Console::new(1);
    let started = Instant::now();
    let spin = {
        let (bot, msg) = (bot.clone(), console.message("@alice:local", "!spin", 0));
        tokio::spawn(async move { bot.handle(&msg).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    bot.handle(&console.message("@bob:local", "!points", 0))
        .await?;
    let answered_after = started.elapsed();
    assert_eq!(
        sink.take(),
        vec!["@bob:local: 0 points, not ranked yet".to_owned()]
    );
    assert!(
        answered_after < Duration::from_millis(1500),
        "!points waited for the loop: {answered_after:?}"
    );
    spin.await??;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the loop ran to its deadline"
    );
    assert_eq!(
        sink.take(),
        vec!["`!spin` failed: the plugin timed out after 2s".to_owned()]
    );
    bot.shutdown().await;
    Ok(())
}

/// The thread that makes running guests yield sleeps while none runs (so
/// an idle bot costs no CPU); a loop started after a quiet spell must wake
/// it, or the loop would hold its thread and never time out. The runtime
/// is shut down without waiting, so a loop that was never stopped fails
/// the test instead of hanging it.
#[test]
fn a_loop_after_a_quiet_spell_is_still_stopped() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let data = tempfile::tempdir()?;
        let (bot, sink) = start_bot(
            &sqlite_url(data.path()),
            data.path(),
            "call_timeout = \"1s\"",
        )
        .await?;
        let bot = Arc::new(bot);
        let console = Console::new(1);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = Instant::now();
        let spin = {
            let (bot, msg) = (bot.clone(), console.message("@alice:local", "!spin", 0));
            tokio::spawn(async move { bot.handle(&msg).await })
        };
        tokio::time::timeout(Duration::from_secs(10), spin)
            .await
            .map_err(|_| anyhow::anyhow!("the loop was never stopped"))???;
        let took = started.elapsed();
        assert!(
            (Duration::from_secs(1)..Duration::from_secs(3)).contains(&took),
            "stopped after {took:?}"
        );
        assert_eq!(
            sink.take(),
            vec!["`!spin` failed: the plugin timed out after 1s".to_owned()]
        );
        bot.shutdown().await;
        anyhow::Ok(())
    });
    rt.shutdown_background();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_busy_replies_not_failures() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let extra = "call_timeout = \"5s\"\nmax_concurrent_calls = 2";
    let (bot, sink) = start_bot(&sqlite_url(data.path()), data.path(), extra).await?;
    let bot = Arc::new(bot);
    let console = Console::new(2);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (bot, msg) = (bot.clone(), console.message("@alice:local", "!nap 1", 0));
        tasks.push(tokio::spawn(async move { bot.handle(&msg).await }));
    }
    for t in tasks {
        t.await??;
    }
    let replies = sink.take();
    assert_eq!(replies.len(), 8, "{replies:#?}");
    let slept = replies.iter().filter(|r| *r == "slept 1s").count();
    let busy = replies
        .iter()
        .filter(|r| r.contains("too many commands are running; try again in a moment"))
        .count();
    assert_eq!(slept + busy, 8, "{replies:#?}");
    assert!(slept >= 1, "{replies:#?}");
    assert!(
        busy >= 4,
        "at most 2 run at once, so most of 8 simultaneous naps are busy: {replies:#?}"
    );
    // Busy is load, not the plugin's fault: it is not quarantined.
    bot.handle(&console.message("@alice:local", "!hog 1", 0))
        .await?;
    assert_eq!(sink.take(), vec!["held 1 MiB".to_owned()]);
    bot.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_plugins_leave_host_memory_bounded() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let extra = "memory_limit_mb = 32\nquarantine_after = 1000";
    let (bot, sink) = start_bot(&sqlite_url(data.path()), data.path(), extra).await?;
    let console = Console::new(3);
    bot.handle(&console.message("@alice:local", "!hog 128", 0))
        .await?;
    let _alone = ikkyu_e2e::memory_test().await;
    let before = rss_kib();
    for _ in 0..40 {
        bot.handle(&console.message("@alice:local", "!hog 128", 0))
            .await?;
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    let replies = sink.take();
    assert_eq!(replies.len(), 41);
    assert!(
        replies
            .iter()
            .all(|r| r.contains("ran out of memory (limit 32 MiB)")),
        "{replies:#?}"
    );
    // RSS is process-wide and other tests run beside this one, so the bound
    // is loose: it still catches a leak of more than ~6 MiB per call, while
    // a leaked 32 MiB instance per call would add 1.2 GiB.
    assert!(
        grown_mib < 256,
        "40 calls asking for 128 MiB each grew the host by {grown_mib} MiB"
    );
    bot.shutdown().await;
    Ok(())
}
