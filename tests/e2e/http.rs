//! Plugins on the web: `http.fetch` during a call and `http.send` after
//! the commit, against real HTTP servers the tests start, with the
//! operator's rules (origins, private addresses, redirects, sizes, time,
//! secrets) holding and every request on record.

use std::path::Path;
use std::time::Duration;

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu_e2e::web::{FakeWeb, Reply};
use ikkyu_e2e::{sqlite_url, start_bot};

fn console() -> &'static Console {
    static CONSOLE: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
    CONSOLE.get_or_init(|| Console::new(11))
}

async fn say(bot: &Bot, sink: &RecordingSink, body: &str) -> anyhow::Result<String> {
    bot.handle(&console().message("@root:local", body, 0))
        .await?;
    Ok(sink.take().join("\n"))
}

/// The misbehave plugin allowed the test servers in `private` (so with
/// `allow_private`) and `public` without it, with the secret `tracker`
/// bound to the first server only.
fn section(private: &[&str], public: &str) -> String {
    let origins: Vec<String> = private
        .iter()
        .map(|o| format!("{{ origin = \"{o}\", allow_private = true }}"))
        .chain([format!("\"{public}\"")])
        .collect();
    format!(
        "[plugins.misbehave]\n\
         grants = [\"chat\", \"kv\", \"events\", \"schedule\", \"log\", \"http\"]\n\
         http = [{}]\n\
         [plugins.misbehave.secrets.tracker]\n\
         value = \"tok-3f9a\"\n\
         origins = [\"{}\"]\n",
        origins.join(", "),
        private.first().unwrap_or(&"")
    )
}

/// A tracker that answers each path its own way.
async fn tracker() -> anyhow::Result<FakeWeb> {
    FakeWeb::start(|r| match r.target.as_str() {
        "/ticket" => Reply::text(200, "REL-1 is ready"),
        "/echo" => Reply::text(
            200,
            &format!("you sent {}", r.header("authorization").unwrap_or("")),
        ),
        "/big" => Reply::text(200, &"x".repeat(2 << 20)),
        "/slow" => Reply {
            delay: Duration::from_secs(8),
            ..Reply::text(200, "late")
        },
        "/hook" => Reply::text(201, "{\"id\": 7}"),
        _ => Reply::text(404, "no such thing"),
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_go_only_where_the_operator_allowed() -> anyhow::Result<()> {
    let web = tracker().await?;
    let other = FakeWeb::start(|_| Reply::text(200, "thanks for the token")).await?;
    let stray = FakeWeb::start(|_| Reply::text(200, "stray")).await?;
    // A name that resolves to 127.0.0.1, listed as if it were public.
    let port = stray.origin.rsplit(':').next().unwrap_or("0");
    let public = format!("http://localhost:{port}");
    let redirecting = FakeWeb::start({
        let to = format!("{}/ticket", other.origin);
        move |_| Reply::redirect(&to)
    })
    .await?;
    let data = tempfile::tempdir()?;
    let extra = format!(
        "call_timeout = \"2s\"\n{}",
        section(&[&web.origin, &other.origin, &redirecting.origin], &public)
    );
    let (bot, sink) = start_bot(&sqlite_url(data.path()), data.path(), &extra).await?;

    let ticket = say(&bot, &sink, &format!("!get {}/ticket", web.origin)).await?;
    assert_eq!(ticket, "status 200: REL-1 is ready");

    let elsewhere = say(&bot, &sink, "!get https://example.org/").await?;
    assert!(
        elsewhere.contains("https://example.org:443 is not an origin this plugin may reach"),
        "{elsewhere}"
    );

    let private = say(&bot, &sink, &format!("!get {public}/")).await?;
    assert!(
        private.contains("resolves to 127.0.0.1, a loopback address"),
        "{private}"
    );
    assert!(stray.received().is_empty(), "nothing reached it");

    let redirected = say(&bot, &sink, &format!("!get {}/go", redirecting.origin)).await?;
    assert!(
        redirected.contains("requests follow redirects only within their origin"),
        "{redirected}"
    );
    assert!(other.received().is_empty(), "the redirect was not followed");

    let big = say(&bot, &sink, &format!("!get {}/big", web.origin)).await?;
    assert!(big.contains("is larger than 1024 KiB"), "{big}");

    let started = std::time::Instant::now();
    let slow = say(&bot, &sink, &format!("!get {}/slow", web.origin)).await?;
    assert!(slow.contains("did not answer within"), "{slow}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "bounded by the call"
    );

    // The secret reaches the tracker; what the plugin sees back is redacted.
    let echo = say(
        &bot,
        &sink,
        &format!("!get {}/echo Bearer {{secret:tracker}}", web.origin),
    )
    .await?;
    assert_eq!(echo, "status 200: you sent Bearer {secret:tracker}");
    let at_tracker = web.received();
    assert!(
        at_tracker
            .iter()
            .any(|r| r.header("authorization") == Some("Bearer tok-3f9a")),
        "{at_tracker:#?}"
    );
    // It never goes to another allowed origin.
    let leak = say(
        &bot,
        &sink,
        &format!("!get {}/steal Bearer {{secret:tracker}}", other.origin),
    )
    .await?;
    assert!(
        leak.contains("the secret \"tracker\" may not be sent to"),
        "{leak}"
    );
    assert!(other.received().is_empty());

    // Every read is on record: method, origin, path, status; no body.
    let audit = bot.db.audit_recent(20).await?;
    let details: Vec<String> = audit.iter().filter_map(|e| e.detail.clone()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains(&format!("GET {}/ticket → 200", web.origin))),
        "{details:#?}"
    );
    assert!(!details.iter().any(|d| d.contains("REL-1 is ready")));
    assert!(!details.iter().any(|d| d.contains("tok-3f9a")));
    bot.shutdown().await;
    Ok(())
}

/// A send is made after its commit, once, with an idempotency key, and its
/// outcome comes back to the plugin; a send whose call failed is never
/// made; a send committed before a crash is made after the restart.
async fn sends_happen_once_after_the_commit(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let web = tracker().await?;
    let extra = section(&[&web.origin], "https://example.org");
    let (bot, sink) = start_bot(db_url, data, &extra).await?;

    let doomed = say(&bot, &sink, &format!("!post-then-fail {}/hook", web.origin)).await?;
    assert!(
        doomed.contains("failing after asking for a POST"),
        "{doomed}"
    );
    assert!(web.received().is_empty(), "a failed call sends nothing");

    let queued = say(&bot, &sink, &format!("!post {}/hook t1", web.origin)).await?;
    assert_eq!(queued, "queued t1");
    let posts: Vec<_> = web
        .received()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let key = posts[0].header("idempotency-key").map(str::to_owned);
    assert!(
        key.as_deref().is_some_and(|k| k.starts_with("ikkyu-")),
        "{key:?}"
    );
    assert_eq!(posts[0].body, b"{\"from\": \"misbehave\"}");
    let outcome = say(&bot, &sink, "!sent t1").await?;
    let outcome: serde_json::Value = serde_json::from_str(&outcome)?;
    assert_eq!(outcome["status"], 201);
    assert_eq!(outcome["body"], "{\"id\": 7}");
    assert_eq!(outcome["tries"], 1);

    // Committed, then the bot stops before sending: the next start sends it.
    bot.answer(&console().message("@root:local", &format!("!post {}/hook t2", web.origin), 0))
        .await?;
    bot.shutdown().await;
    let before = web.received().len();
    assert_eq!(before, 1, "not sent before the restart");
    let (bot, sink) = start_bot(db_url, data, &extra).await?;
    bot.flush().await?;
    bot.flush().await?;
    assert_eq!(web.received().len(), 2, "sent once after the restart");
    let outcome = say(&bot, &sink, "!sent t2").await?;
    assert!(outcome.contains("\"status\":201"), "{outcome}");
    let audit = bot.db.audit_recent(30).await?;
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "http" && e.command == format!("POST {}/hook", web.origin)),
        "{audit:#?}"
    );
    bot.shutdown().await;
    Ok(())
}

on_both!(
    sends_happen_once_after_the_commit,
    sends_happen_once_after_the_commit_on_sqlite,
    sends_happen_once_after_the_commit_on_postgres
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_is_tried_again_under_the_same_key() -> anyhow::Result<()> {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let web = FakeWeb::start({
        let calls = calls.clone();
        move |_| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Reply::text(503, "busy")
            } else {
                Reply::text(200, "ok")
            }
        }
    })
    .await?;
    let data = tempfile::tempdir()?;
    let extra = section(&[&web.origin], "https://example.org");
    let (bot, sink) = start_bot(&sqlite_url(data.path()), data.path(), &extra).await?;
    say(&bot, &sink, &format!("!post {}/hook flaky", web.origin)).await?;
    assert_eq!(
        say(&bot, &sink, "!sent flaky").await?,
        "nothing yet for flaky"
    );
    // The second try is due two seconds after the first.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    bot.flush().await?;
    let got = web.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
    let outcome = say(&bot, &sink, "!sent flaky").await?;
    assert!(
        outcome.contains("\"status\":200") && outcome.contains("\"tries\":2"),
        "{outcome}"
    );
    bot.shutdown().await;
    Ok(())
}

/// `~ settle` in a transcript waits out a send's retries (moving the
/// transcript's clock to each) and what its outcome does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_settle_pending_sends() -> anyhow::Result<()> {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let web = FakeWeb::start({
        let calls = calls.clone();
        move |_| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                Reply::text(502, "bad gateway")
            } else {
                Reply::text(200, "ok")
            }
        }
    })
    .await?;
    let origin = &web.origin;
    let text = format!(
        "% [plugins.misbehave]\n\
         % http = [{{ origin = \"{origin}\", allow_private = true }}]\n\
         > @root:local !post {origin}/hook flaky\n\
         < ^queued flaky$\n\
         > @root:local !sent flaky\n\
         < ^nothing yet for flaky$\n\
         ~ settle\n\
         > @root:local !sent flaky\n\
         < \"status\":200.*\"tries\":3\n"
    );
    let transcript = ikkyu::transcript::Transcript::parse(Path::new("settle.chat"), &text)?;
    let setup = ikkyu::transcript::Setup {
        plugins_dir: ikkyu_e2e::plugins_dir()?.to_path_buf(),
        database_url: None,
    };
    transcript.run(&setup).await?;
    assert_eq!(web.received().len(), 3);
    Ok(())
}
