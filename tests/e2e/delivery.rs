//! Output never stalls: a target that cannot be reached holds up no other
//! room and is given up after a bound, on record and reported; a
//! quarantined subscriber's backlog holds up no other subscriber; events
//! from scheduled runs are delivered at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu::chat::{BoxFuture, ChatError, ChatSink, Incoming};
use ikkyu::clock::{ManualClock, SharedClock};
use ikkyu::store::{Commit, OutMessage, Target, Work};
use ikkyu_e2e::{start_bot_at, start_bot_into};

const START: i64 = 1_795_000_000_000;

/// Records like [`RecordingSink`], but every send to a room whose id
/// contains `dead`, or to a user on `dead.example`, fails as a network
/// error would (a federated server that is down).
#[derive(Clone, Default)]
struct DeadTargetSink {
    ok: RecordingSink,
    /// Failed sends per target.
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl DeadTargetSink {
    fn failures(&self, target: &str) -> u32 {
        self.failures
            .lock()
            .map(|f| f.get(target).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl ChatSink for DeadTargetSink {
    fn deliver<'a>(
        &'a self,
        key: &'a str,
        message: &'a OutMessage,
    ) -> BoxFuture<'a, Result<Option<String>, ChatError>> {
        Box::pin(async move {
            let target = match &message.target {
                Target::Room(r) if r.contains("dead") => Some(r.clone()),
                Target::User(u) if u.ends_with(":dead.example") => Some(u.clone()),
                _ => None,
            };
            if let Some(target) = target {
                if let Ok(mut f) = self.failures.lock() {
                    *f.entry(target.clone()).or_default() += 1;
                }
                return Err(reset(target));
            }
            self.ok.deliver(key, message).await
        })
    }
}

/// A send to `target` that failed as a dropped connection does: worth
/// trying again.
fn reset(target: String) -> ChatError {
    ChatError {
        target,
        message: "connection reset".into(),
        permanent: false,
    }
}

async fn an_unreachable_target_holds_up_no_other(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let clock = Arc::new(ManualClock::new(START));
    let shared: SharedClock = clock.clone();
    let sink = DeadTargetSink::default();
    let bot = start_bot_into(db_url, data, "", shared, Arc::new(sink.clone())).await?;
    let console = Console::new(1);
    // A direct message to a user whose server is down, as a plugin or an
    // admin notice would queue it, and a command in a room that cannot be
    // reached.
    let audit = ikkyu_e2e::command_record("@root:local", "dm", START);
    let dm = OutMessage::host_notice(&["@x:dead.example".to_owned()], "hello");
    bot.db.commit(&Commit::only_audit(None, audit, dm)).await?;
    let in_dead_room = Incoming {
        room: "!dead:local".into(),
        ..console.message("@bob:local", "!points", START)
    };
    bot.handle(&in_dead_room).await?;
    assert_eq!(sink.failures("@x:dead.example"), 1);
    assert_eq!(sink.failures("!dead:local"), 1);
    // Another room is answered at once, again and again.
    for _ in 0..3 {
        bot.handle(&console.message("@bob:local", "!points", START))
            .await?;
        assert_eq!(sink.ok.take().len(), 1, "the console room is answered");
    }
    // Retries wait: flushing now does not hammer the dead targets.
    bot.flush().await?;
    assert_eq!(sink.failures("!dead:local"), 1);
    // Over time each is retried with growing delays, then given up and
    // reported to the admins once.
    for minute in 1..=60 {
        clock.set(START + minute * 60_000);
        bot.flush().await?;
    }
    for target in ["!dead:local", "@x:dead.example"] {
        assert_eq!(
            sink.failures(target),
            10,
            "{target}: a bounded number of attempts"
        );
    }
    let reported = sink.ok.take();
    let notices: Vec<&String> = reported
        .iter()
        .filter(|r| {
            r.starts_with("[direct to @root:local]") && r.contains("could not be delivered")
        })
        .collect();
    assert_eq!(
        notices.len(),
        2,
        "one notice per given-up message: {reported:#?}"
    );
    let audit = bot.db.audit_recent(50).await?;
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.kind == "delivery" && e.outcome == "error")
            .count(),
        2
    );
    // Given up means no more tries.
    clock.set(START + 24 * 3_600_000);
    bot.flush().await?;
    assert_eq!(sink.failures("!dead:local"), 10);
    bot.shutdown().await;
    Ok(())
}

async fn a_quarantined_subscriber_holds_up_no_other(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(ManualClock::new(START));
    let (bot, sink) = start_bot_at(db_url, data, "", clock).await?;
    let console = Console::new(2);
    let table = bot.registry().current();
    let points = table.plugin("points").expect("points is loaded");
    assert!(points.health.failed(1), "points is quarantined");
    // More pending deliveries to points than one pass reads.
    for i in 0..120 {
        let line = format!("!emit release.finished {{\"initiator\": \"@bob:local\", \"n\": {i}}}");
        bot.handle(&console.message("@root:local", &line, START))
            .await?;
    }
    bot.handle(&console.message("@root:local", "!emit test.after {}", START))
        .await?;
    sink.take();
    bot.handle(&console.message("@root:local", "!seen", START))
        .await?;
    assert_eq!(sink.take(), vec!["seen 1 events".to_owned()]);
    bot.shutdown().await;
    Ok(())
}

async fn a_scheduled_run_delivers_its_events(db_url: &str, data: &Path) -> anyhow::Result<()> {
    let clock = Arc::new(ManualClock::new(START));
    let shared: SharedClock = clock.clone();
    let (bot, sink) = start_bot_at(db_url, data, "", shared).await?;
    let console = Console::new(3);
    bot.handle(&console.message("@root:local", "!emit-later test.tick", START))
        .await?;
    sink.take();
    clock.set(START + 61_000);
    let pass = bot.run_due_schedules().await?;
    assert_eq!(pass.fired, 1, "{pass:?}");
    bot.handle(&console.message("@root:local", "!seen", START + 61_000))
        .await?;
    assert_eq!(sink.take(), vec!["seen 1 events".to_owned()]);
    bot.shutdown().await;
    Ok(())
}

/// Once a flush has found no HTTP send and no event delivery waiting, a
/// command that leaves only a reply makes the next flush ask the database
/// for neither (before, a fresh start's "look once" was never cleared on
/// the console, so every command paid a query for sends). Work a later
/// command leaves is still found and delivered.
async fn a_reply_alone_leaves_nothing_else_to_look_for(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(ManualClock::new(START));
    let (bot, sink) = start_bot_at(db_url, data, "", clock).await?;
    let console = Console::new(5);
    for _ in 0..2 {
        bot.handle(&console.message("@ann:local", "!points", START))
            .await?;
    }
    assert_eq!(sink.take().len(), 2, "one reply per command");
    for work in [Work::Messages, Work::Deliveries, Work::Sends] {
        assert_eq!(bot.db.waiting(work), None, "{work:?} is still looked for");
    }
    bot.handle(&console.message("@root:local", "!emit test.one {}", START))
        .await?;
    bot.handle(&console.message("@root:local", "!seen", START))
        .await?;
    assert_eq!(
        sink.take(),
        vec!["emitted test.one".to_owned(), "seen 1 events".to_owned()]
    );
    for work in [Work::Messages, Work::Deliveries, Work::Sends] {
        assert_eq!(bot.db.waiting(work), None, "{work:?} is still looked for");
    }
    bot.shutdown().await;
    Ok(())
}

/// Gives every message a network id (`$ev<n>`) and records, in order,
/// each body with the id of the message it edits, as the homeserver would
/// see them.
#[derive(Clone, Default)]
struct IdSink(Arc<Mutex<Vec<Sent>>>);

/// A body as sent, with the network id of the message it edits.
type Sent = (String, Option<String>);

impl ChatSink for IdSink {
    fn deliver<'a>(
        &'a self,
        _key: &'a str,
        message: &'a OutMessage,
    ) -> BoxFuture<'a, Result<Option<String>, ChatError>> {
        Box::pin(async move {
            let mut seen = self.0.lock().map_err(|_| ChatError {
                target: "ids".into(),
                message: "poisoned".into(),
                permanent: true,
            })?;
            let edits = message.edit.as_ref().and_then(|e| e.remote_id.clone());
            seen.push((message.body.clone(), edits));
            Ok(Some(format!("$ev{}", seen.len())))
        })
    }
}

/// Messages to one room that are due together go out in order, and an
/// edit of a message sent just before it (its id known only from that
/// send, not yet marked delivered) is sent as an edit of it.
async fn a_room_s_queue_goes_out_in_order_with_its_edits(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(ManualClock::new(START));
    let sink = IdSink::default();
    let bot = start_bot_into(db_url, data, "", clock, Arc::new(sink.clone())).await?;
    let room = Target::Room("!ops:local".into());
    let mut progress = OutMessage::to(room.clone(), "deploy: 0/2".into());
    progress.handle = Some("progress-1".into());
    let mut done = OutMessage::to(room.clone(), "deploy: 2/2 ✅".into());
    done.edit = Some(ikkyu::store::Edit {
        of: "progress-1".into(),
        remote_id: None,
    });
    let messages = vec![
        OutMessage::to(room.clone(), "first".into()),
        progress,
        OutMessage::to(room.clone(), "между".into()),
        done,
    ];
    let audit = ikkyu_e2e::command_record("@root:local", "deploy", START);
    bot.db
        .commit(&Commit::only_audit(None, audit, messages))
        .await?;
    bot.flush().await?;
    let seen = sink.0.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        seen,
        vec![
            ("first".to_owned(), None),
            ("deploy: 0/2".to_owned(), None),
            ("между".to_owned(), None),
            ("deploy: 2/2 ✅".to_owned(), Some("$ev2".to_owned())),
        ]
    );
    bot.flush().await?;
    assert_eq!(sink.0.lock().map(|s| s.len()).unwrap_or(0), 4, "sent once");
    bot.shutdown().await;
    Ok(())
}

/// Fails every `every`th send as a network error would, and records every
/// send that went out by its key, in order.
#[derive(Clone)]
struct FlakySink {
    every: Arc<std::sync::atomic::AtomicU64>,
    tries: Arc<std::sync::atomic::AtomicU64>,
    /// (key, target, body) of each send that went out.
    out: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl FlakySink {
    fn new(every: u64) -> Self {
        Self {
            every: Arc::new(every.into()),
            tries: Arc::default(),
            out: Arc::default(),
        }
    }

    fn out(&self) -> Vec<(String, String, String)> {
        self.out.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// No send fails from now on.
    fn heal(&self) {
        self.every
            .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ChatSink for FlakySink {
    fn deliver<'a>(
        &'a self,
        key: &'a str,
        message: &'a OutMessage,
    ) -> BoxFuture<'a, Result<Option<String>, ChatError>> {
        Box::pin(async move {
            let target = match &message.target {
                Target::Room(r) | Target::User(r) => r.clone(),
            };
            let n = self
                .tries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if n.is_multiple_of(self.every.load(std::sync::atomic::Ordering::Relaxed)) {
                return Err(reset(target));
            }
            if let Ok(mut out) = self.out.lock() {
                out.push((key.to_owned(), target, message.body.clone()));
            }
            Ok(Some(format!("$k{n}")))
        })
    }
}

/// Replies go out straight from their commits while nothing else waits,
/// and from the database while a failed send waits for its retry; across
/// those switches, with commands committing concurrently in three rooms,
/// every reply goes out exactly once and each room's in order.
async fn replies_go_out_once_and_in_order_while_sends_fail(
    db_url: &str,
    data: &Path,
) -> anyhow::Result<()> {
    const SENDERS: usize = 6;
    const ROUNDS: usize = 4;
    const EACH: usize = 40;
    let clock = Arc::new(ManualClock::new(START));
    let shared: SharedClock = clock.clone();
    let sink = FlakySink::new(11);
    let bot = Arc::new(start_bot_into(db_url, data, "", shared, Arc::new(sink.clone())).await?);
    let console = Arc::new(Console::new(9));
    // Rounds of concurrent commands; between them, time passes until what
    // failed went out, so each round starts with nothing waiting.
    let mut now = START;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for s in 0..SENDERS {
            let (bot, console) = (bot.clone(), console.clone());
            tasks.push(tokio::spawn(async move {
                for i in round * EACH / ROUNDS..(round + 1) * EACH / ROUNDS {
                    let msg = Incoming {
                        room: format!("!room{}:local", s % 3),
                        ..console.message(
                            &format!("@s{s}:local"),
                            &format!("!points @s{s}n{i}:local"),
                            now,
                        )
                    };
                    bot.handle(&msg).await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        // What failed is retried with growing delays.
        for _ in 0..10 {
            now += 60_000;
            clock.set(now);
            bot.flush().await?;
        }
        assert_eq!(
            bot.db.outbox_next_attempt().await?,
            None,
            "round {round}: something still waits"
        );
    }
    let out = sink.out();
    let mut keys: Vec<&String> = out.iter().map(|(k, _, _)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), out.len(), "a reply went out twice");
    assert_eq!(out.len(), SENDERS * EACH, "every reply went out");
    // Each sender's replies reach its room in the order it sent them.
    for s in 0..SENDERS {
        let room = format!("!room{}:local", s % 3);
        let prefix = format!("@s{s}n");
        let order: Vec<usize> = out
            .iter()
            .filter(|(_, target, _)| *target == room)
            .filter_map(|(_, _, body)| body.strip_prefix(&prefix))
            .filter_map(|rest| rest.split(':').next()?.parse().ok())
            .collect();
        assert_eq!(order, (0..EACH).collect::<Vec<_>>(), "sender {s} in {room}");
    }
    // One more, its mark still waiting in memory when the bot stops; a
    // restart finds every one marked delivered: nothing goes out again.
    sink.heal();
    bot.handle(&console.message("@last:local", "!points", now))
        .await?;
    assert_eq!(sink.out().len(), SENDERS * EACH + 1);
    bot.shutdown().await;
    let sink_after = FlakySink::new(u64::MAX);
    let clock: SharedClock = Arc::new(ManualClock::new(now + 3_600_000));
    let again = start_bot_into(db_url, data, "", clock, Arc::new(sink_after.clone())).await?;
    again.flush().await?;
    assert_eq!(sink_after.out(), Vec::new(), "sent again after a restart");
    again.shutdown().await;
    Ok(())
}

on_both!(
    replies_go_out_once_and_in_order_while_sends_fail,
    replies_go_out_once_and_in_order_while_sends_fail_on_sqlite,
    replies_go_out_once_and_in_order_while_sends_fail_on_postgres
);
on_both!(
    a_room_s_queue_goes_out_in_order_with_its_edits,
    a_room_s_queue_goes_out_in_order_with_its_edits_on_sqlite,
    a_room_s_queue_goes_out_in_order_with_its_edits_on_postgres
);
on_both!(
    a_reply_alone_leaves_nothing_else_to_look_for,
    a_reply_alone_leaves_nothing_else_to_look_for_on_sqlite,
    a_reply_alone_leaves_nothing_else_to_look_for_on_postgres
);
on_both!(
    an_unreachable_target_holds_up_no_other,
    an_unreachable_target_holds_up_no_other_on_sqlite,
    an_unreachable_target_holds_up_no_other_on_postgres
);
on_both!(
    a_quarantined_subscriber_holds_up_no_other,
    a_quarantined_subscriber_holds_up_no_other_on_sqlite,
    a_quarantined_subscriber_holds_up_no_other_on_postgres
);
on_both!(
    a_scheduled_run_delivers_its_events,
    a_scheduled_run_delivers_its_events_on_sqlite,
    a_scheduled_run_delivers_its_events_on_postgres
);
