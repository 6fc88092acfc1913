//! The jobs capability with real scripts (`tests/scripts`) that append to
//! a marker file, so each test reads which jobs really ran, how often and
//! in which order: once after the commit and never for a failed call or
//! after a restart; stopped when cancelled; never more at once than the
//! limit; and `lost`, never run again, when the bot died while one ran.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu_e2e::process::{ConsoleProcess, kill_job_group, marks};
use ikkyu_e2e::{scripts_dir, start_bot};

fn console() -> &'static Console {
    static CONSOLE: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
    CONSOLE.get_or_init(|| Console::new(17))
}

async fn say(bot: &Bot, sink: &RecordingSink, body: &str) -> anyhow::Result<String> {
    bot.handle(&console().message("@ann:local", body, 0))
        .await?;
    Ok(sink.take().join("\n"))
}

/// The worker allowed `step` and `slow`, which append to `mark`.
fn jobs_config(mark: &Path, extra: &str) -> String {
    let scripts = scripts_dir();
    format!(
        "[jobs]\nkill_grace = \"1s\"\n{extra}\n\
         [jobs.step]\nargv = [\"{s}/step.sh\", \"{{what}}\", \"{{code}}\"]\n\
         params = {{ what = \"[a-z0-9 -]{{1,40}}\", code = \"[0-9]{{1,3}}\" }}\n\
         env = {{ MARK = {mark:?} }}\n\
         [jobs.slow]\nargv = [\"{s}/slow.sh\", \"{{secs}}\", \"{{name}}\"]\n\
         params = {{ secs = \"[0-9]{{1,2}}\", name = \"[a-z0-9]{{1,10}}\" }}\n\
         env = {{ MARK = {mark:?} }}\ntimeout = \"60s\"\n\
         [jobs.chatty]\nargv = [\"/bin/sh\", \"-c\", \"yes output | head -n 200000; echo the end\"]\n\
         [plugins.worker]\ngrants = [\"chat\", \"kv\", \"jobs\", \"events\"]\njobs = [\"step\", \"slow\", \"chatty\"]\nrooms = [\"*\"]\n",
        s = scripts.display(),
        mark = mark.display().to_string(),
    )
}

async fn a_job_runs_once_after_its_commit(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let extra = jobs_config(&mark, "");
    let (bot, sink) = start_bot(db_url, data, &extra).await?;
    let out = say(&bot, &sink, r#"!work step {"what": "canary", "code": "0"}"#).await?;
    assert!(out.contains("started step"), "{out}");
    let out = say(
        &bot,
        &sink,
        r#"!work-then-fail step {"what": "never", "code": "0"}"#,
    )
    .await?;
    assert!(out.contains("failed on purpose"), "{out}");
    assert!(
        bot.settle_jobs(Duration::from_secs(30)).await?,
        "jobs ended"
    );
    let told = sink.take().join("\n");
    assert!(
        told.contains("job 1 step succeeded (exit 0): step canary"),
        "{told}"
    );
    assert_eq!(
        marks(&mark),
        ["canary"],
        "ran once; the failed call ran nothing"
    );

    // A job that writes far more than is kept neither blocks on its pipe
    // nor fills the database: its last lines are kept.
    let out = say(&bot, &sink, "!work chatty {}").await?;
    assert!(out.contains("started chatty"), "{out}");
    assert!(bot.settle_jobs(Duration::from_secs(30)).await?);
    let told = sink.take().join("\n");
    assert!(
        told.contains("job 2 chatty succeeded (exit 0): the end"),
        "{told}"
    );
    let chatty = bot
        .db
        .job(2)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job 2"))?;
    assert!(
        chatty.output.starts_with("(199801 earlier lines not kept)"),
        "{}",
        &chatty.output[..80]
    );
    assert!(chatty.output.len() < 64 * 1024);

    // After a restart nothing runs again.
    bot.shutdown().await;
    let (bot, sink) = start_bot(db_url, data, &extra).await?;
    assert!(bot.settle_jobs(Duration::from_secs(10)).await?);
    assert_eq!(marks(&mark), ["canary"]);
    assert!(sink.take().is_empty(), "nothing was announced again");
    let job = bot
        .db
        .job(1)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job 1"))?;
    assert_eq!(job.state.as_str(), "succeeded");
    assert_eq!(job.output, "step canary");
    bot.shutdown().await;
    Ok(())
}
on_both!(
    a_job_runs_once_after_its_commit,
    a_job_runs_once_after_its_commit_sqlite,
    a_job_runs_once_after_its_commit_postgres
);

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(20);
    while !done() {
        anyhow::ensure!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn a_cancelled_job_is_stopped(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let (bot, sink) = start_bot(db_url, data, &jobs_config(&mark, "")).await?;
    let bot = Arc::new(bot);
    let runner = tokio::spawn({
        let bot = bot.clone();
        async move { bot.run_jobs().await }
    });
    say(&bot, &sink, r#"!work slow {"secs": "30", "name": "long"}"#).await?;
    wait_for("the job to start", || marks(&mark) == ["start long"]).await?;
    let asked = Instant::now();
    let out = say(&bot, &sink, "!work-cancel").await?;
    assert!(out.contains("cancelling"), "{out}");
    assert!(bot.settle_jobs(Duration::from_secs(20)).await?);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stopped at once, not after 30 s"
    );
    // The outcome may come before the cancel's own flush ends.
    let told = format!("{out}\n{}", sink.take().join("\n"));
    assert!(
        told.contains("job 1 slow cancelled"),
        "{told}\n{:#?}\n{:#?}",
        bot.db.job(1).await?,
        bot.db.audit_recent(6).await?
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(marks(&mark), ["start long"], "it never reached its end");
    let out = say(&bot, &sink, "!work-cancel").await?;
    assert!(out.contains("already ended: cancelled"), "{out}");
    runner.abort();
    bot.shutdown().await;
    Ok(())
}
on_both!(
    a_cancelled_job_is_stopped,
    a_cancelled_job_is_stopped_sqlite,
    a_cancelled_job_is_stopped_postgres
);

async fn no_more_jobs_run_at_once_than_the_limit(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let (bot, sink) = start_bot(db_url, data, &jobs_config(&mark, "concurrency = 2")).await?;
    for n in 0..5 {
        bot.answer(&console().message(
            "@ann:local",
            &format!(r#"!work slow {{"secs": "1", "name": "j{n}"}}"#),
            0,
        ))
        .await?;
    }
    assert!(bot.settle_jobs(Duration::from_secs(30)).await?);
    let lines = marks(&mark);
    let mut running = 0i32;
    let mut most = 0;
    for line in &lines {
        running += if line.starts_with("start") { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(lines.len(), 10, "all five started and ended: {lines:?}");
    assert_eq!(
        most, 2,
        "at most two at once, and two did run together: {lines:?}"
    );
    let told = sink.take().join("\n");
    assert_eq!(told.matches("succeeded").count(), 5, "{told}");
    bot.shutdown().await;
    Ok(())
}
on_both!(
    no_more_jobs_run_at_once_than_the_limit,
    no_more_jobs_run_at_once_than_the_limit_sqlite,
    no_more_jobs_run_at_once_than_the_limit_postgres
);

/// The bot as a real `ikkyu console` process, killed with SIGKILL while a
/// job runs: started again, it marks the job `lost` and tells the plugin,
/// and never runs it again.
async fn a_job_running_when_the_bot_dies_is_lost(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let mut console = ConsoleProcess::start(db_url, data, "@ann:local", &jobs_config(&mark, ""))?;
    console
        .say(r#"!work slow {"secs": "30", "name": "orphan"}"#)
        .await?;
    // Killed once the job runs and the bot has saved its process and
    // first output.
    wait_for("the job to start", || marks(&mark) == ["start orphan"]).await?;
    let db = ikkyu::store::Db::connect(db_url).await?;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let job = db.job(1).await?;
        if job.is_some_and(|j| j.pid.is_some() && j.output.contains("working on orphan")) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "the job never started; the bot said:\n{}",
            console.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await;
    let config = console.config.clone();
    console.kill().await?;

    let (bot, sink) = ConsoleProcess::restart(&config).await?;
    assert!(bot.settle_jobs(Duration::from_secs(20)).await?);
    let told = sink.take().join("\n");
    assert!(told.contains("job 1 slow lost (exit none)"), "{told}");
    let job = bot
        .db
        .job(1)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job 1"))?;
    assert_eq!(job.state.as_str(), "lost");
    assert!(job.output.contains("working on orphan"), "{}", job.output);
    // Its processes outlived the bot; the test stops them.
    kill_job_group(job.pid);
    assert!(bot.settle_jobs(Duration::from_secs(5)).await?);
    assert_eq!(marks(&mark), ["start orphan"], "never run again");
    bot.shutdown().await;
    Ok(())
}
on_both!(
    a_job_running_when_the_bot_dies_is_lost,
    a_job_running_when_the_bot_dies_is_lost_sqlite,
    a_job_running_when_the_bot_dies_is_lost_postgres
);
