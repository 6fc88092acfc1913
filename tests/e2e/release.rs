//! The release queue seen from the tracker's side (the fake Jira of
//! `ikkyu_e2e::trackers`): a finished release updates its ticket once,
//! after the commit, with the operator's token that the plugin never sees,
//! even when the bot stops between the commit and the send.

use std::path::Path;

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu_e2e::start_bot;
use ikkyu_e2e::trackers::Trackers;

fn console() -> &'static Console {
    static CONSOLE: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
    CONSOLE.get_or_init(|| Console::new(13))
}

async fn say(bot: &Bot, sink: &RecordingSink, body: &str) -> anyhow::Result<String> {
    bot.handle(&console().message("@root:local", body, 0))
        .await?;
    Ok(sink.take().join("\n"))
}

fn section(jira: &str) -> String {
    format!(
        "[plugins.release]\n\
         grants = [\"chat\", \"direct\", \"kv\", \"events\", \"schedule\", \"directory\", \"config\", \"log\", \"http\"]\n\
         http = [{{ origin = \"{jira}\", allow_private = true }}]\n\
         [plugins.release.secrets.jira]\nvalue = \"tok-77\"\norigins = [\"{jira}\"]\n\
         [plugins.release.config]\nself_accept = true\ncritical = [\"billing\"]\n\
         [plugins.release.config.tracker]\nkind = \"jira\"\nurl = \"{jira}\"\n\
         auth = \"Bearer {{secret:jira}}\"\ndone = {{ transition = \"31\" }}\n"
    )
}

async fn a_finished_release_updates_its_ticket_once(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let trackers = Trackers::start().await?;
    let jira = &trackers.jira;
    let extra = section(&jira.origin);
    let (bot, sink) = start_bot(db_url, data, &extra).await?;
    let asked = say(&bot, &sink, "!dobro BILL-7 --no-admin").await?;
    assert!(asked.contains("is in the queue as **#1**"), "{asked}");
    say(&bot, &sink, "!release accept 1").await?;
    let started = say(&bot, &sink, "!release start 1").await?;
    assert!(started.contains("started by @root:local"), "{started}");
    let reads = jira.received();
    assert!(reads.iter().all(|r| r.method == "GET"), "{reads:#?}");
    assert!(
        reads
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer tok-77")),
        "the token goes with every read: {reads:#?}"
    );

    // Finished and committed; the bot stops before anything is sent.
    bot.answer(&console().message("@root:local", "!release finish 1", 0))
        .await?;
    bot.shutdown().await;
    let writes = |all: Vec<ikkyu_e2e::web::Received>| -> Vec<ikkyu_e2e::web::Received> {
        all.into_iter().filter(|r| r.method != "GET").collect()
    };
    assert!(
        writes(jira.received()).is_empty(),
        "nothing sent before the restart"
    );

    let (bot, sink) = start_bot(db_url, data, &extra).await?;
    bot.flush().await?;
    bot.flush().await?;
    let sent = writes(jira.received());
    let brief: Vec<String> = sent
        .iter()
        .map(|r| {
            format!(
                "{} {} {:?}",
                r.method,
                r.target,
                r.header("idempotency-key")
            )
        })
        .collect();
    assert_eq!(sent.len(), 2, "a comment and a transition: {brief:#?}");
    // Sends are made in parallel, so they arrive in either order.
    let to = |path: &str| sent.iter().find(|r| r.target.ends_with(path));
    let comment = to("/rest/api/2/issue/BILL-7/comment")
        .ok_or_else(|| anyhow::anyhow!("no comment: {brief:#?}"))?;
    let body = String::from_utf8_lossy(&comment.body);
    assert!(
        body.contains("Released by @root:local via ikkyu (#1)"),
        "{body}"
    );
    let moved = to("/rest/api/2/issue/BILL-7/transitions")
        .ok_or_else(|| anyhow::anyhow!("no transition: {brief:#?}"))?;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&moved.body)?,
        serde_json::json!({"transition": {"id": "31"}})
    );
    for r in &sent {
        assert_eq!(r.header("authorization"), Some("Bearer tok-77"));
        assert!(
            r.header("idempotency-key")
                .is_some_and(|k| k.starts_with("ikkyu-"))
        );
    }
    assert_ne!(
        sent[0].header("idempotency-key"),
        sent[1].header("idempotency-key")
    );

    // Nothing more is sent however often the sender runs.
    bot.flush().await?;
    assert_eq!(writes(jira.received()).len(), 2);
    let shown = say(&bot, &sink, "!release show 1").await?;
    assert!(
        shown.contains("- comment on BILL-7: done (201)\n- move BILL-7: done (204)"),
        "{shown}"
    );
    assert!(!shown.contains("tok-77"), "{shown}");
    // The finish reached the points plugin from its trusted source.
    let points = say(&bot, &sink, "!points").await?;
    assert!(points.contains("10 points"), "{points}");
    bot.shutdown().await;
    Ok(())
}

on_both!(
    a_finished_release_updates_its_ticket_once,
    a_finished_release_updates_its_ticket_once_on_sqlite,
    a_finished_release_updates_its_ticket_once_on_postgres
);

/// A tracker update that cannot even be queued (the operator took the
/// tracker's origin away between start and finish) is a failed update on
/// record and in the reply; the release finishes all the same.
async fn an_update_that_cannot_be_sent_never_blocks_the_release(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let trackers = Trackers::start().await?;
    let jira = &trackers.jira;
    let (bot, sink) = start_bot(db_url, data, &section(&jira.origin)).await?;
    say(&bot, &sink, "!dobro BILL-8 --no-admin").await?;
    say(&bot, &sink, "!release accept 1").await?;
    say(&bot, &sink, "!release start 1").await?;
    bot.shutdown().await;
    let elsewhere = section(&jira.origin).replace(
        &format!(
            "http = [{{ origin = \"{}\", allow_private = true }}]",
            jira.origin
        ),
        "http = [\"https://jira.example.org\"]",
    );
    assert_ne!(
        elsewhere,
        section(&jira.origin),
        "the origin was taken away"
    );
    let elsewhere = elsewhere.replace(
        &format!("origins = [\"{}\"]", jira.origin),
        "origins = [\"https://jira.example.org\"]",
    );
    let (bot, sink) = start_bot(db_url, data, &elsewhere).await?;
    let finished = say(&bot, &sink, "!release finish 1").await?;
    assert!(finished.contains("finished by @root:local"), "{finished}");
    assert!(
        finished.contains("the tracker could not be updated, so update the ticket by hand"),
        "{finished}"
    );
    let shown = say(&bot, &sink, "!release show 1").await?;
    assert!(shown.contains("— finished by @root:local"), "{shown}");
    assert!(
        shown.contains("- comment on BILL-8: failed: not sent ("),
        "{shown}"
    );
    assert!(
        jira.received().iter().all(|r| r.method == "GET"),
        "nothing was written to the tracker"
    );
    bot.shutdown().await;
    Ok(())
}

on_both!(
    an_update_that_cannot_be_sent_never_blocks_the_release,
    an_update_that_cannot_be_sent_never_blocks_the_release_on_sqlite,
    an_update_that_cannot_be_sent_never_blocks_the_release_on_postgres
);
