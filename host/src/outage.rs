//! Waiting out trouble that is not ours to fix (the database away): a
//! growing pause between tries, and a log that says when the outage began,
//! how long it has lasted and when it ended, without a line per try.

use std::time::{Duration, Instant};

/// First pause after a failure.
const FIRST: Duration = Duration::from_millis(250);
/// Longest pause between tries.
const LONGEST: Duration = Duration::from_secs(15);
/// While an outage lasts, a reminder at most this often.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// One loop's view of an outage.
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    since: Option<Instant>,
    last_said: Option<Instant>,
    pause: Duration,
}

impl Outage {
    /// No outage yet, for the loop doing `what`.
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            since: None,
            last_said: None,
            pause: FIRST,
        }
    }

    /// Records a failure and says how long to pause before the next try.
    /// The first failure of an outage is logged, then a reminder a minute.
    pub fn failed(&mut self, error: &(dyn std::error::Error + 'static)) -> Duration {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let say = self
            .last_said
            .is_none_or(|at| now.duration_since(at) >= REMIND_EVERY);
        if say {
            self.last_said = Some(now);
            tracing::warn!(
                "{} failed (failing for {}s); retrying: {}",
                self.what,
                now.duration_since(since).as_secs(),
                crate::text::error_chain(error)
            );
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(LONGEST);
        pause
    }

    /// [`Outage::failed`], and the pause to await.
    pub fn wait(&mut self, error: &(dyn std::error::Error + 'static)) -> tokio::time::Sleep {
        tokio::time::sleep(self.failed(error))
    }

    /// The work succeeded: an outage in progress is over, and logged so.
    pub fn over(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                "{} works again after {}s",
                self.what,
                since.elapsed().as_secs()
            );
        }
        self.last_said = None;
        self.pause = FIRST;
    }
}
