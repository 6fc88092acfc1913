//! The outbox's waiting messages, known in memory while this process
//! knows every one of them.
//!
//! Every reply was written by its commit, read back by the delivery pass
//! and marked delivered in a transaction of its own: a read and a write
//! per command besides the commit, a lock turn each on SQLite and a round
//! trip or three on PostgreSQL. While nothing is waiting for a later try
//! and nothing was left by an earlier process, the waiting messages are
//! exactly the ones this process committed and has not sent, so the
//! writer hands each commit's rows here as it commits them (with their
//! ids) and a pass takes them from here ("exact"). A failed send, or a
//! database this process has not looked at yet, turns that off and the
//! passes read the database as before; the writer turns it on again when,
//! between two of its transactions, it finds no more than
//! [`KNOWN_AT_MOST`] messages waiting there and none waiting for a later
//! try: it takes those, so no commit falls between the look and the
//! switch. (Waiting for an empty outbox instead left a busy bot reading
//! the database for good: under steady load some reply is always between
//! its commit and its mark.)
//!
//! Delivered marks wait here too and go to the database together, in one
//! transaction per [`MARKS_AT_ONCE`] or per [`MARKS_WAIT`]: losing them in
//! a crash is harmless (the messages go out again under the same keys,
//! which the chat network drops), and anything that reads the delivery
//! state from the database writes them first, so no read finds a sent
//! message still waiting.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::outbox::{Edit, OutMessage, PendingMessage};

/// Marks written together as soon as this many wait.
pub(super) const MARKS_AT_ONCE: usize = 64;

/// The most waiting messages the writer's look takes into memory; with
/// more, passes read the database until it has fewer.
pub(super) const KNOWN_AT_MOST: usize = 64;

/// How long a mark waits for others before it is written anyway. A bot
/// answering a command every few dozen milliseconds wrote a transaction
/// per command at 20 ms; at this, one per several. What a crash can lose
/// is this much of sending, done again under the same keys.
pub(super) const MARKS_WAIT: Duration = Duration::from_millis(250);

/// A sent message's mark, not yet written; serialized for PostgreSQL's
/// one statement for many.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Mark {
    pub(super) id: i64,
    pub(super) remote_id: Option<String>,
    pub(super) at_ms: i64,
}

#[derive(Debug, Default)]
pub(super) struct Undelivered {
    state: Mutex<State>,
    /// Held while marks are written: a read of the delivery state waits
    /// for a write already under way (a timer's), or it could find a
    /// message that write is marking still waiting, and send it again.
    writing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Every message waiting in the database is in `queue` (or was sent
    /// and its mark waits in `marks`). Off in a fresh handle: an earlier
    /// process may have left messages.
    exact: bool,
    /// Committed, not yet sent, in id order.
    queue: VecDeque<PendingMessage>,
    /// The highest id in `queue` so far: a commit's message the look
    /// already took (the look ran after it, in the same transaction) is
    /// not taken twice.
    last: i64,
    /// Sent, not yet marked in the database.
    marks: Vec<Mark>,
    /// A write of `marks` is already planned.
    planned: bool,
}

impl Undelivered {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Taken around taking marks and writing them, so that once it is
    /// held and the marks taken, every mark taken before is written.
    pub(super) async fn writing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writing.lock().await
    }

    /// A commit with messages committed, their outbox ids in the order of
    /// `messages`. Called by the writer after the commit and before the
    /// next transaction.
    pub(super) fn committed(&self, ids: &[i64], messages: &[OutMessage], at_ms: i64) {
        let mut s = self.state();
        if !s.exact {
            return;
        }
        for (id, m) in ids.iter().zip(messages) {
            if *id > s.last {
                s.last = *id;
                s.queue.push_back(stored(*id, m, at_ms));
            }
        }
    }

    /// The writer read every message waiting in the database (`waiting`,
    /// oldest first, all due), between two of its transactions: from now
    /// on every waiting message passes here. One already sent, whose mark
    /// is not written yet, is not sent again.
    pub(super) fn settled(&self, waiting: Vec<PendingMessage>) {
        let mut s = self.state();
        let s = &mut *s;
        s.exact = true;
        s.last = waiting.last().map_or(s.last, |p| p.id.max(s.last));
        s.queue = waiting
            .into_iter()
            .filter(|p| !s.marks.iter().any(|m| m.id == p.id))
            .collect();
    }

    /// Something waits in the database that is not here (a send failed
    /// and is tried again later): the passes read the database until the
    /// writer finds it empty again.
    pub(super) fn not_exact(&self) {
        let mut s = self.state();
        s.exact = false;
        s.queue.clear();
    }

    /// The first `n` waiting messages, oldest first, when they are known
    /// here (all are due: none waits for a later try); none when the
    /// database must be read. They stay until marked [`Self::sent`].
    pub(super) fn due(&self, n: usize) -> Option<Vec<PendingMessage>> {
        let s = self.state();
        s.exact.then(|| s.queue.iter().take(n).cloned().collect())
    }

    /// When the earliest waiting message is due, if that is known here:
    /// `Some(None)` when none waits, `Some(Some(0))` when some do (they
    /// are all due now).
    pub(super) fn next_due(&self) -> Option<Option<i64>> {
        let s = self.state();
        s.exact.then(|| (!s.queue.is_empty()).then_some(0))
    }

    /// Messages went out: they leave the queue, and their marks wait to
    /// be written. Whether the marks should be written now (there are
    /// enough), or a write must be planned for later (the first to wait).
    pub(super) fn sent(&self, marks: impl IntoIterator<Item = Mark>) -> Plan {
        let marks: Vec<Mark> = marks.into_iter().collect();
        let mut s = self.state();
        s.queue.retain(|p| !marks.iter().any(|m| m.id == p.id));
        s.marks.extend(marks);
        if s.marks.len() >= MARKS_AT_ONCE {
            Plan::Now
        } else if s.planned || s.marks.is_empty() {
            Plan::Nothing
        } else {
            s.planned = true;
            Plan::Later
        }
    }

    /// The marks waiting to be written, taken out; given back with
    /// [`Self::unwritten`] if their write fails.
    pub(super) fn take_marks(&self) -> Vec<Mark> {
        let mut s = self.state();
        s.planned = false;
        std::mem::take(&mut s.marks)
    }

    /// Marks whose write failed wait again, before any taken since.
    pub(super) fn unwritten(&self, mut marks: Vec<Mark>) {
        let mut s = self.state();
        marks.append(&mut s.marks);
        s.marks = marks;
    }
}

/// What [`Undelivered::sent`] asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Write the marks now.
    Now,
    /// Write them after [`MARKS_WAIT`].
    Later,
    /// A write is planned already.
    Nothing,
}

/// `m` as the outbox row its commit wrote reads back.
fn stored(id: i64, m: &OutMessage, at_ms: i64) -> PendingMessage {
    PendingMessage {
        id,
        created_ms: at_ms,
        message: OutMessage {
            body: crate::text::storable(&m.body, usize::MAX).into_owned(),
            edit: m.edit.as_ref().map(|e| Edit {
                of: e.of.clone(),
                remote_id: None,
            }),
            ..m.clone()
        },
        attempts: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Target;

    fn message(body: &str) -> OutMessage {
        OutMessage::to(Target::Room("!r:local".into()), body.into())
    }

    fn mark(id: i64) -> Mark {
        Mark {
            id,
            remote_id: None,
            at_ms: 0,
        }
    }

    #[test]
    fn nothing_is_known_until_the_writer_settles() {
        let u = Undelivered::default();
        u.committed(&[1], &[message("a")], 0);
        assert!(u.due(10).is_none(), "a fresh handle reads the database");
        u.settled(Vec::new());
        assert_eq!(u.due(10).map(|d| d.len()), Some(0), "1 came before");
        u.committed(&[2, 3], &[message("b"), message("c")], 5);
        let due = u.due(10).unwrap_or_default();
        assert_eq!(due.iter().map(|p| p.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(due[0].created_ms, 5);
        assert_eq!(u.next_due(), Some(Some(0)));
        u.sent([mark(2)]);
        assert_eq!(u.due(10).map(|d| d.len()), Some(1));
        u.not_exact();
        assert!(u.due(10).is_none());
        assert!(u.next_due().is_none());
    }

    #[test]
    fn what_the_look_took_is_not_sent_twice() {
        let u = Undelivered::default();
        let pending = |id: i64| stored(id, &message("m"), 0);
        // 1 went out while the look read the database; its mark waits.
        u.sent([mark(1)]);
        u.settled(vec![pending(1), pending(2), pending(3)]);
        // 3 was committed before the look, in the look's transaction.
        u.committed(&[3, 4], &[message("c"), message("d")], 0);
        let due = u.due(10).unwrap_or_default();
        assert_eq!(due.iter().map(|p| p.id).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn marks_are_written_together_and_survive_a_failed_write() {
        let u = Undelivered::default();
        assert_eq!(u.sent([mark(1)]), Plan::Later);
        assert_eq!(u.sent([mark(2)]), Plan::Nothing, "already planned");
        let taken = u.take_marks();
        assert_eq!(taken.len(), 2);
        assert_eq!(u.sent([mark(3)]), Plan::Later);
        u.unwritten(taken);
        let order: Vec<i64> = u.take_marks().iter().map(|m| m.id).collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(u.take_marks().is_empty());
        let plans: Vec<Plan> = (0..MARKS_AT_ONCE as i64)
            .map(|i| u.sent([mark(i)]))
            .collect();
        assert_eq!(plans.last(), Some(&Plan::Now));
    }
}
