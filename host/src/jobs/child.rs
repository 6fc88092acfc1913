//! One run of a job as a child process: its own process group (so a
//! timeout or cancel reaches everything it started), a clean environment
//! (the bot's own variables, which may hold its secrets, are not passed
//! on), output captured into a [`Tail`], TERM then KILL at the deadline.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::Job;
use super::tail::{Stream, Tail};
use crate::store::JobState;

/// Variables a job inherits from the bot, if set; everything else it gets
/// from its own `env`.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "TZ"];
/// How long output may still arrive after the job's process exited before
/// what it left running in its group is killed.
const DRAIN: Duration = Duration::from_secs(1);

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Succeeded, failed, timed out or cancelled.
    pub state: JobState,
    /// The exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Why it failed, in words.
    pub error: Option<String>,
}

/// Runs `argv` for `job` until it exits, its timeout passes or `cancel`
/// fires; output goes into `tail`, the process id to `started` once known.
pub async fn run(
    job: &Job,
    argv: &[String],
    tail: Arc<Mutex<Tail>>,
    cancel: Arc<tokio::sync::Notify>,
    grace: Duration,
    started: impl FnOnce(u32),
) -> Ended {
    let Some((program, args)) = argv.split_first() else {
        return failed(None, "the job has no program".into());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(&job.dir)
        .env_clear()
        .envs(
            INHERITED
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return failed(None, format!("could not start {program}: {e}")),
    };
    let pid = child.id();
    if let Some(pid) = pid {
        started(pid);
    }
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out_tail, err_tail) = (tail.clone(), tail.clone());
    // Read while it runs, so a chatty job never blocks on a full pipe.
    let mut readers = tokio::spawn(async move {
        tokio::join!(
            async move {
                if let Some(s) = stdout {
                    read_into(s, Stream::Out, out_tail).await;
                }
            },
            async move {
                if let Some(s) = stderr {
                    read_into(s, Stream::Err, err_tail).await;
                }
            }
        )
    });
    let stop = tokio::select! {
        status = child.wait() => Ok(status),
        () = tokio::time::sleep(job.timeout) => Err(JobState::TimedOut),
        () = cancel.notified() => Err(JobState::Cancelled),
    };
    let status = match stop {
        Ok(status) => status,
        Err(why) => {
            signal(pid, rustix::process::Signal::TERM);
            let status = match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal(pid, rustix::process::Signal::KILL);
                    child.wait().await
                }
            };
            // Whatever the group left behind goes too.
            signal(pid, rustix::process::Signal::KILL);
            let _ = tokio::time::timeout(DRAIN, &mut readers).await;
            readers.abort();
            finish_tail(&tail);
            let what = if why == JobState::TimedOut {
                format!(
                    "still running after {}; stopped",
                    humantime::format_duration(job.timeout)
                )
            } else {
                "cancelled; stopped".to_owned()
            };
            return Ended {
                state: why,
                exit_code: status.ok().and_then(|s| s.code()),
                error: Some(what),
            };
        }
    };
    if tokio::time::timeout(DRAIN, &mut readers).await.is_err() {
        // Something it started still holds its output open.
        signal(pid, rustix::process::Signal::KILL);
        let _ = tokio::time::timeout(DRAIN, &mut readers).await;
    }
    readers.abort();
    finish_tail(&tail);
    match status {
        Ok(s) if s.success() => Ended {
            state: JobState::Succeeded,
            exit_code: Some(0),
            error: None,
        },
        Ok(s) => match s.code() {
            Some(code) => failed(Some(code), format!("exited with code {code}")),
            None => {
                use std::os::unix::process::ExitStatusExt;
                failed(
                    None,
                    format!("killed by signal {}", s.signal().unwrap_or_default()),
                )
            }
        },
        Err(e) => failed(None, format!("waiting for it failed: {e}")),
    }
}

fn failed(exit_code: Option<i32>, error: String) -> Ended {
    Ended {
        state: JobState::Failed,
        exit_code,
        error: Some(error),
    }
}

fn finish_tail(tail: &Mutex<Tail>) {
    tail.lock().unwrap_or_else(PoisonError::into_inner).close();
}

/// Sends `signal` to the process group `pid` leads (it was started with
/// `process_group(0)`, so its group id is its pid). A group that is gone
/// is not an error. Pid 1 is never a job's, and as a group it would mean
/// `kill(-1)`: every process the bot may signal.
fn signal(pid: Option<u32>, signal: rustix::process::Signal) {
    let Some(pid) = pid
        .filter(|p| *p > 1)
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, signal)
        && e != rustix::io::Errno::SRCH
    {
        tracing::warn!(
            pid = pid.as_raw_nonzero().get(),
            "signalling a job's processes: {e}"
        );
    }
}

/// Whether process `pid` exists on this machine.
pub fn alive(pid: i64) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

async fn read_into(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    which: Stream,
    tail: Arc<Mutex<Tail>>,
) {
    let mut buf = vec![0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(which, buf.get(..n).unwrap_or_default()),
        }
    }
}
