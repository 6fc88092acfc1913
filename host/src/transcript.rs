//! Chat transcripts: a plugin's behaviour written as a conversation and
//! replayed through the real host and the console adapter.
//!
//! ```text
//! % [plugins.points.config.awards]     <- TOML added to the test config
//! % "release.finished" = 3
//! > @alice:local !points               <- a message from a user
//! < @alice:local: 0 points             <- a regex the next reply must match
//! ~ restart                            <- stop the bot and start it again
//! ~ time 2026-11-23T09:59 Asia/Shanghai <- set the clock (zone: UTC if none)
//! ~ wait 2h                            <- let time pass with the bot running
//! ~ down 3h                            <- stop, let time pass, start again
//! ~ settle                             <- wait until every pending effect is done
//! # a comment
//! ```
//!
//! The clock is the transcript's own: it starts at the real time and
//! moves only by `~` lines. While time passes with the bot running, every
//! schedule fires at its due time, as it would on a running bot.
//!
//! Each message's effects (replies, other messages, events, HTTP sends,
//! jobs, and the events their outcomes produce) are done before the next
//! line, as far as they can be at once; jobs run in real time, for at
//! most a minute per line. `~ settle` goes on until none is left:
//! retries wait their pause, with the clock moved to each one's due time.
//!
//! Every reply must be matched, in order: a reply nobody expected fails
//! the transcript, which is how "answered exactly once" is tested.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;

use crate::bot::Bot;
use crate::chat::console::{Console, RecordingSink};
use crate::clock::{Clock, ManualClock, SharedClock, SystemClock};
use crate::config::{Config, GRANTABLE};

/// Longest real time a line's jobs may take.
const JOB_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One line of a transcript that does something.
#[derive(Debug)]
enum Step {
    Say {
        line: usize,
        user: String,
        text: String,
    },
    Expect {
        line: usize,
        pattern: Regex,
    },
    Restart {
        line: usize,
    },
    /// Lets pending effects finish, moving the clock to each retry.
    Settle {
        line: usize,
    },
    /// Moves the clock to an instant (`set`) or by a duration, with the
    /// bot running or (`down`) stopped meanwhile.
    Time {
        line: usize,
        to: TimeMove,
        down: bool,
    },
}

#[derive(Debug)]
enum TimeMove {
    To(i64),
    By(i64),
}

/// A parsed transcript.
#[derive(Debug)]
pub struct Transcript {
    /// The file it came from.
    pub path: PathBuf,
    overlay: String,
    steps: Vec<Step>,
}

/// Where a transcript runs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Folder of `*.wasm` plugins, named `<plugin>.wasm`.
    pub plugins_dir: PathBuf,
    /// A database URL to use; none means a fresh SQLite file.
    pub database_url: Option<String>,
}

/// Why a transcript failed, with the file and line.
#[derive(Debug)]
pub struct Failure {
    /// The transcript file.
    pub path: PathBuf,
    /// The line that failed (0: before any line).
    pub line: usize,
    /// What was expected and what came.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for Failure {}

impl Transcript {
    /// Reads and parses a `.chat` file.
    pub fn load(path: &Path) -> Result<Self, Failure> {
        Self::parse(path, &Self::read(path)?)
    }

    /// The text of a `.chat` file, for a caller that fills something in
    /// before [`Transcript::parse`] (the fake trackers' addresses).
    pub fn read(path: &Path) -> Result<String, Failure> {
        std::fs::read_to_string(path).map_err(|e| Failure {
            path: path.into(),
            line: 0,
            message: format!("cannot read: {e}"),
        })
    }

    /// Parses transcript text; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Failure> {
        let fail = |line: usize, message: String| Failure {
            path: path.into(),
            line,
            message,
        };
        let mut overlay = String::new();
        let mut steps = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_end();
            if trimmed.trim().is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (marker, rest) = trimmed.split_at(1);
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match marker {
                "%" => {
                    overlay.push_str(rest);
                    overlay.push('\n');
                }
                ">" => {
                    let (user, text) = rest
                        .split_once(' ')
                        .ok_or_else(|| fail(line, "write `> @user:server message`".into()))?;
                    if !crate::roles::is_user_id(user) {
                        return Err(fail(
                            line,
                            format!("{user:?} is not a user id like @alice:local"),
                        ));
                    }
                    steps.push(Step::Say {
                        line,
                        user: user.into(),
                        text: text.into(),
                    });
                }
                "<" => {
                    let pattern =
                        Regex::new(rest).map_err(|e| fail(line, format!("bad pattern: {e}")))?;
                    steps.push(Step::Expect { line, pattern });
                }
                "~" if rest.trim() == "restart" => steps.push(Step::Restart { line }),
                "~" if rest.trim() == "settle" => steps.push(Step::Settle { line }),
                "~" => {
                    let (verb, arg) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
                    let step = match verb {
                        "time" => TimeMove::To(parse_instant(arg).map_err(|e| fail(line, e))?),
                        "wait" | "down" => TimeMove::By(
                            humantime::parse_duration(arg)
                                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                                .map_err(|e| {
                                    fail(line, format!("{arg:?} is not a duration: {e}"))
                                })?,
                        ),
                        _ => {
                            return Err(fail(
                                line,
                                "`~` lines are `~ restart`, `~ settle`, `~ time <YYYY-MM-DDTHH:MM> [zone]`, `~ wait <duration>` or `~ down <duration>`".into(),
                            ));
                        }
                    };
                    steps.push(Step::Time {
                        line,
                        to: step,
                        down: verb == "down",
                    });
                }
                _ => {
                    return Err(fail(
                        line,
                        "lines start with `>`, `<`, `~`, `%` or `#`".into(),
                    ));
                }
            }
        }
        Ok(Self {
            path: path.into(),
            overlay,
            steps,
        })
    }

    /// The config this transcript runs with: every plugin in the folder
    /// granted everything, `@root:local` an admin, plus the `%` lines.
    fn config(&self, setup: &Setup, data_dir: &Path) -> Result<Config, Failure> {
        let fail = |message: String| Failure {
            path: self.path.clone(),
            line: 0,
            message,
        };
        let mut base = toml::Table::new();
        let db = setup
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("ikkyu.db").display()));
        base.insert(
            "database".into(),
            toml::Value::Table(toml::toml! { url = db }),
        );
        let dir = setup.plugins_dir.display().to_string();
        base.insert(
            "runtime".into(),
            toml::Value::Table(toml::toml! { plugins_dir = dir }),
        );
        base.insert(
            "roles".into(),
            toml::Value::Table(toml::toml! { admin = ["@root:local"] }),
        );
        let mut plugins = toml::Table::new();
        let all: Vec<toml::Value> = GRANTABLE
            .iter()
            .map(|g| toml::Value::String((*g).into()))
            .collect();
        for entry in std::fs::read_dir(&setup.plugins_dir)
            .map_err(|e| {
                fail(format!(
                    "cannot read plugins folder {:?}: {e}",
                    setup.plugins_dir
                ))
            })?
            .filter_map(Result::ok)
        {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "wasm")
                && let Some(stem) = path.file_stem()
            {
                let mut section = toml::Table::new();
                section.insert("grants".into(), toml::Value::Array(all.clone()));
                plugins.insert(stem.to_string_lossy().into(), toml::Value::Table(section));
            }
        }
        base.insert("plugins".into(), toml::Value::Table(plugins));
        let overlay: toml::Table = toml::from_str(&self.overlay)
            .map_err(|e| fail(format!("the `%` config lines are not TOML: {e}")))?;
        merge(&mut base, overlay);
        let text = toml::to_string(&base).map_err(|e| fail(e.to_string()))?;
        Config::parse(&text, &self.path, data_dir).map_err(|e| fail(e.to_string()))
    }

    /// Replays the transcript; the number of steps run on success.
    pub async fn run(&self, setup: &Setup) -> Result<usize, Failure> {
        let data = tempfile::tempdir().map_err(|e| Failure {
            path: self.path.clone(),
            line: 0,
            message: format!("temp dir: {e}"),
        })?;
        let config = self.config(setup, data.path())?;
        let manual = Arc::new(ManualClock::new(SystemClock.now_ms()));
        let clock: SharedClock = manual.clone();
        let sink = RecordingSink::default();
        let start = |line: usize| {
            let (config, sink, clock) = (&config, sink.clone(), clock.clone());
            async move {
                let bot = Bot::start(config, Arc::new(sink), clock)
                    .await
                    .map_err(|e| Failure {
                        path: self.path.clone(),
                        line,
                        message: format!("bot did not start: {e:#}"),
                    })?;
                // A starting bot runs what is due (missed runs) at once.
                bot.run_due_schedules().await.map_err(|e| Failure {
                    path: self.path.clone(),
                    line,
                    message: format!("schedules failed at start: {e:#}"),
                })?;
                Ok::<_, Failure>(bot)
            }
        };
        let mut bot = start(0).await?;
        let console = Console::new(clock.now_ms());
        let mut replies: VecDeque<String> = VecDeque::new();
        let mut last_line = 0;
        for step in &self.steps {
            match step {
                Step::Say { line, user, text } => {
                    self.no_leftovers(&replies, *line)?;
                    let msg = console.message(user, text, clock.now_ms());
                    bot.handle(&msg).await.map_err(|e| Failure {
                        path: self.path.clone(),
                        line: *line,
                        message: format!("the host failed: {e:#}"),
                    })?;
                    self.jobs_done(&bot, *line).await?;
                    replies.extend(sink.take());
                    last_line = *line;
                }
                Step::Expect { line, pattern } => {
                    let Some(reply) = replies.pop_front() else {
                        return Err(Failure {
                            path: self.path.clone(),
                            line: *line,
                            message: format!(
                                "expected a reply matching /{pattern}/ to line {last_line}, but there was none"
                            ),
                        });
                    };
                    if !pattern.is_match(&reply) {
                        return Err(Failure {
                            path: self.path.clone(),
                            line: *line,
                            message: format!(
                                "expected a reply matching /{pattern}/, got:\n{reply}"
                            ),
                        });
                    }
                }
                Step::Restart { line } => {
                    self.no_leftovers(&replies, *line)?;
                    bot.shutdown().await;
                    bot = start(*line).await?;
                    replies.extend(sink.take());
                }
                Step::Settle { line } => {
                    self.no_leftovers(&replies, *line)?;
                    settle(&bot, &manual).await.map_err(|e| Failure {
                        path: self.path.clone(),
                        line: *line,
                        message: format!("pending effects failed: {e:#}"),
                    })?;
                    self.jobs_done(&bot, *line).await?;
                    replies.extend(sink.take());
                    last_line = *line;
                }
                Step::Time { line, to, down } => {
                    self.no_leftovers(&replies, *line)?;
                    let target = match to {
                        TimeMove::To(t) => *t,
                        TimeMove::By(d) => manual.now_ms() + d,
                    };
                    if *down {
                        bot.shutdown().await;
                        manual.set(target);
                        bot = start(*line).await?;
                    } else {
                        pass_time(&bot, &manual, target)
                            .await
                            .map_err(|e| Failure {
                                path: self.path.clone(),
                                line: *line,
                                message: format!("schedules failed: {e:#}"),
                            })?;
                    }
                    self.jobs_done(&bot, *line).await?;
                    replies.extend(sink.take());
                    last_line = *line;
                }
            }
        }
        self.no_leftovers(&replies, last_line)?;
        bot.shutdown().await;
        Ok(self.steps.len())
    }

    /// Waits, in real time and at most [`JOB_WAIT`], for the jobs started
    /// so far to end and for what their outcomes set off.
    async fn jobs_done(&self, bot: &Bot, line: usize) -> Result<(), Failure> {
        let fail = |message: String| Failure {
            path: self.path.clone(),
            line,
            message,
        };
        match bot.settle_jobs(JOB_WAIT).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(fail(format!(
                "jobs were still running {} s after this line",
                JOB_WAIT.as_secs()
            ))),
            Err(e) => Err(fail(format!("running jobs failed: {e:#}"))),
        }
    }

    fn no_leftovers(&self, replies: &VecDeque<String>, line: usize) -> Result<(), Failure> {
        match replies.front() {
            None => Ok(()),
            Some(extra) => Err(Failure {
                path: self.path.clone(),
                line,
                message: format!(
                    "{} unexpected repl{} before this line, the first:\n{extra}",
                    replies.len(),
                    if replies.len() == 1 { "y" } else { "ies" }
                ),
            }),
        }
    }
}

/// Does every pending effect, letting time pass to each retry's due time,
/// until nothing is left that could still happen.
async fn settle(bot: &Bot, clock: &ManualClock) -> anyhow::Result<()> {
    for _ in 0..1_000 {
        bot.flush().await?;
        match bot.next_effect_due_ms().await {
            Some(due) if due > clock.now_ms() => pass_time(bot, clock, due).await?,
            // Nothing pending, or only what cannot be done at all now (a
            // quarantined subscriber's deliveries).
            _ => return Ok(()),
        }
    }
    anyhow::bail!("effects kept coming after 1,000 rounds")
}

/// Moves the clock to `target` the way time passes for a running bot:
/// stopping at every due time on the way so each run happens on time.
async fn pass_time(bot: &Bot, clock: &ManualClock, target: i64) -> anyhow::Result<()> {
    for _ in 0..100_000 {
        let pass = bot.run_due_schedules().await?;
        match pass.next_due_ms {
            Some(next) if next <= target && next > clock.now_ms() => clock.set(next),
            _ => {
                clock.set(target);
                bot.run_due_schedules().await?;
                return Ok(());
            }
        }
    }
    anyhow::bail!("more than 100000 schedule runs in one step")
}

/// `YYYY-MM-DDTHH:MM` (or a date) with an optional IANA zone after it.
fn parse_instant(text: &str) -> Result<i64, String> {
    let (time, zone) = text.trim().split_once(' ').unwrap_or((text.trim(), "UTC"));
    let zone = crate::schedule::when::parse_zone(zone.trim()).map_err(|e| e.0)?;
    let naive = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H:%M")
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(time, "%Y-%m-%d")
                .map(|d| d.and_time(chrono::NaiveTime::MIN))
        })
        .map_err(|_| format!("{time:?} is not a time like 2026-11-23T10:00"))?;
    use chrono::TimeZone;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| format!("{time} does not exist in {}", zone.name()))
}

/// Deep-merges `overlay` into `base`: tables merge, other values replace.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_overlay() {
        let t = Transcript::parse(
            Path::new("t.chat"),
            "# c\n% [roles]\n% ops = [\"@o:local\"]\n> @a:local !points\n< 0 points\n~ restart\n",
        )
        .expect("valid");
        assert_eq!(t.steps.len(), 3);
        assert!(t.overlay.contains("ops"));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let err =
            Transcript::parse(Path::new("t.chat"), "> @a:local !x\n? what\n").expect_err("bad");
        assert_eq!(err.line, 2);
        let err = Transcript::parse(Path::new("t.chat"), "> alice !x\n").expect_err("bad user");
        assert!(err.message.contains("not a user id"), "{err}");
    }

    #[test]
    fn merge_is_deep() {
        let mut base: toml::Table = toml::from_str("[a]\nx = 1\ny = 2").expect("toml");
        merge(
            &mut base,
            toml::from_str("[a]\ny = 3\n[b]\nz = 4").expect("toml"),
        );
        assert_eq!(base.to_string(), "[a]\nx = 1\ny = 3\n\n[b]\nz = 4\n");
    }
}
