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
        // Any free port, so consoles of tests running at once never
        // compete for the default one.
        let web = if extra.contains("[web]") {
            ""
        } else {
            "[web]\nlisten = \"127.0.0.1:0\"\n"
        };
        let text = format!(
            "{web}[database]\nurl = {db_url:?}\n[runtime]\nplugins_dir = {plugins:?}\nwatch = false\n{extra}"
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

    /// Where its web entry point listens, once its log says.
    pub async fn web_address(&self) -> anyhow::Result<String> {
        crate::web_address(|| self.log()).await
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
/// process group (the job's pid is its group id).
///
/// The signal is sent directly, never through the `kill` program: procps-ng
/// 4.0.2's `kill -KILL -262` signals group 2, reading one digit, so a job
/// whose pid began with 1 became `kill(-1)` and took down every process on
/// the machine (the CI run and the database with it).
pub fn kill_job_group(pid: Option<i64>) {
    let group = pid
        .filter(|p| *p > 1)
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;
    use std::time::{Duration, Instant};

    /// The whole group goes, the leader and what it started, and only it:
    /// the test process (which signals) lives on.
    #[tokio::test]
    async fn kill_job_group_stops_the_group_and_only_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pidfile = dir.path().join("grandchild");
        let mut leader = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("sleep 60 & echo $! > {}; wait", pidfile.display()))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let until = Instant::now() + Duration::from_secs(10);
        let grandchild = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break pid;
            }
            anyhow::ensure!(Instant::now() < until, "the job never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let pid = leader.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
        super::kill_job_group(Some(i64::from(pid)));
        let status = tokio::time::timeout(Duration::from_secs(10), leader.wait()).await??;
        assert_eq!(status.signal(), Some(9), "{status}");
        let until = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie waiting for init to reap it.
        while std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
        {
            anyhow::ensure!(Instant::now() < until, "what the job started lives on");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Pid 0 and 1 would mean our own group and every process.
        super::kill_job_group(Some(0));
        super::kill_job_group(Some(1));
        super::kill_job_group(Some(-1));
        Ok(())
    }
}
