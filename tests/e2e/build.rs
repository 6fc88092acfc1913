//! Builds against real git repositories the tests make: the shipped change
//! detection (`scripts/git-changes.sh`) and a build script
//! (`tests/scripts/build-service.sh`) that appends "<env> <service>
//! <commit>" to a marker file and fails when the commit has
//! `<service>/FAIL`. Each test reads which services were built at which
//! commit: only what changed, shared files building everything of their
//! repository, a failed service staying due until green, a signed push
//! and a cron doing the same as a person, and a push during a build
//! coalesced into one follow-up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu::clock::{ManualClock, SharedClock};
use ikkyu_e2e::hooks::{github, scrape, serve, value};
use ikkyu_e2e::process::marks;
use ikkyu_e2e::{root, scripts_dir, start_bot, start_bot_at};

const SECRET: &str = "push-secret-😀";

fn console() -> &'static Console {
    static CONSOLE: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
    CONSOLE.get_or_init(|| Console::new(23))
}

async fn say(bot: &Bot, sink: &RecordingSink, who: &str, body: &str) -> anyhow::Result<String> {
    bot.handle(&console().message(who, body, bot.now_ms()))
        .await?;
    Ok(sink.take().join("\n"))
}

/// A git repository made by the test.
struct Repo {
    dir: PathBuf,
}

impl Repo {
    fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let repo = Self { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"])?;
        Ok(repo)
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Writes `files` (an empty text removes the file) and commits them as
    /// `author`: the new commit.
    fn commit(&self, author: &str, files: &[(&str, &str)]) -> anyhow::Result<String> {
        for (path, text) in files {
            let file = self.dir.join(path);
            if text.is_empty() {
                std::fs::remove_file(&file)?;
            } else {
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&file, text)?;
            }
        }
        self.git(&["add", "--all"])?;
        self.git(&[
            "-c",
            &format!("user.name={author}"),
            "-c",
            "user.email=dev@example.org",
            "commit",
            "--quiet",
            "-m",
            "change",
        ])?;
        self.git(&["rev-parse", "HEAD"])
    }
}

/// Two repositories: `shop` (services api and web, a shared Cargo.lock)
/// and `tools` (service cli).
fn repos(data: &Path) -> anyhow::Result<(Repo, Repo)> {
    let shop = Repo::new(data.join("git/shop"))?;
    shop.commit(
        "Ann",
        &[
            ("api/main.rs", "fn main() {}"),
            ("web/index.js", "1"),
            ("Cargo.lock", "v1"),
            ("README", "shop"),
        ],
    )?;
    let tools = Repo::new(data.join("git/tools"))?;
    tools.commit(
        "Li Wei 李伟",
        &[("cli/main.go", "package main"), ("docs/a.md", "a")],
    )?;
    Ok((shop, tools))
}

/// The jobs and the build plugin over the two repositories; builds wait
/// `sleep` seconds; `extra` goes under the dev environment.
fn config(data: &Path, sleep: u32, extra: &str) -> String {
    let scripts = scripts_dir().display().to_string();
    let detect = root().join("scripts/git-changes.sh").display().to_string();
    let git = |name: &str| data.join("git").join(name).display().to_string();
    let mark = data.join("mark").display().to_string();
    let cache = data.join("git-cache").display().to_string();
    format!(
        "[jobs]\nkill_grace = \"1s\"\n\
         [jobs.git-changes]\nargv = [{detect:?}, \"{{repo}}\", \"{{branch}}\", \"{{since}}\"]\n\
         params = {{ repo = \"[A-Za-z0-9@:/._~+-]{{1,300}}\", branch = \"[A-Za-z0-9._/-]{{1,100}}\", since = \"[0-9a-f]{{0,64}}\" }}\n\
         env = {{ IKKYU_GIT_CACHE = {cache:?} }}\n\
         [jobs.build]\nargv = [\"{scripts}/build-service.sh\", \"{{service}}\", \"{{repo}}\", \"{{commit}}\", \"{{env}}\"]\n\
         params = {{ service = \"[a-z0-9_-]{{1,64}}\", repo = \"[A-Za-z0-9@:/._~+-]{{1,300}}\", commit = \"[0-9a-f]{{7,64}}\", env = \"[a-z0-9_-]{{1,64}}\" }}\n\
         env = {{ MARK = {mark:?}, SLEEP = \"{sleep}\" }}\n\
         [plugins.build]\ngrants = [\"chat\", \"kv\", \"events\", \"schedule\", \"jobs\", \"config\", \"log\"]\n\
         jobs = [\"git-changes\", \"build\"]\nrooms = [\"*\"]\n\
         [plugins.build.webhooks.push]\nsender = \"github\"\nsecret = {SECRET:?}\n\
         [plugins.build.config.repos.shop]\nurl = {shop:?}\nshared = [\"Cargo.lock\"]\nwebhook_name = \"acme/shop\"\n\
         [plugins.build.config.repos.tools]\nurl = {tools:?}\nwebhook_name = \"acme/tools\"\n\
         [plugins.build.config.services.api]\nrepo = \"shop\"\npaths = [\"api/\"]\n\
         [plugins.build.config.services.web]\nrepo = \"shop\"\npaths = [\"web/\"]\n\
         [plugins.build.config.services.cli]\nrepo = \"tools\"\npaths = [\"cli/\"]\n\
         [plugins.build.config.environments.dev]\nroom = \"!dev:local\"\n{extra}",
        shop = git("shop"),
        tools = git("tools"),
    )
}

/// Which builds ran since the last look: "<service> <commit>" each.
fn new_marks(data: &Path, seen: &mut usize) -> Vec<String> {
    let all = marks(&data.join("mark"));
    let new: Vec<String> = all
        .iter()
        .skip(*seen)
        .map(|l| l.trim_start_matches("dev ").to_owned())
        .collect();
    *seen = all.len();
    let mut new = new;
    new.sort();
    new
}

/// The `build.finished` events on record, oldest first.
async fn finished_events(db_url: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(db_url)
        .await?;
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM events WHERE topic = 'build.finished' ORDER BY id")
            .fetch_all(&pool)
            .await?;
    pool.close().await;
    rows.iter().map(|r| Ok(serde_json::from_str(r)?)).collect()
}

async fn settle(bot: &Bot) -> anyhow::Result<()> {
    anyhow::ensure!(
        bot.settle_jobs(Duration::from_secs(60)).await?,
        "jobs did not finish"
    );
    Ok(())
}

async fn builds_only_what_changed(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (shop, tools) = repos(data)?;
    let (bot, sink) = start_bot(db_url, data, &config(data, 0, "")).await?;
    let mut seen = 0;
    let shop_head = shop.git(&["rev-parse", "HEAD"])?;
    let tools_head = tools.git(&["rev-parse", "HEAD"])?;

    // Never built: everything builds, and the reply and message say why.
    let reply = say(&bot, &sink, "@ann:local", "!build dev").await?;
    assert!(
        reply.contains("build 1 in dev: checking api, cli and web for changes since their last green builds; progress is posted in !dev:local."),
        "{reply}"
    );
    settle(&bot).await?;
    assert_eq!(
        new_marks(data, &mut seen),
        [
            format!("api {shop_head}"),
            format!("cli {tools_head}"),
            format!("web {shop_head}")
        ]
    );
    let posted = sink.take().join("\n");
    assert!(
        posted.contains("**Build 1 in dev** (asked by @ann:local) — done: 3 green"),
        "{posted}"
    );
    assert!(
        posted.contains(&format!(
            "- cli: ✅ green `{}` by Li Wei 李伟",
            &tools_head[..10]
        )),
        "{posted}"
    );
    assert!(posted.contains("(never built here before)"), "{posted}");
    let mut told: Vec<(String, String, String)> = finished_events(db_url)
        .await?
        .iter()
        .map(|e| {
            (
                e["service"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
                e["commit"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    told.sort();
    assert_eq!(
        told,
        [
            ("api".into(), "succeeded".into(), shop_head.clone()),
            ("cli".into(), "succeeded".into(), tools_head.clone()),
            ("web".into(), "succeeded".into(), shop_head.clone()),
        ],
        "one build.finished per service"
    );

    // Nothing changed: nothing builds, and the message lists what was
    // checked.
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    assert!(new_marks(data, &mut seen).is_empty());
    let posted = sink.take().join("\n");
    assert!(
        posted.contains("**Build 2 in dev** (asked by @ann:local) — nothing to build"),
        "{posted}"
    );
    for service in ["api", "cli", "web"] {
        assert!(
            posted.contains(&format!("- {service}: up to date, nothing changed since")),
            "{posted}"
        );
    }

    // One service's files: only it builds.
    let web_change = shop.commit("Bob", &[("web/index.js", "2")])?;
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    assert_eq!(new_marks(data, &mut seen), [format!("web {web_change}")]);
    assert!(sink.take().join("\n").contains("(changed: web/index.js)"));

    // A file outside every service changes nothing; the shared lockfile
    // builds every service of its repository, and only those.
    tools.commit("Li Wei 李伟", &[("docs/a.md", "b")])?;
    let lock = shop.commit("Bob", &[("Cargo.lock", "v2")])?;
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    assert_eq!(
        new_marks(data, &mut seen),
        [format!("api {lock}"), format!("web {lock}")]
    );
    assert!(
        sink.take()
            .join("\n")
            .contains("(shared file changed: Cargo.lock)")
    );

    // A broken commit: api fails, with its output in the message.
    let broken = shop.commit("Carol", &[("api/FAIL", "mismatched types, Привет")])?;
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    assert_eq!(new_marks(data, &mut seen), [format!("api {broken}")]);
    let posted = sink.take().join("\n");
    assert!(posted.contains("— done: 0 green, 1 failed"), "{posted}");
    assert!(
        posted.contains(&format!("- api: ❌ failed `{}` by Carol", &broken[..10])),
        "{posted}"
    );
    assert!(
        posted.contains("error[E0308]: api does not compile: mismatched types, Привет"),
        "{posted}"
    );
    let status = say(&bot, &sink, "@bob:local", "!build status").await?;
    assert!(
        status.contains("- dev: api (failed in build 5), and whatever changed"),
        "{status}"
    );
    assert!(
        status.contains("Build 5 in dev (asked by @ann:local) — done: 0 green, 1 failed"),
        "{status}"
    );

    // A failed service stays due with nothing new of it; the fix builds green.
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    assert_eq!(new_marks(data, &mut seen), [format!("api {broken}")]);
    assert!(
        sink.take()
            .join("\n")
            .contains("(failed in build 5; due until it builds green)")
    );
    let fixed = shop.commit("Carol", &[("api/FAIL", "")])?;
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    assert_eq!(new_marks(data, &mut seen), [format!("api {fixed}")]);
    let status = say(&bot, &sink, "@bob:local", "!build status").await?;
    assert!(
        status.contains("- dev: nothing beyond what changed"),
        "{status}"
    );

    // Named services build whether or not they changed.
    let reply = say(
        &bot,
        &sink,
        "@ann:local",
        "!build dev --service cli --service cli",
    )
    .await?;
    assert!(reply.contains("building cli as asked"), "{reply}");
    settle(&bot).await?;
    let tools_now = tools.git(&["rev-parse", "HEAD"])?;
    assert_eq!(new_marks(data, &mut seen), [format!("cli {tools_now}")]);

    // What people get wrong gets a reply that says what to do, and
    // changes nothing.
    for (line, says) in [
        (
            "!build prod",
            "there is no environment `prod`; the environments are: dev",
        ),
        (
            "!build прод",
            "there is no environment `прод`; the environments are: dev",
        ),
        (
            "!build dev --service billing",
            "there is no service `billing`; the services are: api, cli, web",
        ),
        ("!build", "usage"),
        ("!build status 99", "there is no build 99"),
        ("!build status -1", "there is no build -1"),
    ] {
        let reply = say(&bot, &sink, "@ann:local", line).await?;
        assert!(reply.contains(says), "{line}: {reply}");
    }
    settle(&bot).await?;
    assert!(new_marks(data, &mut seen).is_empty());
    let detail = say(&bot, &sink, "@ann:local", "!build status 3").await?;
    assert!(
        detail.starts_with("**Build 3 in dev** (asked by @ann:local) — done: 1 green"),
        "{detail}"
    );
    bot.shutdown().await;
    Ok(())
}
on_both!(
    builds_only_what_changed,
    builds_only_what_changed_sqlite,
    builds_only_what_changed_postgres
);

/// A signed push builds what it changed on the environments of its
/// branch; a forged one is refused; a push to another branch or a tag
/// builds nothing; the same delivery twice builds once.
async fn a_push_builds_what_it_changed(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let (shop, _tools) = repos(data)?;
    let (bot, sink) = start_bot(
        db_url,
        data,
        &config(data, 0, "[plugins.build.config.environments.staging]\nroom = \"!staging:local\"\nbranch = \"release\"\n"),
    )
    .await?;
    let bot = Arc::new(bot);
    let base = serve(bot.clone()).await?;
    let url = format!("{base}/hooks/build/push");
    let mut seen = 0;
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    new_marks(data, &mut seen);
    sink.take();

    let api = shop.commit("Дмитрий", &[("api/main.rs", "fn main() { run() }")])?;
    let payload = |branch: &str, after: &str| {
        format!(
            r#"{{"ref": "refs/heads/{branch}", "after": "{after}", "repository": {{"full_name": "acme/shop"}},
                "pusher": {{"name": "Дмитрий"}}, "commits": [{{"modified": ["api/main.rs"]}}]}}"#
        )
    };
    let body = payload("main", &api);
    let (status, text) = github(&url, "push", "p-1", body.as_bytes(), Some("forged")).await?;
    assert_eq!(status, 401, "{text}");
    let (status, text) = github(&url, "push", "p-1", body.as_bytes(), Some(SECRET)).await?;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("build 2 in dev checking api and web for changes"),
        "{text}"
    );
    settle(&bot).await?;
    assert_eq!(new_marks(data, &mut seen), [format!("api {api}")]);
    let posted = sink.take().join("\n");
    assert!(
        posted.contains("**Build 2 in dev** (push by Дмитрий) — done: 1 green"),
        "{posted}"
    );
    assert!(posted.contains("- web: up to date"), "{posted}");

    let (status, _) = github(&url, "push", "p-1", body.as_bytes(), Some(SECRET)).await?;
    assert_eq!(status, 409, "the same delivery again builds nothing");
    let (status, text) = github(
        &url,
        "push",
        "p-2",
        payload("feature/x", &api).as_bytes(),
        Some(SECRET),
    )
    .await?;
    assert_eq!(
        (status, text.as_str()),
        (
            200,
            "no environment builds branch feature/x of acme/shop; nothing to do\n"
        )
    );
    let tag = format!(r#"{{"ref": "refs/tags/v1", "after": "{api}"}}"#);
    let (status, text) = github(&url, "push", "p-3", tag.as_bytes(), Some(SECRET)).await?;
    assert_eq!(
        (status, text.as_str()),
        (200, "refs/tags/v1 is not a branch; nothing to build\n")
    );
    let (status, text) = github(&url, "ping", "p-4", b"{}", Some(SECRET)).await?;
    assert_eq!(status, 200, "{text}");
    let stranger = r#"{"ref": "refs/heads/main", "after": "1234567", "repository": {"full_name": "evil/repo"}}"#;
    let (status, text) = github(&url, "push", "p-5", stranger.as_bytes(), Some(SECRET)).await?;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("\"evil/repo\" is not configured"), "{text}");
    settle(&bot).await?;
    assert!(new_marks(data, &mut seen).is_empty());

    // /metrics tells the same story.
    let m = scrape(&base).await?;
    let hook = |outcome: &str| {
        value(
            &m,
            "ikkyu_webhook_requests_total",
            &[("plugin", "build"), ("hook", "push"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (
            hook("ok"),
            hook("forged"),
            hook("replayed"),
            hook("refused")
        ),
        (4.0, 1.0, 1.0, 1.0)
    );
    // Build 1: a detection per repository and three builds; the push: one
    // detection (api and web share their green commit) and api's build.
    assert_eq!(
        value(
            &m,
            "ikkyu_jobs_finished_total",
            &[("plugin", "build"), ("outcome", "ok")]
        ),
        7.0
    );
    assert_eq!(value(&m, "ikkyu_jobs", &[("state", "running")]), 0.0);
    assert_eq!(
        value(
            &m,
            "ikkyu_commands_total",
            &[("plugin", "build"), ("command", "build"), ("outcome", "ok")]
        ),
        1.0
    );
    bot.shutdown().await;
    Ok(())
}
on_both!(
    a_push_builds_what_it_changed,
    a_push_builds_what_it_changed_sqlite,
    a_push_builds_what_it_changed_postgres
);

/// The environment's cron builds what is due: the service that failed is
/// built again, the unchanged ones are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_builds_only_what_is_due() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data = data.path();
    let (shop, _tools) = repos(data)?;
    // 2026-12-05 09:59 UTC; the cron fires at 10:00.
    let start = 1_796_464_740_000;
    let clock = Arc::new(ManualClock::new(start));
    let shared: SharedClock = clock.clone();
    let (bot, sink) = start_bot_at(
        &ikkyu_e2e::sqlite_url(data),
        data,
        &config(data, 0, "cron = \"0 10 * * *\"\nzone = \"UTC\"\n"),
        shared,
    )
    .await?;
    // The scheduler's first pass stores the declared cron, as a running
    // bot's does at start.
    bot.run_due_schedules().await?;
    let mut seen = 0;
    let broken = shop.commit("Carol", &[("web/FAIL", "missing semicolon")])?;
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    assert_eq!(new_marks(data, &mut seen).len(), 3);
    sink.take();

    clock.set(start + 61_000);
    bot.run_due_schedules().await?;
    settle(&bot).await?;
    let audit: Vec<String> = bot
        .db
        .audit_recent(10)
        .await?
        .iter()
        .map(|e| format!("{} {} {} {:?}", e.kind, e.command, e.outcome, e.detail))
        .collect();
    assert_eq!(
        new_marks(data, &mut seen),
        [format!("web {broken}")],
        "only the failed one; {audit:#?}"
    );
    let posted = sink.take().join("\n");
    assert!(
        posted.contains("**Build 2 in dev** (on schedule)"),
        "{posted}"
    );
    assert!(posted.contains("- api: up to date"), "{posted}");
    bot.shutdown().await;
    Ok(())
}

/// A newer commit that comes while a service builds is not built beside
/// it: it waits, and every such commit is built once, after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_a_build_follows_it_once() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data = data.path();
    let (shop, _tools) = repos(data)?;
    let (bot, sink) = start_bot(&ikkyu_e2e::sqlite_url(data), data, &config(data, 2, "")).await?;
    let mut seen = 0;
    let first = shop.git(&["rev-parse", "HEAD"])?;
    say(&bot, &sink, "@ann:local", "!build dev --service web").await?;
    // Until web's build is under way.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !marks(&data.join("mark")).iter().any(|m| m.contains("web")) {
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "web's build never started"
        );
        // Runs the jobs for a moment, leaving them running.
        bot.settle_jobs(Duration::from_millis(200)).await?;
    }
    let second = shop.commit("Bob", &[("web/index.js", "3")])?;
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    let third = shop.commit("Bob", &[("web/index.js", "4")])?;
    say(&bot, &sink, "@ann:local", "!build dev").await?;
    settle(&bot).await?;
    let built = new_marks(data, &mut seen);
    let mut expected = [format!("web {first}"), format!("web {third}")];
    expected.sort();
    assert_eq!(
        built
            .iter()
            .filter(|m| m.starts_with("web "))
            .cloned()
            .collect::<Vec<_>>(),
        expected,
        "web built at the first commit, then once at the newest: {built:?}"
    );
    let _ = second;
    let posted = sink.take().join("\n");
    assert!(
        posted
            .contains("- web: already building in build 1; the newer commit builds right after it"),
        "{posted}"
    );
    assert!(posted.contains("(follow-up of build 1)"), "{posted}");
    bot.shutdown().await;
    Ok(())
}
