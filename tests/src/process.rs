//! The bot as a real `ikkyu console` process, for tests that kill it with
//! SIGKILL mid-work and start it again in process on the same folder; and
//! the marker files test jobs append to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use ikkyu::bot::Bot;
use ikkyu::chat::console::RecordingSink;
use tokio::io::AsyncWriteExt;

/// A running `ikkyu console` on a config of the test's.
pub struct ConsoleProcess {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    /// Its config file.
    pub config: PathBuf,
    log: PathBuf,
}

impl ConsoleProcess {
    /// Writes `extra` (TOML after the database and runtime sections) as
    /// the config in `dir` and starts `ikkyu console --as user` on it.
    pub fn start(db_url: &str, dir: &Path, user: &str, extra: &str) -> anyhow::Result<Self> {
        let plugins = crate::plugins_dir()?;
        let text = format!(
            "[database]\nurl = {db_url:?}\n[runtime]\nplugins_dir = {plugins:?}\nwatch = false\n{extra}"
        );
        let config = dir.join("ikkyu.toml");
        std::fs::write(&config, text)?;
        let log = dir.join("console.log");
        let mut child = tokio::process::Command::new(crate::matrix::ikkyu_binary()?)
            .arg("--config")
            .arg(&config)
            .args(["console", "--as", user])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting ikkyu console")?;
        let stdin = child.stdin.take().context("the console's stdin")?;
        Ok(Self {
            child,
            stdin,
            config,
            log,
        })
    }

    /// Types `line`.
    pub async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// The bot started again in this process on the same config.
    pub async fn restart(config: &Path) -> anyhow::Result<(Bot, RecordingSink)> {
        let cfg = ikkyu::config::Config::load(config)?;
        let sink = RecordingSink::default();
        let bot = Bot::start(
            &cfg,
            Arc::new(sink.clone()),
            Arc::new(ikkyu::clock::SystemClock),
        )
        .await?;
        Ok((bot, sink))
    }
}

/// Stops what a job left running after the bot that ran it died: its
/// process group.
pub fn kill_job_group(pid: Option<i64>) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &format!("-{pid}")])
            .status();
    }
}

/// The lines test jobs appended to the marker file `mark`.
pub fn marks(mark: &Path) -> Vec<String> {
    std::fs::read_to_string(mark)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
