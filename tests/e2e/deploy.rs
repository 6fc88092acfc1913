//! Deploys with real scripts (`tests/scripts/deploy.sh`) that append
//! "<phase> <host>" to a marker file, so each test reads which hosts were
//! touched in which order: canary first, datacenters in order, the
//! rollback plan's steps in order with datacenters reversed; at most
//! `concurrency` deploys at once; a bot killed mid-job leaves the task
//! waiting for a decision, never re-running the job; a countdown that ran
//! out while the bot was down cancels the task when it starts.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu::clock::{Clock, ManualClock, SharedClock};
use ikkyu_e2e::process::{ConsoleProcess, kill_job_group, marks};
use ikkyu_e2e::{scripts_dir, start_bot, start_bot_at};

fn console() -> &'static Console {
    static CONSOLE: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
    CONSOLE.get_or_init(|| Console::new(19))
}

async fn say(bot: &Bot, sink: &RecordingSink, who: &str, body: &str) -> anyhow::Result<String> {
    bot.handle(&console().message(who, body, bot.now_ms()))
        .await?;
    Ok(sink.take().join("\n"))
}

fn set(lines: &[String]) -> BTreeSet<String> {
    lines.iter().cloned().collect()
}

/// The host jobs (appending to `mark`, waiting `sleep` seconds each) and
/// the deploy plugin allowed them; `services` is TOML under the plugin's
/// config.
fn config(mark: &Path, sleep: u32, extra: &str) -> String {
    config_with(mark, sleep, "@olga:local", extra)
}

/// [`config`] with `ops` as the ops role.
fn config_with(mark: &Path, sleep: u32, ops: &str, extra: &str) -> String {
    let s = scripts_dir().display().to_string();
    let m = mark.display().to_string();
    let job = |name: &str, phase: &str| {
        format!(
            "[jobs.{name}]\nargv = [\"{s}/deploy.sh\", \"{phase}\", \"{{host}}\", \"{{version}}\"]\n\
             params = {{ host = \"[a-z0-9-]+\", version = \"[0-9a-z.]+\", phase = \"[a-z]+\" }}\n\
             env = {{ MARK = {m:?}, SLEEP = \"{sleep}\" }}\n"
        )
    };
    format!(
        "[roles]\nadmin = [\"@root:local\"]\nops = [{ops:?}]\n\
         [jobs]\nconcurrency = 30\nkill_grace = \"1s\"\n\
         {}{}{}{}\
         [plugins.deploy]\ngrants = [\"chat\", \"kv\", \"events\", \"schedule\", \"jobs\", \"config\", \"log\"]\n\
         jobs = [\"canary\", \"batch\", \"undo-config\", \"undo-code\"]\nrooms = [\"*\"]\n{extra}",
        job("canary", "canary"),
        job("batch", "batch"),
        job("undo-config", "undoconfig"),
        job("undo-code", "undocode"),
    )
}

const WEB: &str = "[plugins.deploy.config.services.web]\n\
    datacenters = [{ name = \"dc1\", hosts = [\"w1\", \"w2\", \"w3\"] }, { name = \"dc2\", hosts = [\"w4\", \"w5\"] }]\n\
    canary = \"w1\"\nstep = 2\n\
    jobs = { canary = \"canary\", batch = \"batch\" }\n\
    groups = { queue = [\"w3\", \"w5\"] }\n\
    rollback = [{ job = \"undo-config\", hosts = \"all\" }, { job = \"undo-code\", hosts = \"queue\" }]\n";

async fn hosts_are_deployed_and_rolled_back_in_order(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let (bot, sink) = start_bot(db_url, data, &config(&mark, 0, WEB)).await?;
    let asked = say(&bot, &sink, "@ann:local", "!deploy web 1.2").await?;
    assert!(
        asked.contains("web 1.2 is deploy **#1**: canary"),
        "{asked}"
    );
    assert!(bot.settle_jobs(Duration::from_secs(30)).await?);
    assert_eq!(
        marks(&mark),
        ["canary w1"],
        "nothing but the canary before the confirmation"
    );
    let waiting = sink.take().join("\n");
    assert!(
        waiting.contains("`!deploy confirm 1` within **2:40**"),
        "{waiting}"
    );
    let confirmed = say(&bot, &sink, "@olga:local", "!deploy confirm 1").await?;
    assert!(confirmed.contains("#1 confirmed"), "{confirmed}");
    assert!(bot.settle_jobs(Duration::from_secs(30)).await?);
    let done = marks(&mark);
    assert_eq!(done.len(), 5, "{done:?}");
    assert_eq!(
        set(&done[1..3]),
        set(&["batch w2".into(), "batch w3".into()]),
        "dc1 first: {done:?}"
    );
    assert_eq!(
        set(&done[3..5]),
        set(&["batch w4".into(), "batch w5".into()]),
        "then dc2: {done:?}"
    );
    assert!(sink.take().join("\n").contains("✅ done (5/5 hosts done)"));

    let rolled = say(&bot, &sink, "@ann:local", "!deploy rollback 1").await?;
    assert!(rolled.contains("#1 rolling back"), "{rolled}");
    assert!(bot.settle_jobs(Duration::from_secs(30)).await?);
    let all = marks(&mark);
    let undo = &all[5..];
    assert_eq!(undo.len(), 7, "{undo:?}");
    // The plan's order: configuration everywhere, then code on the queue
    // hosts; within each step dc2 before dc1.
    assert_eq!(
        set(&undo[0..2]),
        set(&["undoconfig w4".into(), "undoconfig w5".into()]),
        "{undo:?}"
    );
    assert_eq!(
        set(&undo[2..5]),
        set(&[
            "undoconfig w1".into(),
            "undoconfig w2".into(),
            "undoconfig w3".into()
        ]),
        "{undo:?}"
    );
    assert_eq!(
        undo[5..],
        ["undocode w5".to_owned(), "undocode w3".to_owned()],
        "{undo:?}"
    );
    let told = sink.take().join("\n");
    assert!(told.contains("↩ rolled back (7 hosts)"), "{told}");
    bot.shutdown().await;
    Ok(())
}
on_both!(
    hosts_are_deployed_and_rolled_back_in_order,
    hosts_are_deployed_and_rolled_back_in_order_sqlite,
    hosts_are_deployed_and_rolled_back_in_order_postgres
);

async fn twenty_deploys_with_a_limit_of_fifteen(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let services: String = (0..20)
        .map(|n| {
            format!(
                "[plugins.deploy.config.services.s{n}]\n\
                 datacenters = [{{ name = \"dc1\", hosts = [\"h{n}\"] }}]\njobs = {{ batch = \"batch\" }}\n"
            )
        })
        .collect();
    let (bot, sink) = start_bot(db_url, data, &config(&mark, 0, &services)).await?;
    for n in 0..20 {
        bot.answer(&console().message("@ann:local", &format!("!deploy s{n} 1.0"), 0))
            .await?;
    }
    bot.flush().await?;
    sink.take();
    let queue = say(&bot, &sink, "@ann:local", "!deploy queue").await?;
    assert_eq!(
        queue.matches("**rolling out: dc1, batch 1 of 1**").count(),
        15,
        "{queue}"
    );
    for position in 1..=5 {
        assert!(
            queue.contains(&format!(
                "**queued**, position {position} — 15 deploys run at once, the most allowed"
            )),
            "{queue}"
        );
    }
    assert!(bot.settle_jobs(Duration::from_secs(60)).await?);
    assert_eq!(
        marks(&mark).len(),
        20,
        "the five waiting ran once the first ended"
    );
    let queue = say(&bot, &sink, "@ann:local", "!deploy queue").await?;
    assert!(
        queue.contains("no deploys are queued or running"),
        "{queue}"
    );
    bot.shutdown().await;
    Ok(())
}
on_both!(
    twenty_deploys_with_a_limit_of_fifteen,
    twenty_deploys_with_a_limit_of_fifteen_sqlite,
    twenty_deploys_with_a_limit_of_fifteen_postgres
);

async fn a_countdown_that_ran_out_while_down_cancels_at_start(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let clock = Arc::new(ManualClock::new(1_796_000_000_000));
    let shared: SharedClock = clock.clone();
    let extra = config(&mark, 0, WEB);
    let (bot, sink) = start_bot_at(db_url, data, &extra, shared.clone()).await?;
    say(&bot, &sink, "@ann:local", "!deploy web 1.3").await?;
    assert!(bot.settle_jobs(Duration::from_secs(30)).await?);
    assert!(sink.take().join("\n").contains("within **2:40**"));
    bot.shutdown().await;

    clock.set(clock.now_ms() + 600_000);
    let (bot, sink) = start_bot_at(db_url, data, &extra, shared).await?;
    bot.run_due_schedules().await?;
    let told = sink.take().join("\n");
    assert!(
        told.contains("deploy #1 (web 1.3) was not confirmed within 2:40 and is cancelled"),
        "{told}"
    );
    let late = say(&bot, &sink, "@ann:local", "!deploy confirm 1").await?;
    assert!(
        late.contains("#1 is cancelled, not waiting for a confirmation"),
        "{late}"
    );
    assert_eq!(marks(&mark), ["canary w1"], "nothing past the canary");
    bot.shutdown().await;
    Ok(())
}
on_both!(
    a_countdown_that_ran_out_while_down_cancels_at_start,
    a_countdown_that_ran_out_while_down_cancels_at_start_sqlite,
    a_countdown_that_ran_out_while_down_cancels_at_start_postgres
);

/// A real `ikkyu console` process SIGKILLed while the canary's job runs:
/// started again, the job is lost, the task waits for a decision and its
/// initiator and ops are told; nothing runs again by itself.
async fn a_bot_killed_mid_job_leaves_the_task_to_a_decision(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let mut console = ConsoleProcess::start(db_url, data, "@ann:local", &config(&mark, 30, WEB))?;
    console.say("!deploy web 2.0").await?;
    let until = Instant::now() + Duration::from_secs(20);
    while marks(&mark).is_empty() {
        anyhow::ensure!(
            Instant::now() < until,
            "the canary never started; the bot said:\n{}",
            console.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Long enough for the bot to save the job's process id.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let path = console.config.clone();
    console.kill().await?;

    let (bot, sink) = ConsoleProcess::restart(&path).await?;
    assert!(bot.settle_jobs(Duration::from_secs(20)).await?);
    let told = sink.take().join("\n");
    assert!(
        told.contains("@ann:local and ops: deploy #1 (web 2.0) needs a decision: the job of canary w1 was running when the bot stopped"),
        "{told}"
    );
    let status = say(&bot, &sink, "@ann:local", "!deploy status 1").await?;
    assert!(status.contains("❓ needs a decision"), "{status}");
    let cancelled = say(&bot, &sink, "@ann:local", "!deploy cancel 1").await?;
    assert!(
        cancelled.contains("#1 cancelled; the version is back in development"),
        "{cancelled}"
    );
    kill_job_group(bot.db.job(1).await?.and_then(|j| j.pid));
    assert_eq!(
        marks(&mark),
        ["canary w1"],
        "the lost job was not run again"
    );
    bot.shutdown().await;
    Ok(())
}
on_both!(
    a_bot_killed_mid_job_leaves_the_task_to_a_decision,
    a_bot_killed_mid_job_leaves_the_task_to_a_decision_sqlite,
    a_bot_killed_mid_job_leaves_the_task_to_a_decision_postgres
);

/// A real `ikkyu console` SIGKILLed during a short real countdown: the
/// deadline passes while it is down, and the bot started again cancels
/// the task at once, saying so; no batch ever ran.
async fn a_bot_killed_mid_countdown_cancels_on_time_after_restart(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let mark = data.join("mark");
    let short = format!("[plugins.deploy.config]\ncountdown = \"3s\"\ntick = \"1s\"\n{WEB}");
    let mut console = ConsoleProcess::start(db_url, data, "@ann:local", &config(&mark, 0, &short))?;
    console.say("!deploy web 3.0").await?;
    let until = Instant::now() + Duration::from_secs(20);
    while marks(&mark).is_empty() {
        anyhow::ensure!(
            Instant::now() < until,
            "the canary never ran; the bot said:\n{}",
            console.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The canary is done and the countdown has begun; the bot dies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = console.config.clone();
    console.kill().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (bot, sink) = ConsoleProcess::restart(&path).await?;
    bot.run_due_schedules().await?;
    let told = sink.take().join("\n");
    assert!(
        told.contains("deploy #1 (web 3.0) was not confirmed within 0:03 and is cancelled"),
        "{told}"
    );
    let late = say(&bot, &sink, "@olga:local", "!deploy confirm 1").await?;
    assert!(
        late.contains("#1 is cancelled, not waiting for a confirmation"),
        "{late}"
    );
    assert_eq!(marks(&mark), ["canary w1"], "no batch ran");
    bot.shutdown().await;
    Ok(())
}
on_both!(
    a_bot_killed_mid_countdown_cancels_on_time_after_restart,
    a_bot_killed_mid_countdown_cancels_on_time_after_restart_sqlite,
    a_bot_killed_mid_countdown_cancels_on_time_after_restart_postgres
);

/// On a real Synapse: the progress message is one message, edited in place
/// (`m.replace`) as the countdown runs and the rollout goes on; a second
/// user with ops confirms it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_matrix_the_countdown_is_edited_in_place_and_ops_confirm() -> anyhow::Result<()> {
    use ikkyu_e2e::matrix::{BotProcess, Human};
    use ikkyu_e2e::synapse;
    use matrix_sdk::ruma::events::room::member::MembershipState;
    const WAIT: Duration = Duration::from_secs(60);
    let hs = synapse::shared().await?;
    let ann = Human::new(hs, "dep-ann").await?;
    let olga = Human::new(hs, "dep-olga").await?;
    let dir = tempfile::tempdir()?;
    let mark = dir.path().join("mark");
    let extra = config_with(
        &mark,
        0,
        olga.user_id(),
        &format!("[plugins.deploy.config]\ntick = \"2s\"\ncountdown = \"60s\"\n{WEB}"),
    );
    let mut bot = BotProcess::new(hs, "dep-bot", dir.path(), &[ann.user_id()], "", &extra).await?;
    let bot_id = bot.account.user_id.clone();
    bot.start()?;
    let room = ann.create_room(&[olga.user_id(), &bot_id], false).await?;
    let olga_room = olga.client.join_room_by_id(room.room_id()).await?;
    if let Err(e) = ann
        .wait_membership(&room, &bot_id, MembershipState::Join, WAIT)
        .await
    {
        anyhow::bail!("{e}\nbot log:\n{}", bot.log());
    }
    let asked = ann.say(&room, "!deploy web 1.2").await?;
    let reply = ann.reply_to(&asked, WAIT).await?;
    assert!(
        reply.body.contains("is deploy **#1**") || reply.body.contains("is deploy #1"),
        "{}",
        reply.body
    );
    let progress = ann
        .wait_for(WAIT, "the progress message", |seen| {
            seen.iter()
                .find(|m| {
                    m.sender.as_str() == bot_id
                        && m.replaces.is_none()
                        && m.body.contains("Deploy #1")
                })
                .map(|m| m.event_id.clone())
        })
        .await?;
    let edits_with = |what: &'static str| {
        let progress = progress.clone();
        move |seen: &[ikkyu_e2e::matrix::Seen]| {
            seen.iter()
                .filter(|m| m.replaces.as_ref() == Some(&progress) && m.body.contains(what))
                .map(|m| m.body.clone())
                .collect::<Vec<_>>()
                .into_iter()
                .reduce(|a, b| format!("{a}\n{b}"))
        }
    };
    ann.wait_for(WAIT, "the countdown, edited in", edits_with("within"))
        .await?;
    // It ticks: at least two different times left are shown, each as an
    // edit of the same message.
    ann.wait_for(WAIT, "a second tick", |seen| {
        let shown: BTreeSet<String> = seen
            .iter()
            .filter(|m| m.replaces.as_ref() == Some(&progress) && m.body.contains("within"))
            .map(|m| m.body.clone())
            .collect();
        (shown.len() >= 2).then_some(())
    })
    .await?;
    assert_eq!(marks(&mark), ["canary w1"]);
    let confirm = olga.say(&olga_room, "!deploy confirm 1").await?;
    let confirmed = olga.reply_to(&confirm, WAIT).await?;
    assert!(
        confirmed.body.contains("#1 confirmed"),
        "{}",
        confirmed.body
    );
    ann.wait_for(
        WAIT,
        "the rollout done, edited in",
        edits_with("done (5/5 hosts done)"),
    )
    .await?;
    let originals = ann
        .seen()
        .iter()
        .filter(|m| {
            m.sender.as_str() == bot_id && m.replaces.is_none() && m.body.contains("Deploy #1")
        })
        .count();
    assert_eq!(
        originals, 1,
        "one progress message, edited, not a new one per step"
    );
    assert_eq!(marks(&mark).len(), 5);
    bot.kill();
    Ok(())
}
