//! Helpers shared by ikkyu's end-to-end tests: building the plugins once,
//! finding transcripts, and creating throwaway PostgreSQL databases.
//!
//! Nothing here fakes a component: plugins are the real wasm files built
//! by `cargo xtask plugins`, databases are real SQLite files and a real
//! PostgreSQL server.

pub mod hooks;
pub mod matrix;
pub mod process;
pub mod proxy;
pub mod synapse;
pub mod trackers;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use std::sync::Arc;

use anyhow::{Context, bail};
use ikkyu::bot::Bot;
use ikkyu::chat::console::RecordingSink;
use ikkyu::clock::{SharedClock, SystemClock};
use ikkyu::config::Config;
use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A folder holding every plugin, shipped and test-only, as `<name>.wasm`;
/// built once per test process with `cargo xtask plugins` (a no-op when
/// nothing changed), so tests always run the current plugin code.
pub fn plugins_dir() -> anyhow::Result<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| build_plugins().map_err(|e| format!("{e:#}")))
        .as_deref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn build_plugins() -> anyhow::Result<PathBuf> {
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(&root)
        .args(["xtask", "plugins"])
        .status()
        .context("running cargo xtask plugins")?;
    if !st.success() {
        bail!("cargo xtask plugins failed with {st}");
    }
    let all = root.join("target/all-plugins");
    std::fs::create_dir_all(&all)?;
    for dir in ["target/plugins", "target/test-plugins"] {
        for entry in std::fs::read_dir(root.join(dir))? {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, all.join(name))?;
            }
        }
    }
    Ok(all)
}

/// Every transcript: each plugin's `tests/*.chat` and the cross-plugin
/// ones in `tests/transcripts`.
pub fn transcripts() -> anyhow::Result<Vec<PathBuf>> {
    let root = root();
    let mut dirs = vec![root.join("tests/transcripts")];
    for entry in std::fs::read_dir(root.join("plugins"))? {
        dirs.push(entry?.path().join("tests"));
    }
    let mut files = Vec::new();
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "chat") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The PostgreSQL server to test against, from IKKYU_TEST_POSTGRES_URL.
/// None (and a line saying the tests were skipped) when it is not set.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("IKKYU_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped {test} on PostgreSQL: IKKYU_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A database created for one test on the PostgreSQL server and dropped
/// by [`TempPostgres::drop_db`].
#[derive(Debug)]
pub struct TempPostgres {
    admin_url: String,
    name: String,
    /// URL of the new database.
    pub url: String,
}

impl TempPostgres {
    /// Creates an empty database with a unique name.
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "ikkyu_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await?;
        pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        pool.close().await;
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// Drops the database, closing any connection still open to it.
    pub async fn drop_db(self) -> anyhow::Result<()> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin_url)
            .await?;
        pool.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .await?;
        pool.close().await;
        Ok(())
    }
}

/// Starts a bot on `db_url` with every plugin granted everything,
/// `@root:local` as admin, and `extra` TOML appended to the config; its
/// messages are recorded in the returned sink.
pub async fn start_bot(
    db_url: &str,
    data: &Path,
    extra: &str,
) -> anyhow::Result<(Bot, RecordingSink)> {
    start_bot_with(db_url, data, plugins_dir()?, extra).await
}

/// [`start_bot`] with the plugins in `plugins`.
pub async fn start_bot_with(
    db_url: &str,
    data: &Path,
    plugins: &Path,
    extra: &str,
) -> anyhow::Result<(Bot, RecordingSink)> {
    start_bot_full(db_url, data, plugins, extra, Arc::new(SystemClock)).await
}

/// [`start_bot`] on `clock`, for tests that move time themselves.
pub async fn start_bot_at(
    db_url: &str,
    data: &Path,
    extra: &str,
    clock: SharedClock,
) -> anyhow::Result<(Bot, RecordingSink)> {
    start_bot_full(db_url, data, plugins_dir()?, extra, clock).await
}

/// [`start_bot_at`] delivering to `sink`, for tests of delivery itself.
pub async fn start_bot_into(
    db_url: &str,
    data: &Path,
    extra: &str,
    clock: SharedClock,
    sink: Arc<dyn ikkyu::chat::ChatSink>,
) -> anyhow::Result<Bot> {
    let config = test_config(db_url, data, plugins_dir()?, extra)?;
    Bot::start(&config, sink, clock).await
}

async fn start_bot_full(
    db_url: &str,
    data: &Path,
    plugins: &Path,
    extra: &str,
    clock: SharedClock,
) -> anyhow::Result<(Bot, RecordingSink)> {
    let config = test_config(db_url, data, plugins, extra)?;
    let sink = RecordingSink::default();
    Ok((
        Bot::start(&config, Arc::new(sink.clone()), clock).await?,
        sink,
    ))
}

/// Every plugin granted everything, `@root:local` as admin, `extra` TOML
/// appended; a plugin whose section is in `extra` gets that one instead,
/// and so do the roles.
fn test_config(db_url: &str, data: &Path, plugins: &Path, extra: &str) -> anyhow::Result<Config> {
    let all = r#"grants = ["chat", "kv", "events", "schedule", "directory", "config", "log", "http", "jobs"]"#;
    let sections: String = [
        "points",
        "emitter",
        "misbehave",
        "contacts",
        "oncall",
        "release",
        "worker",
    ]
    .iter()
    .filter(|p| !extra.contains(&format!("[plugins.{p}]")))
    .map(|p| format!("[plugins.{p}]\n{all}\n"))
    .collect();
    // Roles in `extra` replace the default admin (TOML has one [roles]).
    let roles = if extra.contains("[roles]") {
        ""
    } else {
        "[roles]\nadmin = [\"@root:local\"]\n"
    };
    let text = format!(
        "[database]\nurl = {db_url:?}\n{roles}{sections}\
         [plugins.announce]\n{all}\nrooms = [\"*\"]\n\
         [runtime]\nplugins_dir = {plugins:?}\n{extra}"
    );
    Ok(Config::parse(&text, Path::new("test.toml"), data)?)
}

/// Where a bot process's web entry point listens, read from its `log`
/// once the line saying so is there (within 30 s).
pub async fn web_address(log: impl Fn() -> String) -> anyhow::Result<String> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = log();
        let found = text
            .lines()
            .filter(|l| l.contains("web entry point listening"))
            .find_map(|l| l.split_once("address=").map(|(_, a)| a.trim().to_owned()));
        if let Some(address) = found {
            return Ok(address);
        }
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "the bot never said where it listens; its log:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A SQLite URL for a database file in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("ikkyu.db").display())
}

/// This process's resident memory, in KiB (Linux).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Held by tests that measure this process's memory, so two of them never
/// run at once and count each other's allocations.
pub async fn memory_test() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The shell scripts tests run as jobs (`tests/scripts`), as an absolute
/// path; `${SCRIPTS}` in a transcript.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// The audit record of a command by `actor` at `at_ms`, as a test writes
/// straight to the store.
pub fn command_record(actor: &str, command: &str, at_ms: i64) -> ikkyu::store::AuditRecord {
    ikkyu::store::AuditRecord {
        at_ms,
        kind: "command",
        actor: actor.into(),
        room: None,
        command: command.into(),
        plugin: None,
        plugin_version: None,
        decision: ikkyu::store::Decision::NotChecked,
        outcome: ikkyu::store::Outcome::Ok,
        detail: None,
        duration_us: 0,
    }
}
