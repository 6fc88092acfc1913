//! Reading the rooms: the sync loop that answers every command exactly once.
//!
//! Never lose: the sync position is saved in the bot's database only after
//! every command before it was committed, and a timeline the server cut
//! short (`limited`) is paged back until it meets what was seen before.
//! Never repeat: each command's event id is the processed-message marker
//! committed with its answer, and replies are sent with a transaction id
//! the homeserver deduplicates. Commands sent while the bot was down are
//! answered if they are younger than `matrix.max_command_age`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::sync::{Notify, mpsc};

use anyhow::Context as _;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEvent;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::Direction;
use matrix_sdk::ruma::api::client::filter::{
    Filter as EventFilter, FilterDefinition, LazyLoadOptions, RoomEventFilter,
};
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::{OwnedUserId, UInt, UserId};
use matrix_sdk::sync::SyncResponse;
use matrix_sdk::{Client, Room};

use super::incoming::{Seen, classify};
use crate::bot::Bot;
use crate::chat::Incoming;
use crate::config::MatrixConfig;
use crate::outage::Outage;

/// The key of the Matrix sync position in `chat_positions`.
const ADAPTER: &str = "matrix";
/// Events per timeline in a sync; a longer gap is paged back.
const TIMELINE_LIMIT: u32 = 50;
/// Paging back a gap stops after this many events, however long it is.
const MAX_GAP: usize = 2000;
/// How long one sync request waits on the server for something new.
const LONG_POLL: Duration = Duration::from_secs(30);
/// Backoff bounds while the homeserver cannot be reached.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// At most one "I cannot decrypt" notice per room in this time.
const UTD_NOTICE_EVERY: Duration = Duration::from_secs(600);
/// Clock skew allowed when deciding that an event was seen before.
const SKEW_MS: i64 = 60_000;

/// The sync loop of one bot.
pub struct Syncer {
    client: Client,
    bot: Arc<Bot>,
    matrix: MatrixConfig,
    me: OwnedUserId,
    /// When each room was last told about an undecryptable message.
    told_utd: std::sync::Mutex<HashMap<String, Instant>>,
    /// One queue per room: a room's commands are answered in the order
    /// they were sent, and a slow one holds up only its own room.
    rooms: std::sync::Mutex<HashMap<String, RoomQueue>>,
    /// Where invites marked `is_direct` are recorded once joined.
    direct_joins: super::DirectJoins,
    /// The newest read position whose commands, and all before, were
    /// answered, while it waits to be saved.
    answered: std::sync::Mutex<Option<(String, i64)>>,
}

/// A room's queue: events to answer, each with the batch it belongs to.
type RoomQueue = mpsc::UnboundedSender<(Seen, Arc<Batch>)>;

/// The commands of one sync response still being answered. The position
/// after a response is saved only once its batch and every batch before it
/// are done: a low-water mark, so rooms move on independently and a crash
/// never skips a command.
#[derive(Debug, Default)]
struct Batch {
    pending: AtomicUsize,
    done: Notify,
}

impl Batch {
    fn add(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    fn finish_one(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.done.notify_one();
        }
    }

    /// Resolves when every command of the batch was answered. One waiter
    /// at a time (the saver), so `notify_one`'s stored permit is never
    /// lost, and the count is read before each wait, so a wait dropped and
    /// begun again (the saver's timer firing meanwhile) misses nothing.
    async fn wait(&self) {
        while self.pending.load(Ordering::SeqCst) > 0 {
            self.done.notified().await;
        }
    }
}

/// Sync responses read but not yet saved, at most: past this the loop
/// waits for rooms to catch up instead of reading further ahead.
const UNSAVED_BATCHES: usize = 64;

/// How often, at most, the sync position is saved while commands keep
/// coming; at most this much is replayed after a restart.
const SAVE_POSITION_EVERY: Duration = Duration::from_secs(1);

/// A read position (the sync token and when it was read) with the batch
/// of commands it came with.
type Unsaved = (String, i64, Arc<Batch>);

/// Moves each read position into `answered` once its batch is done, in
/// the order read, and calls `save` (which takes it from there) for the
/// first at once, then at most once per `every` while positions keep
/// coming, and once more when they stop; a slow command holds back the
/// positions after it, never the save of those before. Ends when the
/// sender is gone.
async fn pace_saves<S, F>(
    mut unsaved: mpsc::Receiver<Unsaved>,
    answered: &std::sync::Mutex<Option<(String, i64)>>,
    every: Duration,
    save: S,
) where
    S: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    let mut next_save = tokio::time::Instant::now();
    // The position whose batch is being waited for.
    let mut current: Option<Unsaved> = None;
    loop {
        let due = answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let batch = current.as_ref().map(|(_, _, batch)| batch.clone());
        tokio::select! {
            () = async { if let Some(b) = &batch { b.wait().await } }, if batch.is_some() => {
                if let Some((token, read_ms, _)) = current.take() {
                    *answered.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((token, read_ms));
                }
                if tokio::time::Instant::now() < next_save {
                    continue;
                }
            }
            () = tokio::time::sleep_until(next_save), if due => {}
            next = unsaved.recv(), if current.is_none() => {
                match next {
                    Some(u) => current = Some(u),
                    // The sync loop ended; [`Syncer::save_answered`] keeps
                    // what it answered.
                    None => return,
                }
                continue;
            }
        }
        save().await;
        next_save = tokio::time::Instant::now() + every;
    }
}

impl Syncer {
    /// A loop for `client`, answering through `bot`.
    pub fn new(
        client: Client,
        bot: Arc<Bot>,
        matrix: MatrixConfig,
        direct_joins: super::DirectJoins,
    ) -> anyhow::Result<Self> {
        let me = client
            .user_id()
            .context("the Matrix client is not logged in")?
            .to_owned();
        Ok(Self {
            client,
            bot,
            matrix,
            me,
            told_utd: std::sync::Mutex::default(),
            rooms: std::sync::Mutex::default(),
            direct_joins,
            answered: std::sync::Mutex::default(),
        })
    }

    /// Syncs until the process ends. Homeserver and database trouble is
    /// waited out with backoff and logged; a command is committed before
    /// the position after it is saved, however long that takes. Delivery
    /// is [`Bot::run_delivery`]'s, which runs beside this loop.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let mut outage = Outage::new("reading the saved sync position");
        let mut position = loop {
            match self.bot.db.chat_position(ADAPTER).await {
                Ok(p) => break p,
                Err(e) => outage.wait(&e).await,
            }
        };
        outage.over();
        tracing::debug!(?position, "starting to sync");
        if position.is_none() {
            tracing::info!("first sync: earlier room history is not answered");
        }
        // Invites that arrived while the bot was down.
        self.invites(self.client.invited_rooms()).await;
        let (unsaved, saving) = mpsc::channel(UNSAVED_BATCHES);
        let saver = tokio::spawn(self.clone().save_positions(saving));
        let sync_filter = self.sync_filter().await;
        let mut backoff = BACKOFF_MIN;
        let mut failing_since: Option<Instant> = None;
        let mut first = true;
        loop {
            // The first request after a start returns at once, with what
            // came while the bot was away: catching up must not wait for
            // the next message to end a long poll.
            let mut settings = SyncSettings::default()
                .filter(sync_filter.clone())
                .timeout(if first { Duration::ZERO } else { LONG_POLL });
            if let Some((token, _)) = &position {
                settings = settings.token(token.clone());
            }
            let response = match self.client.sync_once(settings).await {
                Ok(r) => r,
                Err(e) => {
                    self.bot
                        .link()
                        .down(&format!("cannot sync with the homeserver: {e}"));
                    let since = failing_since.get_or_insert_with(Instant::now);
                    tracing::warn!(
                        "cannot sync with the homeserver (failing for {}s); retrying in {}s: {e}",
                        since.elapsed().as_secs(),
                        backoff.as_secs()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            tracing::debug!(
                next = %response.next_batch,
                joined = response.rooms.joined.len(),
                invited = response.rooms.invited.len(),
                "synced"
            );
            self.bot.link().up();
            if let Some(since) = failing_since.take() {
                tracing::info!(
                    "reconnected to the homeserver after {}s",
                    since.elapsed().as_secs()
                );
            }
            backoff = BACKOFF_MIN;
            let invited = response
                .rooms
                .invited
                .keys()
                .filter_map(|id| self.client.get_room(id))
                .collect();
            self.invites(invited).await;
            let batch = Arc::new(Batch::default());
            if let Some((token, read_ms)) = &position {
                if first && replayed(&response, token) {
                    self.catch_up(token, *read_ms, &batch).await;
                }
                self.timelines(&response, *read_ms, &batch).await;
            }
            if first {
                // The start-up benchmark times exec to this line.
                tracing::info!("first sync handled: answering commands");
            }
            first = false;
            let now = self.bot.now_ms();
            if unsaved
                .send((response.next_batch.clone(), now, batch))
                .await
                .is_err()
            {
                anyhow::bail!("the task saving the sync position ended: {:?}", saver.await);
            }
            position = Some((response.next_batch, now));
        }
    }

    /// The filter every sync names. Uploaded once and kept in matrix-sdk's
    /// store under a name made of its own definition, so a newer ikkyu with
    /// another definition uploads that one rather than reusing the old.
    /// Sent whole with every request only if the upload fails: the
    /// homeserver then parses and validates it on every sync, work it
    /// does just as the bot's reply arrives to be stored.
    async fn sync_filter(&self) -> Filter {
        let definition = filter(&self.me);
        let uploaded = async {
            let name = format!("ikkyu {}", serde_json::to_string(&definition)?);
            anyhow::Ok(
                self.client
                    .get_or_upload_filter(&name, definition.clone())
                    .await?,
            )
        };
        match uploaded.await {
            Ok(id) => Filter::FilterId(id),
            Err(e) => {
                tracing::warn!(
                    "cannot upload the sync filter; sending it with every request: {e:#}"
                );
                Filter::FilterDefinition(definition)
            }
        }
    }

    /// Saves the newest read position whose commands, and every command
    /// before them, were answered ([`pace_saves`]); database trouble is
    /// waited out.
    ///
    /// A position saved late costs nothing but a replay: after a crash
    /// the responses since the saved one come again, and the commands in
    /// them are recognised as answered by their processed markers (the
    /// same path as a crash between matrix-sdk's save and ours). Saving
    /// after every response was a transaction per command of its own.
    async fn save_positions(self: Arc<Self>, unsaved: mpsc::Receiver<Unsaved>) {
        pace_saves(unsaved, &self.answered, SAVE_POSITION_EVERY, || {
            self.save_answered()
        })
        .await;
    }

    /// Saves the newest answered position not saved yet, if any: the
    /// saver's write, and the last one before a graceful stop, so a
    /// restart replays nothing.
    pub async fn save_answered(&self) {
        let Some((token, read_ms)) = self
            .answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let mut outage = Outage::new("saving the sync position");
        while let Err(e) = self
            .bot
            .db
            .save_chat_position(ADAPTER, &token, read_ms)
            .await
        {
            outage.wait(&e).await;
        }
        outage.over();
    }

    /// Joins rooms the bot is invited to by allowed users; declines others.
    async fn invites(&self, rooms: Vec<Room>) {
        for room in rooms {
            let room_id = room.room_id().to_owned();
            let inviter = match room.invite_details().await {
                Ok(invite) => invite.inviter_id.to_string(),
                Err(e) => {
                    tracing::warn!(room = %room_id, "cannot read the invite: {e}");
                    continue;
                }
            };
            let result = if self.matrix.may_invite(&inviter) {
                tracing::info!(room = %room_id, %inviter, "joining on invite");
                let direct = room.is_direct().await.unwrap_or(false);
                let joined = room.join().await;
                if direct
                    && joined.is_ok()
                    && let Ok(mut rooms) = self.direct_joins.lock()
                {
                    rooms.insert(room_id.to_string());
                }
                joined
            } else {
                tracing::warn!(room = %room_id, %inviter, "declining an invite from a user not in matrix.allowed_inviters");
                room.leave().await
            };
            if let Err(e) = result {
                tracing::warn!(room = %room_id, "answering the invite failed: {e}");
            }
        }
    }

    /// Answers the commands in every joined room's new timeline; rooms in
    /// parallel, each room's commands in the order they were sent.
    async fn timelines(
        self: &Arc<Self>,
        response: &SyncResponse,
        saved_ms: i64,
        batch: &Arc<Batch>,
    ) {
        let mut timelines = Vec::new();
        for (room_id, update) in &response.rooms.joined {
            let Some(room) = self.client.get_room(room_id) else {
                continue;
            };
            tracing::debug!(room = %room_id, events = update.timeline.events.len(), limited = update.timeline.limited, "timeline");
            let events = if update.timeline.limited {
                self.gap(&room, &response.next_batch, saved_ms).await
            } else {
                update.timeline.events.clone()
            };
            timelines.push((room, events));
        }
        self.answer_rooms(timelines, batch);
    }

    /// Reads every joined room forward from `position` with `/messages`.
    ///
    /// Needed after a crash between matrix-sdk storing a sync response and
    /// this loop saving its own position: the server then answers the
    /// replayed sync with the token matrix-sdk already has, and matrix-sdk
    /// drops it as a repeat, so the messages in it never reach the bot.
    /// Messages already answered are recognised by their processed marker.
    async fn catch_up(self: &Arc<Self>, position: &str, saved_ms: i64, batch: &Arc<Batch>) {
        let mut timelines = Vec::new();
        for room in self.client.joined_rooms() {
            let mut events = self
                .page(
                    &room,
                    position,
                    Direction::Forward,
                    |_| false,
                    "catching up failed; commands sent while the bot was down may go unanswered",
                )
                .await;
            // Only what is newer than the last saved position can be unseen.
            events.retain(|e| {
                e.timestamp()
                    .is_none_or(|t| i64::from(t.0) >= saved_ms - SKEW_MS)
            });
            if !events.is_empty() {
                tracing::info!(room = %room.room_id(), events = events.len(), "caught up on messages from before the restart");
                timelines.push((room, events));
            }
        }
        self.answer_rooms(timelines, batch);
    }

    /// Queues the commands in each room's events on that room's queue;
    /// rooms in parallel, each room's commands in the order they were sent.
    fn answer_rooms(
        self: &Arc<Self>,
        timelines: Vec<(Room, Vec<TimelineEvent>)>,
        batch: &Arc<Batch>,
    ) {
        for (room, events) in timelines {
            let seen: Vec<Seen> = events
                .iter()
                .map(|e| classify(e, room.room_id(), &self.me))
                .collect();
            // What came before the bot joined is history, not for it.
            let start = seen
                .iter()
                .rposition(|s| *s == Seen::BotJoined)
                .map_or(0, |i| i + 1);
            for s in seen.into_iter().skip(start) {
                if !matches!(s, Seen::Other | Seen::BotJoined) {
                    self.enqueue(room.room_id().as_str(), s, batch.clone());
                }
            }
        }
    }

    /// Puts `seen` on `room`'s queue, starting the room's worker if it has
    /// none (or its worker is gone).
    fn enqueue(self: &Arc<Self>, room: &str, seen: Seen, batch: Arc<Batch>) {
        batch.add();
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let job = match rooms.get(room) {
            Some(queue) => match queue.send((seen, batch)) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => (seen, batch),
        };
        let (queue, mut jobs) = mpsc::unbounded_channel::<(Seen, Arc<Batch>)>();
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((seen, batch)) = jobs.recv().await {
                // A host bug in one command must not stop the room, nor
                // keep the position from being saved.
                if AssertUnwindSafe(this.answer(seen))
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!("answering a message panicked; going on with the next");
                }
                batch.finish_one();
            }
        });
        if queue.send(job).is_ok() {
            rooms.insert(room.to_owned(), queue);
        }
    }

    /// A timeline the server cut short, read again whole and unfiltered,
    /// oldest first: paged back from `end` (the response's position) until
    /// an event older than the last saved position, the bot's own join, or
    /// the start of the room.
    ///
    /// Read from the end rather than from the cut: the sync filter leaves
    /// out the bot's own events, its join among them, and a room the bot
    /// has just joined always comes cut short, with the history from before
    /// the join in it. Only the unfiltered room says where the join was.
    async fn gap(&self, room: &Room, end: &str, saved_ms: i64) -> Vec<TimelineEvent> {
        let seen_before = |event: &TimelineEvent| {
            event
                .timestamp()
                .is_some_and(|t| i64::from(t.0) < saved_ms - SKEW_MS)
                || classify(event, room.room_id(), &self.me) == Seen::BotJoined
        };
        let mut collected = self
            .page(
                room,
                end,
                Direction::Backward,
                seen_before,
                "paging back a gap failed; older commands in it are not answered",
            )
            .await;
        tracing::info!(room = %room.room_id(), events = collected.len(), "read a timeline the server cut short");
        collected.reverse();
        collected
    }

    /// Reads `room` with `/messages` from the token `from` in `dir`, in the
    /// order read, up to and including the first event `last` accepts, or
    /// to the end of the room, or [`MAX_GAP`] events, whichever is first.
    /// A failing request ends the reading with what was read so far, and
    /// `failed` in the log.
    async fn page(
        &self,
        room: &Room,
        from: &str,
        dir: Direction,
        last: impl Fn(&TimelineEvent) -> bool,
        failed: &str,
    ) -> Vec<TimelineEvent> {
        let mut collected = Vec::new();
        let mut from = from.to_owned();
        loop {
            let mut options = MessagesOptions::new(dir).from(Some(from.as_str()));
            options.limit = UInt::from(100u32);
            let page = match room.messages(options).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(room = %room.room_id(), "{failed}: {e}");
                    return collected;
                }
            };
            // Reading forward, an empty page is the present even when the
            // server hands out another token.
            let at_present = page.chunk.is_empty() && dir == Direction::Forward;
            for event in page.chunk {
                let stop = last(&event);
                collected.push(event);
                if stop {
                    return collected;
                }
            }
            if collected.len() >= MAX_GAP {
                tracing::warn!(room = %room.room_id(), "more than {MAX_GAP} events to read; older commands among them are not answered");
                return collected;
            }
            match page.end {
                Some(end) if !at_present && end != from => from = end,
                _ => return collected,
            }
        }
    }

    /// Runs, skips or reports one event. A failure other than the
    /// database being away (which is waited out) is logged: the message
    /// could not be answered, and the bot goes on with the next.
    async fn answer(&self, seen: Seen) {
        if let Err(e) = self.answer_or_fail(seen).await {
            tracing::error!("a message could not be answered: {e:#}");
        }
    }

    async fn answer_or_fail(&self, seen: Seen) -> anyhow::Result<()> {
        match seen {
            Seen::Message(msg) if self.bot.addressed(&msg.body) => {
                let age_ms = self.bot.now_ms() - msg.sent_ms;
                let max = self.matrix.max_command_age;
                if age_ms > i64::try_from(max.as_millis()).unwrap_or(i64::MAX) {
                    let reply = too_old(&msg, age_ms, max);
                    self.bot.skip(&msg, reply).await?;
                } else {
                    let handled = self.bot.answer(&msg).await?;
                    tracing::debug!(event = %msg.id, ?handled, "command");
                }
            }
            Seen::Undecryptable(msg) if self.should_tell_utd(&msg.room) => {
                tracing::warn!(room = %msg.room, event = %msg.id, sender = %msg.sender, "cannot decrypt a message");
                let reply = format!(
                    "I could not decrypt a message from {} here, so I cannot tell if it was a command. \
                     If it was, send it again; if this keeps happening, verify my device \
                     (the operator runs `ikkyu verify`) or check that I was in the room when it was sent.",
                    msg.sender
                );
                self.bot.skip(&msg, reply).await?;
            }
            _ => {}
        }
        Ok(())
    }

    fn should_tell_utd(&self, room: &str) -> bool {
        let mut told = self.told_utd.lock().unwrap_or_else(PoisonError::into_inner);
        match told.get(room) {
            Some(at) if at.elapsed() < UTD_NOTICE_EVERY => false,
            _ => {
                told.insert(room.to_owned(), Instant::now());
                true
            }
        }
    }
}

/// Whether the first sync after a start may have been dropped by
/// matrix-sdk as a repeat: no room changed, yet the position moved.
fn replayed(response: &SyncResponse, from: &str) -> bool {
    response.next_batch != from
        && response.rooms.joined.is_empty()
        && response.rooms.invited.is_empty()
        && response.rooms.left.is_empty()
}

/// The answer to a command that waited too long to be run.
fn too_old(msg: &Incoming, age_ms: i64, max: Duration) -> String {
    let age = Duration::from_secs(u64::try_from(age_ms / 1000).unwrap_or(0));
    format!(
        "{}, I skipped {}: it was sent {} ago, while I was away, and I do not run commands older than {}. Send it again if it still matters.",
        msg.sender,
        crate::text::quoted(&msg.body),
        humantime::format_duration(age),
        humantime::format_duration(max)
    )
}

/// Enough of each timeline to answer a burst in one sync, with members
/// loaded lazily (the bot never needs the whole member list).
fn filter(me: &UserId) -> FilterDefinition {
    let mut filter = FilterDefinition::default();
    filter.room.timeline.limit = Some(UInt::from(TIMELINE_LIMIT));
    // The bot's own events are not for it to answer, and the homeserver
    // ends a long poll only for a response with something in it: left in,
    // every reply came back as a sync response of its own to handle, one
    // for each command.
    filter.room.timeline.not_senders = vec![me.to_owned()];
    filter.room.state.lazy_load_options = LazyLoadOptions::Enabled {
        include_redundant_members: false,
    };
    // Presence, typing and read receipts mean nothing to a bot; left in,
    // every person typing or reading would end a long poll and cost a
    // whole sync response to handle.
    filter.presence = EventFilter::ignore_all();
    filter.room.ephemeral = RoomEventFilter::ignore_all();
    // matrix-sdk evaluates push rules for every event it is given, reading
    // the account's rules back from its store and parsing them on every
    // response: a third of the work it did per command (BENCHMARKS.md,
    // issue 14, eleventh part). A bot notifies nobody; without the rules
    // stored, the SDK uses the spec's defaults, built in code.
    filter.account_data.not_types = vec![PUSH_RULES.to_owned()];
    filter
}

/// The account data the bot never reads: its push rules.
const PUSH_RULES: &str = "m.push_rules";

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions are saved in the order read, only once their commands
    /// were answered, the first at once, then the newest at most once a
    /// second, and the last when responses stop coming.
    #[tokio::test(start_paused = true)]
    async fn positions_are_saved_answered_in_order_at_most_once_a_second() {
        let (tx, rx) = mpsc::channel::<Unsaved>(UNSAVED_BATCHES);
        let answered = Arc::new(std::sync::Mutex::new(None));
        // What was saved, in order, with when.
        let saved = Arc::new(std::sync::Mutex::new(Vec::<(String, u128)>::new()));
        let start = tokio::time::Instant::now();
        let saver = {
            let (answered, saved) = (answered.clone(), saved.clone());
            tokio::spawn(async move {
                pace_saves(rx, &answered, Duration::from_secs(1), || async {
                    let taken = answered.lock().expect("not poisoned").take();
                    if let Some((token, _)) = taken {
                        let at = start.elapsed().as_millis();
                        saved.lock().expect("not poisoned").push((token, at));
                    }
                })
                .await;
            })
        };
        let batch = |pending: usize| {
            let b = Arc::new(Batch::default());
            (0..pending).for_each(|_| b.add());
            b
        };
        let step = Duration::from_millis(100);
        // s1 answered at once; s2 and s3 every 100 ms; s4's command still
        // being answered, and s5 behind it.
        tx.send(("s1".into(), 0, batch(0)))
            .await
            .expect("saver runs");
        tokio::time::sleep(step).await;
        tx.send(("s2".into(), 0, batch(0)))
            .await
            .expect("saver runs");
        tokio::time::sleep(step).await;
        tx.send(("s3".into(), 0, batch(0)))
            .await
            .expect("saver runs");
        let slow = batch(1);
        tx.send(("s4".into(), 0, slow.clone()))
            .await
            .expect("saver runs");
        tx.send(("s5".into(), 0, batch(0)))
            .await
            .expect("saver runs");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // s3 goes out a second after s1, while s4's command is answered;
        // s5 waits behind s4.
        let seen = || saved.lock().expect("not poisoned").clone();
        assert_eq!(seen(), vec![("s1".into(), 0), ("s3".into(), 1000)]);
        slow.finish_one();
        tokio::time::sleep(step).await;
        // s4 at once (more than a second since s3), s5 a second later.
        assert_eq!(seen()[2..], [("s4".into(), 2700)]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(seen()[3..], [("s5".into(), 3700)]);
        drop(tx);
        saver.await.expect("the saver ends with the sync loop");
    }

    /// The filter leaves out the push rules, and only them: `m.direct`
    /// is how matrix-sdk knows a room is a direct chat, where the bot
    /// answers without being addressed.
    #[test]
    fn the_filter_leaves_out_only_the_push_rules_of_the_account_data() {
        let me = UserId::parse("@ikkyu:example.org").expect("a user id");
        let account_data = filter(&me).account_data;
        assert_eq!(account_data.not_types, vec!["m.push_rules".to_owned()]);
        assert!(account_data.types.is_none(), "{:?}", account_data.types);
        assert_ne!(account_data.limit, Some(UInt::MIN));
    }
}
