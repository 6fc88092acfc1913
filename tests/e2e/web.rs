//! The web entry point over real HTTP: `/healthz` and `/readyz` as a
//! supervisor asks them, `/metrics` scraped and parsed with a Prometheus
//! text parser after known traffic, and webhooks delivered signed,
//! unsigned, forged, replayed, oversized and slow to the running host.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu_e2e::hooks::{self, scrape, serve, value};
use ikkyu_e2e::proxy::Proxy;
use ikkyu_e2e::{TempPostgres, postgres_url, start_bot};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const GITHUB_SECRET: &str = "It's a Secret to Everybody — секрет 秘密";
const GITLAB_SECRET: &str = "gl-token-9f2c";

/// The emitter's two webhooks configured, one per sender, plus one the
/// emitter does not declare; a short request bound and a small body
/// limit for the tests that probe them. The GitLab secret is read from a
/// file in `data`, as an operator would keep it.
fn hooks_config(data: &Path) -> anyhow::Result<String> {
    std::fs::write(data.join("gitlab.secret"), GITLAB_SECRET)?;
    Ok(format!(
        "[web]\nmax_body_kib = 64\nrequest_timeout = \"2s\"\n\
         [plugins.emitter]\n\
         grants = [\"chat\", \"kv\", \"events\", \"schedule\", \"directory\", \"config\", \"log\"]\n\
         [plugins.emitter.webhooks.hook]\nsender = \"github\"\nsecret = {GITHUB_SECRET:?}\n\
         [plugins.emitter.webhooks.lab]\nsender = \"gitlab\"\nsecret = {{ file = \"gitlab.secret\" }}\n\
         [plugins.emitter.webhooks.ghost]\nsender = \"github\"\nsecret = \"boo\"\n"
    ))
}

fn console() -> &'static Console {
    static CONSOLE: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
    CONSOLE.get_or_init(|| Console::new(15))
}

async fn say(bot: &Bot, sink: &RecordingSink, user: &str, body: &str) -> anyhow::Result<String> {
    bot.handle(&console().message(user, body, 0)).await?;
    Ok(sink.take().join("\n"))
}

async fn get(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let r = reqwest::get(format!("{base}{path}")).await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// A GitHub `push` delivery to `path`, signed with the hook's secret.
async fn signed(
    base: &str,
    path: &str,
    delivery: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    github(base, path, delivery, body, Some(GITHUB_SECRET)).await
}

/// A GitHub `push` delivery to `path`: signed with `secret` when given.
async fn github(
    base: &str,
    path: &str,
    delivery: &str,
    body: &[u8],
    secret: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    hooks::github(&format!("{base}{path}"), "push", delivery, body, secret).await
}

on_both!(
    health_and_metrics,
    health_and_metrics_on_sqlite,
    health_and_metrics_on_postgres
);

async fn health_and_metrics(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (bot, sink) = start_bot(db_url, data, &hooks_config(data)?).await?;
    let bot = Arc::new(bot);
    let base = serve(bot.clone()).await?;

    // No chat adapter has connected yet: not healthy, not ready, and the
    // body says which part is down.
    let (status, body) = get(&base, "/healthz").await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "database: up\nchat: down (not connected yet)\n");
    let (status, body) = get(&base, "/readyz").await?;
    assert_eq!(
        (status, body.as_str()),
        (503, "starting: the chat adapter has not connected yet\n")
    );

    bot.link().up();
    assert_eq!(
        get(&base, "/healthz").await?,
        (200, "database: up\nchat: connected\n".to_owned())
    );
    assert_eq!(get(&base, "/readyz").await?, (200, "ready\n".to_owned()));
    bot.link()
        .down("cannot sync with the homeserver: connection refused");
    let (status, body) = get(&base, "/healthz").await?;
    assert_eq!(status, 503);
    assert!(
        body.contains("chat: down (cannot sync with the homeserver: connection refused)"),
        "{body}"
    );
    assert_eq!(
        get(&base, "/readyz").await?.0,
        200,
        "ready stays ready once started; health says the chat is down"
    );
    bot.link().up();

    // Known traffic: two good commands, one unknown, one refused for its
    // role, one with bad arguments, one plugin crash, and chat input of
    // every kind, none of which may become a label.
    let before = scrape(&base).await?;
    assert_eq!(value(&before, "ikkyu_commands_total", &[]), 0.0);
    assert!(
        say(&bot, &sink, "@alice:local", "!points")
            .await?
            .contains("points")
    );
    let given = say(
        &bot,
        &sink,
        "@root:local",
        "!points give @bob:local 2 didn't break prod, Привет 你好 🚀",
    )
    .await?;
    assert!(given.contains("+2"), "{given}");
    let unknown = say(&bot, &sink, "@alice:local", "!nöpe\u{0}").await?;
    assert!(!unknown.is_empty());
    let denied = say(&bot, &sink, "@alice:local", "!role grant @bob:local admin").await?;
    assert!(denied.contains("do not have permission"), "{denied}");
    let usage = say(&bot, &sink, "@root:local", "!points give @bob:local many").await?;
    assert!(usage.contains("usage"), "{usage}");
    let crash = say(&bot, &sink, "@root:local", "!emit-then-fail trap test.x {}").await?;
    assert!(crash.contains("crashed"), "{crash}");

    let m = scrape(&base).await?;
    let commands = |labels: &[(&str, &str)]| value(&m, "ikkyu_commands_total", labels);
    // plugin, declared command, outcome: how often.
    let routed = |plugin: &str, command: &str, outcome: &str| {
        commands(&[
            ("plugin", plugin),
            ("command", command),
            ("outcome", outcome),
        ])
    };
    assert_eq!(routed("points", "points", "ok"), 1.0);
    assert_eq!(routed("points", "points give", "ok"), 1.0);
    assert_eq!(routed("points", "points give", "error"), 1.0);
    assert_eq!(commands(&[("plugin", "none"), ("command", "none")]), 1.0);
    assert_eq!(routed("ikkyu", "role grant", "denied"), 1.0);
    assert_eq!(routed("emitter", "emit-then-fail", "trap"), 1.0);
    assert_eq!(commands(&[]), 6.0, "every command counted once");
    assert!(
        m.samples
            .iter()
            .all(|s| s.labels.values().all(|v| v.is_ascii())),
        "nothing anyone typed became a label"
    );
    assert_eq!(
        value(
            &m,
            "ikkyu_command_duration_seconds_count",
            &[("plugin", "points")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            "ikkyu_plugin_calls_total",
            &[("plugin", "emitter"), ("result", "trap")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "ikkyu_plugin_calls_total",
            &[("plugin", "points"), ("result", "returned")]
        ),
        2.0,
        "the call with bad arguments never reached the plugin"
    );
    assert_eq!(value(&m, "ikkyu_database_up", &[]), 1.0);
    assert_eq!(
        value(&m, "ikkyu_outbox_pending", &[]),
        0.0,
        "the console delivered every reply"
    );
    assert_eq!(value(&m, "ikkyu_jobs", &[("state", "queued")]), 0.0);
    assert_eq!(value(&m, "ikkyu_jobs", &[("state", "running")]), 0.0);
    assert_eq!(
        value(
            &m,
            "ikkyu_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(
        m.docs.contains_key("ikkyu_commands_total"),
        "each metric says what it counts"
    );

    // A command the bot answered twice (a replayed chat message) counts
    // once.
    let msg = console().message("@alice:local", "!points", 0);
    bot.handle(&msg).await?;
    bot.handle(&msg).await?;
    let m = scrape(&base).await?;
    assert_eq!(
        value(
            &m,
            "ikkyu_commands_total",
            &[("plugin", "points"), ("command", "points")]
        ),
        2.0
    );

    // An event delivered to a subscriber is counted by its outcome, and
    // waits in the gauge until then.
    say(&bot, &sink, "@root:local", "!emit test.ping {}").await?;
    let m = scrape(&base).await?;
    assert_eq!(
        value(
            &m,
            "ikkyu_event_deliveries_total",
            &[("plugin", "emitter"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(value(&m, "ikkyu_event_deliveries_pending", &[]), 0.0);

    // Anything but the routes is a plain 404.
    assert_eq!(get(&base, "/nothing/here").await?.0, 404);
    Ok(())
}

on_both!(webhooks, webhooks_on_sqlite, webhooks_on_postgres);

async fn webhooks(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (bot, sink) = start_bot(db_url, data, &hooks_config(data)?).await?;
    let bot = Arc::new(bot);
    bot.link().up();
    let base = serve(bot.clone()).await?;
    let hooked = |bot: Arc<Bot>, sink: RecordingSink| async move {
        say(&bot, &sink, "@alice:local", "!hooked").await
    };

    // A signed delivery runs the plugin, commits, and only then answers.
    let body = r#"{"ref": "refs/heads/main", "pusher": {"name": "Дмитрий 王"}}"#.as_bytes();
    let (status, text) = signed(&base, "/hooks/emitter/hook", "d-1", body).await?;
    assert_eq!((status, text.as_str()), (200, "took delivery d-1 (1)\n"));
    assert_eq!(
        hooked(bot.clone(), sink.clone()).await?,
        "took 1 deliveries; the last was \"d-1\""
    );

    // The same delivery again (a redelivery, or an attacker replaying a
    // captured request) is refused and runs nothing.
    let (status, text) = signed(&base, "/hooks/emitter/hook", "d-1", body).await?;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("d-1 was taken before"), "{text}");

    // Unsigned, signed with another secret, and a body changed after
    // signing: all refused before the plugin sees them.
    let (status, text) = github(&base, "/hooks/emitter/hook", "d-2", body, None).await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("not signed"), "{text}");
    let (status, text) = github(&base, "/hooks/emitter/hook", "d-3", body, Some("guess")).await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("does not match"), "{text}");
    let forged = reqwest::Client::new()
        .post(format!("{base}/hooks/emitter/hook"))
        .header("X-GitHub-Delivery", "d-4")
        .header(
            "X-Hub-Signature-256",
            hooks::github_signature(GITHUB_SECRET, body)?,
        )
        .body(br#"{"ref": "refs/heads/evil"}"#.to_vec())
        .send()
        .await?;
    assert_eq!(forged.status().as_u16(), 401);

    // A signed delivery without an id cannot be told from its replay.
    let r = reqwest::Client::new()
        .post(format!("{base}/hooks/emitter/hook"))
        .header(
            "X-Hub-Signature-256",
            hooks::github_signature(GITHUB_SECRET, body)?,
        )
        .body(body.to_vec())
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await?.contains("X-GitHub-Delivery"));

    // Larger than `web.max_body_kib` (64 KiB): 413, signed or not.
    let big = vec![b'x'; 65 * 1024];
    let (status, text) = signed(&base, "/hooks/emitter/hook", "d-5", &big).await?;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("64 KiB"), "{text}");

    // Not configured, configured but not declared, and a wrong method.
    assert_eq!(
        signed(&base, "/hooks/emitter/nope", "d-6", body).await?.0,
        404
    );
    assert_eq!(
        signed(&base, "/hooks/points/hook", "d-6", body).await?.0,
        404
    );
    let (status, text) = github(&base, "/hooks/emitter/ghost", "d-6", body, Some("boo")).await?;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("does not declare"), "{text}");
    assert_eq!(get(&base, "/hooks/emitter/hook").await?.0, 405);

    // A payload the plugin refuses: 422 with its reason, on record, and
    // taken (sending it again would fail the same way).
    let refuse = br#"{"fail": "error"}"#;
    let (status, text) = signed(&base, "/hooks/emitter/hook", "d-7", refuse).await?;
    assert_eq!((status, text.as_str()), (422, "refused on purpose\n"));
    assert_eq!(
        signed(&base, "/hooks/emitter/hook", "d-7", refuse).await?.0,
        409
    );
    // Signed bytes that are not JSON at all reach the plugin, which says so.
    let binary = b"\x00\xff\xfe not json";
    let (status, text) = signed(&base, "/hooks/emitter/hook", "d-8", binary).await?;
    assert_eq!(status, 422);
    assert!(text.contains("not JSON"), "{text}");

    // A crash is the plugin's fault, not the sender's: 500, on record,
    // nothing kept, and the same delivery may come again.
    let trap = br#"{"fail": "trap"}"#;
    let (status, text) = signed(&base, "/hooks/emitter/hook", "d-9", trap).await?;
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("crashed"), "{text}");
    assert_eq!(
        signed(&base, "/hooks/emitter/hook", "d-9", trap).await?.0,
        500,
        "a crashed delivery is not marked taken"
    );
    assert_eq!(
        hooked(bot.clone(), sink.clone()).await?,
        "took 1 deliveries; the last was \"d-1\"",
        "refused and crashed deliveries changed nothing"
    );

    // GitLab: the token, compared in constant time.
    let gitlab = |token: &'static str, uuid: &'static str| {
        let base = base.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/hooks/emitter/lab"))
                .header("X-Gitlab-Event", "Push Hook")
                .header("X-Gitlab-Event-UUID", uuid)
                .header("X-Gitlab-Token", token)
                .body(br#"{"object_kind": "push"}"#.to_vec())
                .send()
                .await?;
            anyhow::Ok((r.status().as_u16(), r.text().await?))
        }
    };
    assert_eq!(
        gitlab(GITLAB_SECRET, "u-1").await?,
        (200, "took delivery u-1 (2)\n".to_owned())
    );
    assert_eq!(gitlab(GITLAB_SECRET, "u-1").await?.0, 409);
    assert_eq!(gitlab("gl-token-9f2", "u-2").await?.0, 401);
    assert_eq!(gitlab("", "u-3").await?.0, 401);
    // A GitHub signature on the GitLab hook is no token.
    assert_eq!(
        github(
            &base,
            "/hooks/emitter/lab",
            "u-4",
            body,
            Some(GITLAB_SECRET)
        )
        .await?
        .0,
        401
    );

    // The deliveries' effects committed with them: the emitted events
    // reach the subscriber (the emitter itself), and only theirs. (The
    // console delivers after each line; on Matrix the commit wakes the
    // delivery loop.)
    bot.flush().await?;
    assert_eq!(
        say(&bot, &sink, "@alice:local", "!seen").await?,
        "seen 2 events"
    );

    // On record: each taken, refused or crashed delivery, never the
    // ones refused at the door.
    let audit = bot.db.audit_recent(50).await?;
    let hooks: Vec<(String, String, String)> = audit
        .iter()
        .filter(|e| e.kind == "webhook")
        .map(|e| (e.actor.clone(), e.command.clone(), e.outcome.clone()))
        .collect();
    let has = |actor: &str, command: &str, outcome: &str| {
        hooks
            .iter()
            .any(|(a, c, o)| a == actor && c == command && o == outcome)
    };
    assert!(
        has("webhook:github", "hook delivery d-1 (push)", "ok"),
        "{hooks:?}"
    );
    assert!(
        has("webhook:github", "hook delivery d-7 (push)", "error"),
        "{hooks:?}"
    );
    assert!(
        has("webhook:github", "hook delivery d-9 (push)", "trap"),
        "{hooks:?}"
    );
    assert!(
        has("webhook:gitlab", "lab delivery u-1 (Push Hook)", "ok"),
        "{hooks:?}"
    );
    assert_eq!(hooks.len(), 6, "{hooks:?}");

    // And counted, by outcome.
    let m = scrape(&base).await?;
    let hook = |name: &str, outcome: &str| {
        value(
            &m,
            "ikkyu_webhook_requests_total",
            &[("plugin", "emitter"), ("hook", name), ("outcome", outcome)],
        )
    };
    assert_eq!(hook("hook", "ok"), 1.0);
    assert_eq!(hook("hook", "replayed"), 2.0);
    assert_eq!(hook("hook", "unsigned"), 1.0);
    assert_eq!(hook("hook", "forged"), 2.0);
    assert_eq!(hook("hook", "too_large"), 1.0);
    assert_eq!(hook("hook", "refused"), 2.0);
    assert_eq!(hook("hook", "failed"), 2.0);
    assert_eq!(hook("lab", "ok"), 1.0);
    assert_eq!(hook("lab", "forged"), 2.0);
    assert_eq!(hook("lab", "unsigned"), 1.0);
    assert_eq!(hook("lab", "replayed"), 1.0);
    assert_eq!(
        value(
            &m,
            "ikkyu_webhook_requests_total",
            &[("plugin", "none"), ("outcome", "not_found")]
        ),
        2.0,
        "unknown paths are counted without their text"
    );
    Ok(())
}

/// A sender that opens a request and trickles its body is cut off at
/// `web.request_timeout` (2 s here), and others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sender_is_cut_off() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, _sink) = start_bot(
        &ikkyu_e2e::sqlite_url(data.path()),
        data.path(),
        &hooks_config(data.path())?,
    )
    .await?;
    let bot = Arc::new(bot);
    bot.link().up();
    let base = serve(bot.clone()).await?;
    let address = base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await?;
    slow.write_all(
        b"POST /hooks/emitter/hook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nX-GitHub-Delivery: s-1\r\n\r\n{",
    )
    .await?;
    let started = std::time::Instant::now();
    // Others are answered while it dawdles.
    assert_eq!(get(&base, "/healthz").await?.0, 200);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut buf = [0u8; 1024];
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
            let _ = slow.write_all(b" ").await;
        }
    })
    .await;
    assert!(read.is_ok(), "the slow request was not ended");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("web.request_timeout"), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    Ok(())
}

/// With the database gone, `/healthz` says so and a webhook is not taken
/// (503, so the sender retries); once it is back the same delivery is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_gone() -> anyhow::Result<()> {
    let Some(url) = postgres_url("the database gone") else {
        return Ok(());
    };
    let db = TempPostgres::create(&url).await?;
    let result = database_gone(&db.url).await;
    db.drop_db().await?;
    result
}

async fn database_gone(url: &str) -> anyhow::Result<()> {
    let (proxy, via) = Proxy::before_postgres(url).await?;
    let data = tempfile::tempdir()?;
    let (bot, sink) = start_bot(&via, data.path(), &hooks_config(data.path())?).await?;
    let bot = Arc::new(bot);
    bot.link().up();
    let base = serve(bot.clone()).await?;
    assert_eq!(get(&base, "/healthz").await?.0, 200);

    proxy.cut();
    let (status, body) = get(&base, "/healthz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("database: down ("), "{body}");
    assert!(body.ends_with("chat: connected\n"), "{body}");
    assert_eq!(get(&base, "/readyz").await?.0, 503);
    let m = scrape(&base).await?;
    assert_eq!(
        value(&m, "ikkyu_database_up", &[]),
        0.0,
        "metrics still answer"
    );

    let body = br#"{"ref": "refs/heads/main"}"#;
    let (status, text) = signed(&base, "/hooks/emitter/hook", "o-1", body).await?;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("send it again"), "{text}");

    proxy.restore();
    let mut back = false;
    for _ in 0..50 {
        if get(&base, "/healthz").await?.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "healthy again once the database is back");
    let (status, text) = signed(&base, "/hooks/emitter/hook", "o-1", body).await?;
    assert_eq!((status, text.as_str()), (200, "took delivery o-1 (1)\n"));
    assert_eq!(
        say(&bot, &sink, "@alice:local", "!hooked").await?,
        "took 1 deliveries; the last was \"o-1\""
    );
    Ok(())
}

/// The real `ikkyu console` serves the entry point on `web.listen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_health_and_metrics() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut console = ikkyu_e2e::process::ConsoleProcess::start(
        &ikkyu_e2e::sqlite_url(data.path()),
        data.path(),
        "@alice:local",
        "[plugins.points]\ngrants = [\"chat\", \"kv\", \"events\", \"directory\", \"config\", \"log\"]\n",
    )?;
    let base = format!("http://{}", console.web_address().await?);
    assert_eq!(
        get(&base, "/healthz").await?,
        (200, "database: up\nchat: connected\n".to_owned())
    );
    console.say("!points").await?;
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = value(
            &scrape(&base).await?,
            "ikkyu_commands_total",
            &[
                ("plugin", "points"),
                ("command", "points"),
                ("outcome", "ok"),
            ],
        );
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 1.0);
    console.kill().await
}
