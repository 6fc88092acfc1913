//! Whether after-commit work of one kind (messages, event deliveries,
//! HTTP sends) may be waiting, known without asking the database.
//!
//! Every command would otherwise pay a query per kind to learn that
//! nothing is waiting. A commit that leaves work marks its kind; a pass
//! that found nothing due clears the marks up to where it started, so a
//! commit landing during the pass keeps its kind marked. Work that failed
//! and waits for a later try keeps its kind marked until a pass finds
//! nothing pending at all, due or not. A fresh handle starts marked, so
//! what an earlier process left is looked at.

use std::sync::{Mutex, PoisonError};

/// One kind of work's marks.
#[derive(Debug)]
pub(super) struct Pending(Mutex<State>);

#[derive(Debug)]
struct State {
    /// Counts commits (and failures) that left this kind of work.
    marks: u64,
    /// The count a pass started from before it found nothing due.
    clean_at: u64,
    /// Some of it waits to be tried again later.
    retrying: bool,
}

impl Default for Pending {
    fn default() -> Self {
        Self(Mutex::new(State {
            marks: 1,
            clean_at: 0,
            retrying: true,
        }))
    }
}

impl Pending {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A commit left work of this kind.
    pub(super) fn mark(&self) {
        self.state().marks += 1;
    }

    /// Work of this kind failed and waits to be tried again.
    pub(super) fn retry_later(&self) {
        let mut s = self.state();
        s.marks += 1;
        s.retrying = true;
    }

    /// Where a pass starts: `None` when nothing can be waiting, so there
    /// is nothing to look at; otherwise the mark to hand back.
    pub(super) fn look(&self) -> Option<u64> {
        let s = self.state();
        (s.marks != s.clean_at || s.retrying).then_some(s.marks)
    }

    /// The pass that started at `seen` left nothing due now (work may
    /// still wait for a later try).
    pub(super) fn none_due(&self, seen: u64) {
        let mut s = self.state();
        s.clean_at = s.clean_at.max(seen);
    }

    /// Nothing of this kind was pending at all when the pass that started
    /// at `seen` looked.
    pub(super) fn none_pending(&self, seen: u64) {
        let mut s = self.state();
        if s.marks == seen {
            s.retrying = false;
        }
        s.clean_at = s.clean_at.max(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::Pending;

    #[test]
    fn a_mark_during_a_pass_survives_it() {
        let p = Pending::default();
        let seen = p.look().expect("a fresh handle is marked");
        p.none_pending(seen);
        assert_eq!(p.look(), None);
        p.mark();
        let seen = p.look().expect("marked");
        p.mark();
        p.none_due(seen);
        assert!(p.look().is_some(), "the second mark is still to look at");
    }

    #[test]
    fn a_retry_is_cleared_only_by_nothing_pending() {
        let p = Pending::default();
        let seen = p.look().expect("marked");
        p.none_pending(seen);
        p.retry_later();
        let seen = p.look().expect("retrying");
        p.none_due(seen);
        assert!(p.look().is_some(), "still waiting to be retried");
        let stale = seen;
        p.retry_later();
        p.none_pending(stale);
        assert!(p.look().is_some(), "a failure after the look keeps it");
        let seen = p.look().expect("retrying");
        p.none_pending(seen);
        assert_eq!(p.look(), None);
    }
}
