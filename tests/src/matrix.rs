//! The two sides of a Matrix test: a human with a real E2EE-capable client
//! (matrix-sdk, as any other client would be), and the bot as the real
//! `ikkyu run` process, which a test can SIGKILL and start again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::EncryptionInfo;
use matrix_sdk::ruma::UInt;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::room::create_room::v3::Request as CreateRoom;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::relation::Thread;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, Relation, RoomMessageEventContent,
};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use matrix_sdk::{Client, Room};
use tokio::sync::Notify;

use crate::synapse::{Account, Synapse};

/// A message a human saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Where.
    pub room: OwnedRoomId,
    /// Its id.
    pub event_id: OwnedEventId,
    /// Who sent it.
    pub sender: OwnedUserId,
    /// The plain-text body.
    pub body: String,
    /// The HTML body, if any.
    pub html: Option<String>,
    /// `m.notice`, as bots send.
    pub notice: bool,
    /// The message it replies to (plain reply, or reply inside a thread).
    pub in_reply_to: Option<OwnedEventId>,
    /// The thread it is in.
    pub thread_root: Option<OwnedEventId>,
    /// The message it edits.
    pub replaces: Option<OwnedEventId>,
    /// Users it mentions.
    pub mentions: Vec<OwnedUserId>,
    /// Whether it arrived end-to-end encrypted.
    pub encrypted: bool,
}

/// A person using a Matrix client.
pub struct Human {
    /// Their logged-in client (E2EE, SQLite store).
    pub client: Client,
    /// Their account.
    pub account: Account,
    seen: Arc<Mutex<Vec<Seen>>>,
    news: Arc<Notify>,
    sync: tokio::task::JoinHandle<()>,
    _store: tempfile::TempDir,
}

impl Drop for Human {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

impl Human {
    /// Registers `name`, logs in and keeps syncing in the background;
    /// every invite is accepted (that is how bots open DMs).
    pub async fn new(synapse: &Synapse, name: &str) -> anyhow::Result<Self> {
        let account = synapse.register(name, false).await?;
        Self::login(synapse, account).await
    }

    /// Logs in as an existing account.
    pub async fn login(synapse: &Synapse, account: Account) -> anyhow::Result<Self> {
        let store = tempfile::tempdir()?;
        let client = Client::builder()
            .homeserver_url(&synapse.url)
            .sqlite_store(store.path(), None)
            .build()
            .await?;
        client
            .matrix_auth()
            .login_username(&account.user_id, &account.password)
            .initial_device_display_name("test human")
            .send()
            .await?;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let news = Arc::new(Notify::new());
        {
            let (seen, news) = (seen.clone(), news.clone());
            client.add_event_handler(
                move |ev: OriginalSyncRoomMessageEvent, room: Room, enc: Option<EncryptionInfo>| {
                    let (seen, news) = (seen.clone(), news.clone());
                    async move {
                        record(&seen, ev, room.room_id().to_owned(), enc.is_some());
                        news.notify_waiters();
                    }
                },
            );
        }
        // Accept every invite: DMs from the bot arrive as invites.
        client.add_event_handler(
            |ev: StrippedRoomMemberEvent, room: Room, client: Client| async move {
                if Some(ev.state_key.as_ref()) == client.user_id()
                    && ev.content.membership == MembershipState::Invite
                {
                    let _ = room.join().await;
                }
            },
        );
        client.sync_once(SyncSettings::default()).await?;
        let sync_client = client.clone();
        let sync = tokio::spawn(async move {
            // A big timeline limit: this client does not page back gaps, and
            // a burst must not be cut short (`limited`) under it.
            let mut filter = FilterDefinition::default();
            filter.room.timeline.limit = Some(UInt::from(1000u32));
            let settings = SyncSettings::default()
                .filter(Filter::FilterDefinition(filter))
                .timeout(Duration::from_millis(500));
            loop {
                if let Err(e) = sync_client.sync_once(settings.clone()).await {
                    eprintln!(
                        "{}: sync failed: {e}",
                        sync_client
                            .user_id()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Ok(Self {
            client,
            account,
            seen,
            news,
            sync,
            _store: store,
        })
    }

    /// The user id.
    pub fn user_id(&self) -> &str {
        &self.account.user_id
    }

    /// Creates a room, end-to-end encrypted if asked, inviting `invite`.
    pub async fn create_room(&self, invite: &[&str], encrypted: bool) -> anyhow::Result<Room> {
        let mut request = CreateRoom::new();
        request.invite = invite
            .iter()
            .map(|u| UserId::parse(*u))
            .collect::<Result<_, _>>()?;
        if encrypted {
            request.initial_state = vec![
                InitialStateEvent::with_empty_state_key(
                    RoomEncryptionEventContent::with_recommended_defaults(),
                )
                .to_raw_any(),
            ];
        }
        Ok(self.client.create_room(request).await?)
    }

    /// Opens a direct-message room with `user` (invited with `is_direct`),
    /// as "Start chat" in a client does.
    pub async fn create_dm(&self, user: &str) -> anyhow::Result<Room> {
        Ok(self.client.create_dm(&UserId::parse(user)?).await?)
    }

    /// Waits until `user` has `membership` in `room`, as this client sees it.
    pub async fn wait_membership(
        &self,
        room: &Room,
        user: &str,
        membership: MembershipState,
        within: Duration,
    ) -> anyhow::Result<()> {
        let user = UserId::parse(user)?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = room.get_member_no_sync(&user).await?
                && *m.membership() == membership
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{user} did not reach {membership:?} in {} within {within:?}",
                    room.room_id()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a plain text message; its event id.
    pub async fn say(&self, room: &Room, text: &str) -> anyhow::Result<OwnedEventId> {
        Ok(room
            .send(RoomMessageEventContent::text_plain(text))
            .await?
            .response
            .event_id)
    }

    /// Sends a message with HTML (a pill, say).
    pub async fn say_html(
        &self,
        room: &Room,
        text: &str,
        html: &str,
    ) -> anyhow::Result<OwnedEventId> {
        Ok(room
            .send(RoomMessageEventContent::text_html(text, html))
            .await?
            .response
            .event_id)
    }

    /// Sends a reply to `to` as clients do: `text` with the quote
    /// fallback already in it, and `html` with its `<mx-reply>` block.
    pub async fn say_reply(
        &self,
        room: &Room,
        to: &OwnedEventId,
        text: &str,
        html: &str,
    ) -> anyhow::Result<OwnedEventId> {
        use matrix_sdk::ruma::events::relation::{InReplyTo, Reply};
        let mut content = RoomMessageEventContent::text_html(text, html);
        content.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(to.clone()))));
        Ok(room.send(content).await?.response.event_id)
    }

    /// Sends a message into the thread under `root`.
    pub async fn say_in_thread(
        &self,
        room: &Room,
        root: &OwnedEventId,
        text: &str,
    ) -> anyhow::Result<OwnedEventId> {
        let mut content = RoomMessageEventContent::text_plain(text);
        content.relates_to = Some(Relation::Thread(Thread::plain(root.clone(), root.clone())));
        Ok(room.send(content).await?.response.event_id)
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The messages replying to `event`.
    pub fn replies_to(&self, event: &OwnedEventId) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.in_reply_to.as_ref() == Some(event))
            .collect()
    }

    /// Waits until `check` finds something in what was seen.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&[Seen]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.news.notified();
            if let Some(found) = check(&self.seen()) {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let bodies: Vec<String> = self
                    .seen()
                    .iter()
                    .map(|s| format!("{}: {}", s.sender, s.body))
                    .collect();
                bail!(
                    "{} waited {within:?} for {what}; seen:\n{}",
                    self.user_id(),
                    bodies.join("\n")
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), notified).await;
        }
    }

    /// Waits for the one reply to `event` and returns it.
    pub async fn reply_to(&self, event: &OwnedEventId, within: Duration) -> anyhow::Result<Seen> {
        self.wait_for(within, &format!("a reply to {event}"), |seen| {
            seen.iter()
                .find(|s| s.in_reply_to.as_ref() == Some(event))
                .cloned()
        })
        .await
    }
}

fn record(
    seen: &Mutex<Vec<Seen>>,
    ev: OriginalSyncRoomMessageEvent,
    room: OwnedRoomId,
    encrypted: bool,
) {
    let (body, html, notice) = match &ev.content.msgtype {
        MessageType::Text(t) => (
            t.body.clone(),
            t.formatted.as_ref().map(|f| f.body.clone()),
            false,
        ),
        MessageType::Notice(n) => (
            n.body.clone(),
            n.formatted.as_ref().map(|f| f.body.clone()),
            true,
        ),
        other => (other.body().to_owned(), None, false),
    };
    let (mut in_reply_to, mut thread_root, mut replaces) = (None, None, None);
    match &ev.content.relates_to {
        Some(Relation::Reply(r)) => in_reply_to = Some(r.in_reply_to.event_id.clone()),
        Some(Relation::Thread(t)) => {
            thread_root = Some(t.event_id.clone());
            if !t.is_falling_back {
                in_reply_to = t.in_reply_to.as_ref().map(|r| r.event_id.clone());
            }
        }
        Some(Relation::Replacement(r)) => replaces = Some(r.event_id.clone()),
        _ => {}
    }
    let mentions = ev
        .content
        .mentions
        .as_ref()
        .map(|m| m.user_ids.iter().cloned().collect())
        .unwrap_or_default();
    if let Ok(mut s) = seen.lock() {
        s.push(Seen {
            room,
            event_id: ev.event_id,
            sender: ev.sender,
            body,
            html,
            notice,
            in_reply_to,
            thread_root,
            replaces,
            mentions,
            encrypted,
        });
    }
}

/// The `ikkyu` binary, built once per test process.
pub fn ikkyu_binary() -> anyhow::Result<&'static Path> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(crate::root())
            .args(["build", "--quiet", "-p", "ikkyu", "--bin", "ikkyu"])
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("cargo build -p ikkyu failed with {st}"));
        }
        Ok(crate::root().join("target/debug/ikkyu"))
    })
    .as_deref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The bot as a real `ikkyu run` process with its own folder (config,
/// SQLite database, Matrix store, log).
pub struct BotProcess {
    /// The bot's account.
    pub account: Account,
    /// Its folder.
    pub dir: PathBuf,
    child: Option<Child>,
    runs: u32,
}

impl BotProcess {
    /// Registers a bot account and writes its config: `allowed` may invite
    /// it, `runtime` lines go into `[runtime]`, `extra` is appended after
    /// the `[matrix]` keys (more of them, then other tables).
    pub async fn new(
        synapse: &Synapse,
        name: &str,
        dir: &Path,
        allowed: &[&str],
        runtime: &str,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let account = synapse.register(name, false).await?;
        let plugins = crate::plugins_dir()?;
        let all = r#"grants = ["chat", "kv", "events", "schedule", "directory", "config", "log", "http"]"#;
        let config = format!(
            "[bot]\nuser_id = {user:?}\n\
             [web]\nlisten = \"127.0.0.1:0\"\n\
             [database]\nurl = {db:?}\n\
             [runtime]\nplugins_dir = {plugins:?}\ncache_dir = {cache:?}\nwatch = false\n{runtime}\n\
             [plugins.points]\n{all}\n[plugins.misbehave]\n{all}\n\
             [plugins.announce]\n{all}\nrooms = [\"*\"]\n\
             [matrix]\nhomeserver = {url:?}\npassword = {pw:?}\nallowed_inviters = {allowed:?}\n{extra}",
            user = account.user_id,
            db = crate::sqlite_url(dir),
            cache = crate::root().join("target/test-cache"),
            url = synapse.url,
            pw = account.password,
        );
        std::fs::write(dir.join("ikkyu.toml"), config)?;
        Ok(Self {
            account,
            dir: dir.to_owned(),
            child: None,
            runs: 0,
        })
    }

    /// Starts `ikkyu run`.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.runs += 1;
        let log = std::fs::File::create(self.dir.join(format!("bot-{}.log", self.runs)))?;
        let child = Command::new(ikkyu_binary()?)
            .arg("--config")
            .arg(self.dir.join("ikkyu.toml"))
            .arg("run")
            .env(
                "IKKYU_LOG",
                "info,ikkyu=debug,matrix_sdk=warn,matrix_sdk_crypto=error,matrix_sdk_base=warn",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ikkyu run")?;
        self.child = Some(child);
        Ok(())
    }

    /// Runs `ikkyu verify` (the bot must be stopped); its output.
    pub fn verify(&self) -> anyhow::Result<String> {
        let out = Command::new(ikkyu_binary()?)
            .arg("--config")
            .arg(self.dir.join("ikkyu.toml"))
            .arg("verify")
            .stdin(Stdio::null())
            .output()
            .context("running ikkyu verify")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "ikkyu verify failed with {}:\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// SIGKILLs the bot: no shutdown, no flushing, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Where its web entry point listens (the config takes any free port).
    pub async fn web_address(&self) -> anyhow::Result<String> {
        crate::web_address(|| self.log()).await
    }

    /// The bot's log of its latest run, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("bot-{}.log", self.runs))).unwrap_or_default()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(st) = child.try_wait()?
        {
            bail!("ikkyu run exited with {st}:\n{}", self.log());
        }
        Ok(())
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
