//! The bot on a real Matrix homeserver (Synapse, started by the test
//! harness), talked to by people with a real E2EE client, the bot being
//! the real `ikkyu run` process.

use std::time::Duration;

use ikkyu::chat::matrix::MatrixChat;
use ikkyu::config::Config;
use ikkyu_e2e::matrix::{BotProcess, Human, Seen};
use ikkyu_e2e::synapse::{self, Synapse};
use matrix_sdk::Room;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::{OwnedEventId, UserId};

/// Generous: Synapse answers in ~50 ms, but CI machines are slow and a bot
/// restart compiles nothing (the plugin cache) yet syncs from scratch.
const WAIT: Duration = Duration::from_secs(40);

/// A human, a running bot they may invite, and a room with both in it.
struct Scene {
    human: Human,
    bot: BotProcess,
    room: Room,
    _dir: tempfile::TempDir,
}

/// A human (`<name>-alice`) and a bot (`<name>-bot`, not started) that
/// they may invite, with the bot's folder.
async fn pair(
    name: &str,
    runtime: &str,
    extra: &str,
) -> anyhow::Result<(Human, BotProcess, tempfile::TempDir)> {
    let hs = synapse::shared().await?;
    let human = Human::new(hs, &format!("{name}-alice")).await?;
    let dir = tempfile::tempdir()?;
    let extra = extra.replace("$HUMAN", human.user_id());
    let bot = BotProcess::new(
        hs,
        &format!("{name}-bot"),
        dir.path(),
        &[human.user_id()],
        runtime,
        &extra,
    )
    .await?;
    Ok((human, bot, dir))
}

async fn scene(name: &str, encrypted: bool, runtime: &str, extra: &str) -> anyhow::Result<Scene> {
    let (human, mut bot, dir) = pair(name, runtime, extra).await?;
    bot.start()?;
    let room = human
        .create_room(&[&bot.account.user_id], encrypted)
        .await?;
    if let Err(e) = human
        .wait_membership(&room, &bot.account.user_id, MembershipState::Join, WAIT)
        .await
    {
        anyhow::bail!("{e}\nbot log:\n{}", bot.log());
    }
    Ok(Scene {
        human,
        bot,
        room,
        _dir: dir,
    })
}

impl Scene {
    async fn command(&self, text: &str) -> anyhow::Result<(OwnedEventId, Seen)> {
        let id = self.human.say(&self.room, text).await?;
        match self.human.reply_to(&id, WAIT).await {
            Ok(reply) => Ok((id, reply)),
            Err(e) => anyhow::bail!("{e}\nbot log:\n{}", self.bot.log()),
        }
    }

    fn bot_id(&self) -> &str {
        &self.bot.account.user_id
    }

    /// The sync responses with news for a room the bot has handled so far
    /// (a long poll that timed out has none), from its debug log.
    fn wakeups(&self) -> usize {
        self.bot
            .log()
            .lines()
            .filter(|l| l.contains(" synced") && !l.contains("joined=0"))
            .count()
    }

    /// Waits for a reply to each of `sent`, then, once late duplicates
    /// would have arrived, checks that each has exactly one.
    async fn answered_once_each(&self, sent: &[OwnedEventId]) -> anyhow::Result<()> {
        self.human
            .wait_for(WAIT * 2, "a reply to every command", |_| {
                sent.iter()
                    .all(|id| !self.human.replies_to(id).is_empty())
                    .then_some(())
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}\nbot log:\n{}", self.bot.log()))?;
        self.command("!points").await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for id in sent {
            let n = self.human.replies_to(id).len();
            assert_eq!(n, 1, "{id} was answered {n} times");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_commands_as_replies_with_html_pills_and_mentions() -> anyhow::Result<()> {
    let s = scene("plain", false, "", "").await?;
    let me = s.human.user_id().to_owned();

    let (cmd, reply) = s.command(&format!("!points {me}")).await?;
    assert_eq!(reply.in_reply_to.as_ref(), Some(&cmd));
    assert!(reply.notice, "bots answer with m.notice: {reply:?}");
    assert_eq!(reply.sender.as_str(), s.bot_id());
    assert!(
        reply.body.contains(&format!("{me}: 0 points")),
        "{}",
        reply.body
    );
    let html = reply.html.clone().unwrap_or_default();
    assert!(
        html.contains(&format!("https://matrix.to/#/{me}")),
        "a pill for the user: {html}"
    );
    assert!(
        reply.mentions.iter().any(|u| u.as_str() == me),
        "mentions: {:?}",
        reply.mentions
    );

    // A mention of the bot in plain text, and as the pill a client makes.
    let localpart = s
        .bot_id()
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (_, reply) = s.command(&format!("{localpart}: plugins")).await?;
    assert!(reply.body.contains("points"), "{}", reply.body);
    let pill = format!(
        r#"<a href="https://matrix.to/#/{}">Ikkyu Bot</a>: help points"#,
        s.bot_id()
    );
    let id = s
        .human
        .say_html(&s.room, "Ikkyu Bot: help points", &pill)
        .await?;
    let reply = s.human.reply_to(&id, WAIT).await?;
    assert!(
        reply.body.contains("your points and rank"),
        "{}",
        reply.body
    );

    // Chatter is not answered.
    let chatter = s.human.say(&s.room, "lunch anyone?").await?;
    let (_, _) = s.command("!points top").await?;
    assert!(
        s.human.replies_to(&chatter).is_empty(),
        "the bot answered chatter"
    );
    Ok(())
}

/// People typing and reading are not news to a bot. Without the bot's
/// sync filter saying so, each typing notice and read receipt ended its
/// long poll and cost a whole sync response to handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_read_receipts_do_not_wake_the_bot() -> anyhow::Result<()> {
    use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
    use matrix_sdk::ruma::events::receipt::ReceiptThread;

    let s = scene("quiet", false, "", "").await?;
    let (_, reply) = s.command("!points").await?;
    // What the first command set off settles first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = s.wakeups();
    for _ in 0..5 {
        s.room.typing_notice(true).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.room.typing_notice(false).await?;
    }
    s.room
        .send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, reply.event_id)
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.wakeups(),
        before,
        "the bot synced for typing or a receipt:\n{}",
        s.bot.log()
    );
    let (_, reply) = s.command("!points").await?;
    assert!(reply.body.contains("0 points"), "{}", reply.body);
    Ok(())
}

/// Each command costs the bot one sync response: its own reply, which the
/// homeserver would send back as a response of its own, does not wake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_s_own_replies_do_not_wake_it() -> anyhow::Result<()> {
    let s = scene("echo", false, "", "").await?;
    s.command("!points").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = s.wakeups();
    for _ in 0..5 {
        let (_, reply) = s.command("!points").await?;
        assert!(reply.body.contains("0 points"), "{}", reply.body);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let woken = s.wakeups() - before;
    assert!(
        woken <= 5,
        "five commands woke the bot {woken} times (its own replies among them):\n{}",
        s.bot.log()
    );
    Ok(())
}

/// What was said in a room before the bot joined is history, even though
/// the sync the bot joins with carries it and leaves out the bot's join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_before_the_bot_joined_are_not_answered() -> anyhow::Result<()> {
    let (human, mut bot, _dir) = pair("history", "", "").await?;
    bot.start()?;
    let room = human.create_room(&[], false).await?;
    let before = human.say(&room, "!points").await?;
    let also_before = human.say(&room, "!help").await?;
    room.invite_user_by_id(&UserId::parse(bot.account.user_id.as_str())?)
        .await?;
    if let Err(e) = human
        .wait_membership(&room, &bot.account.user_id, MembershipState::Join, WAIT)
        .await
    {
        anyhow::bail!("{e}\nbot log:\n{}", bot.log());
    }
    let after = human.say(&room, "!points").await?;
    let reply = match human.reply_to(&after, WAIT).await {
        Ok(reply) => reply,
        Err(e) => anyhow::bail!("{e}\nbot log:\n{}", bot.log()),
    };
    assert!(reply.body.contains("0 points"), "{}", reply.body);
    // Replies go out in order: one to the history would have come first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in [&before, &also_before] {
        assert!(
            human.replies_to(id).is_empty(),
            "{id}, sent before the bot joined, was answered:\n{}",
            bot.log()
        );
    }
    bot.check_alive()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_in_encrypted_rooms_and_threads() -> anyhow::Result<()> {
    let s = scene("e2ee", true, "", "").await?;
    let (cmd, reply) = s.command("!points").await?;
    assert_eq!(reply.in_reply_to.as_ref(), Some(&cmd));
    assert!(
        reply.encrypted,
        "the reply in an encrypted room must be encrypted: {reply:?}"
    );
    assert!(reply.body.contains("0 points"), "{}", reply.body);

    let root = s.human.say(&s.room, "release 4.2 discussion").await?;
    let cmd = s.human.say_in_thread(&s.room, &root, "!points top").await?;
    let reply = s.human.reply_to(&cmd, WAIT).await?;
    assert_eq!(
        reply.thread_root.as_ref(),
        Some(&root),
        "the answer stays in the thread"
    );
    assert!(reply.encrypted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_invites_from_strangers() -> anyhow::Result<()> {
    let s = scene("stranger", false, "", "").await?;
    let hs = synapse::shared().await?;
    let mallory = Human::new(hs, "stranger-mallory").await?;
    let room = mallory.create_room(&[s.bot_id()], false).await?;
    mallory
        .wait_membership(&room, s.bot_id(), MembershipState::Leave, WAIT)
        .await?;
    // The bot still serves the room it was allowed into.
    s.command("!points").await?;
    assert!(
        s.bot.log().contains("declining an invite"),
        "{}",
        s.bot.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_open_a_room_once_and_reuse_it() -> anyhow::Result<()> {
    let s = scene(
        "dm",
        false,
        "quarantine_after = 1",
        "[roles]\nadmin = [\"$HUMAN\"]",
    )
    .await?;
    let (_, reply) = s.command("!boom").await?;
    assert!(reply.body.contains("crashed"), "{}", reply.body);
    let is_dm = |seen: &[Seen]| -> Vec<Seen> {
        seen.iter()
            .filter(|m| m.room != s.room.room_id() && m.body.contains("quarantined"))
            .cloned()
            .collect()
    };
    let first = s
        .human
        .wait_for(WAIT, "a direct message about the quarantine", |seen| {
            is_dm(seen).first().cloned()
        })
        .await?;
    assert_eq!(first.sender.as_str(), s.bot_id());

    s.command("!plugin reload misbehave").await?;
    s.command("!boom").await?;
    let both = s
        .human
        .wait_for(WAIT, "a second direct message", |seen| {
            let dms = is_dm(seen);
            (dms.len() >= 2).then_some(dms)
        })
        .await?;
    assert_eq!(
        both[0].room, both[1].room,
        "the second DM reuses the first room"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_are_real_replacements() -> anyhow::Result<()> {
    let s = scene("edit", false, "", "").await?;
    // The adapter itself, as a second device of the bot's account.
    let text = std::fs::read_to_string(s.bot.dir.join("ikkyu.toml"))?
        .replace("[matrix]\n", "[matrix]\nstore_dir = \"edit-store\"\n");
    let config = Config::parse(&text, &s.bot.dir.join("ikkyu.toml"), &s.bot.dir)?;
    let matrix = config
        .matrix
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no [matrix]"))?;
    let client = ikkyu::chat::matrix::connect(&config, &matrix).await?;
    client.sync_once(SyncSettings::default()).await?;
    let chat = MatrixChat::new(client);
    let room = s.room.room_id().as_str();
    let first = chat.send(room, "release in **3** minutes").await?;
    let edit = chat
        .edit(room, first.as_str(), "release in **2** minutes")
        .await?;
    let seen = s
        .human
        .wait_for(WAIT, "the edit", |seen| {
            seen.iter().find(|m| m.event_id == edit).cloned()
        })
        .await?;
    assert_eq!(seen.replaces.as_ref(), Some(&first));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_while_down_are_answered_and_old_ones_skipped() -> anyhow::Result<()> {
    let mut s = scene("down", false, "", "max_command_age = \"8s\"").await?;
    s.command("!points").await?;
    s.bot.kill();

    let old = s.human.say(&s.room, "!points top").await?;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let fresh = s.human.say(&s.room, "!points").await?;
    let help = s.human.say(&s.room, "!help").await?;
    s.bot.start()?;

    let skipped = s.human.reply_to(&old, WAIT).await?;
    assert!(
        skipped.body.contains("skipped") && skipped.body.contains("older than"),
        "{}",
        skipped.body
    );
    assert!(
        s.human
            .reply_to(&fresh, WAIT)
            .await?
            .body
            .contains("0 points")
    );
    assert!(s.human.reply_to(&help, WAIT).await?.body.contains("points"));

    // Another restart answers nothing again.
    s.bot.kill();
    s.bot.start()?;
    let (_, _) = s.command("!points").await?;
    for id in [&old, &fresh, &help] {
        assert_eq!(
            s.human.replies_to(id).len(),
            1,
            "{id} answered more than once"
        );
    }
    Ok(())
}

/// More commands than one sync carries arrive while the bot is down: the
/// timeline comes cut short and is read back whole, each command answered
/// once, the ones answered before the restart not again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_longer_than_a_sync_is_read_back_whole() -> anyhow::Result<()> {
    let mut s = scene("gap", false, "", "").await?;
    let (first, _) = s.command("!points").await?;
    s.bot.kill();
    let mut sent = vec![first];
    for i in 0..70 {
        sent.push(
            s.human
                .say(&s.room, &format!("!points top {}", 1 + i % 10))
                .await?,
        );
    }
    s.bot.start()?;
    s.answered_once_each(&sent).await?;
    assert!(
        s.bot.log().contains("read a timeline the server cut short"),
        "the gap was not read back:\n{}",
        s.bot.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_answers_each_command_exactly_once() -> anyhow::Result<()> {
    let mut s = scene("burst", false, "", "").await?;
    s.command("!points").await?;
    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push(
            s.human
                .say(&s.room, &format!("!points top {}", 1 + i % 10))
                .await?,
        );
        if i == 12 || i == 27 {
            // Mid-burst: some commands answered, some committed but not
            // yet sent, some not read at all.
            s.bot.kill();
            s.bot.start()?;
        }
    }
    s.answered_once_each(&sent).await?;
    s.bot.check_alive()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_replies_are_retried_not_dropped() -> anyhow::Result<()> {
    let s = scene("ratelimit", false, "", "").await?;
    let hs: &Synapse = synapse::shared().await?;
    let admin = hs.register("ratelimit-admin", true).await?;
    hs.limit_messages(&admin, s.bot_id(), 1, 2).await?;
    let mut sent = Vec::new();
    for _ in 0..6 {
        sent.push(s.human.say(&s.room, "!points").await?);
    }
    for id in &sent {
        s.human.reply_to(id, WAIT).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_once_when_it_cannot_decrypt_a_message() -> anyhow::Result<()> {
    let s = scene("utd", false, "", "").await?;
    // Encrypted with a session the bot never received a key for.
    let undecryptable = serde_json::json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnB8WlsfQeFw2lOFBpZRT7pkzBC6UBQ9nUbEV1GrE6KuE1FZ0BCk",
        "device_id": "NOSUCHDEVICE",
        "sender_key": "Tu6E0ulGvXUF3SvN4cOnDHgxLj1r1dZwXq3jG1QWbCc",
        "session_id": "c2Vzc2lvbiB0aGUgYm90IG5ldmVyIHNhdw",
    });
    let first = s
        .room
        .send_raw("m.room.encrypted", undecryptable.clone())
        .await?
        .response
        .event_id;
    let notice = s.human.reply_to(&first, WAIT).await?;
    assert!(notice.body.contains("could not decrypt"), "{}", notice.body);
    assert!(notice.body.contains(s.human.user_id()), "{}", notice.body);
    // A second one right after is not told again.
    let second = s
        .room
        .send_raw("m.room.encrypted", undecryptable)
        .await?
        .response
        .event_id;
    s.command("!points").await?;
    assert!(s.human.replies_to(&second).is_empty(), "told twice");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_sets_up_cross_signing_and_keeps_the_device() -> anyhow::Result<()> {
    let (human, mut bot, _dir) = pair("verify", "", "").await?;
    let out = bot.verify()?;
    assert!(out.contains("cross-signing: set up"), "{out}");
    let device = out
        .lines()
        .find_map(|l| l.strip_prefix("device:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    assert!(!device.is_empty(), "{out}");
    // The running bot is the same, verified device, and works in an
    // encrypted room.
    bot.start()?;
    let room = human.create_room(&[&bot.account.user_id], true).await?;
    human
        .wait_membership(&room, &bot.account.user_id, MembershipState::Join, WAIT)
        .await?;
    let id = human.say(&room, "!points").await?;
    let reply = human.reply_to(&id, WAIT).await?;
    assert!(reply.encrypted);
    assert!(
        bot.log().contains(&device),
        "the bot restored another device:\n{}",
        bot.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_losing_the_homeserver_and_logs_in_with_a_token() -> anyhow::Result<()> {
    // Its own homeserver, since this test stops it.
    let hs_dir = tempfile::tempdir()?;
    let mut hs = Synapse::start(hs_dir.path()).await?;
    let human = Human::new(&hs, "outage-alice").await?;
    let dir = tempfile::tempdir()?;
    let mut bot =
        BotProcess::new(&hs, "outage-bot", dir.path(), &[human.user_id()], "", "").await?;
    // Log in with the access token from registration instead of the password.
    let config = std::fs::read_to_string(dir.path().join("ikkyu.toml"))?.replace(
        &format!("password = {:?}", bot.account.password),
        &format!("access_token = {:?}", bot.account.access_token),
    );
    std::fs::write(dir.path().join("ikkyu.toml"), config)?;
    bot.start()?;
    let room = human.create_room(&[&bot.account.user_id], false).await?;
    human
        .wait_membership(&room, &bot.account.user_id, MembershipState::Join, WAIT)
        .await?;
    let id = human.say(&room, "!points").await?;
    human.reply_to(&id, WAIT).await?;
    let health = format!("http://{}/healthz", bot.web_address().await?);
    let answer = reqwest::get(&health).await?;
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.text().await?, "database: up\nchat: connected\n");

    // Longer than the SDK's own retries of one request (about 8 s), so the
    // sync loop itself sees the outage, and so does a supervisor.
    hs.stop();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let answer = reqwest::get(&health).await?;
    assert_eq!(answer.status().as_u16(), 503);
    let body = answer.text().await?;
    assert!(
        body.starts_with("database: up\nchat: down (cannot sync with the homeserver"),
        "{body}"
    );
    hs.restart().await?;
    let id = human.say(&room, "!points top").await?;
    human
        .reply_to(&id, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nbot log:\n{}", bot.log()))?;
    bot.check_alive()?;
    assert_eq!(reqwest::get(&health).await?.status().as_u16(), 200);
    let log = bot.log();
    assert!(log.contains("cannot sync with the homeserver"), "{log}");
    assert!(log.contains("reconnected to the homeserver"), "{log}");
    Ok(())
}

/// The scheduler on the real clock and the real network: an announcement
/// every minute arrives in the room, as a notice of its own (no reply),
/// encrypted like everything else in an encrypted room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_minute_announcement_arrives_in_the_room() -> anyhow::Result<()> {
    let s = scene("announce", true, "", "[roles]\nadmin = [\"$HUMAN\"]\n").await?;
    let (_, reply) = s
        .command("!announce every \"* * * * *\" here Stand-up: write your status")
        .await?;
    assert!(
        reply.body.starts_with("announcement **1**") || reply.body.starts_with("announcement 1"),
        "{}",
        reply.body
    );
    let bot = s.bot_id().to_owned();
    let posted = s
        .human
        .wait_for(Duration::from_secs(90), "the announcement", |seen| {
            seen.iter()
                .find(|m| m.sender == bot && m.body == "Stand-up: write your status")
                .cloned()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nbot log:\n{}", s.bot.log()))?;
    assert!(posted.notice, "announcements are notices");
    assert_eq!(posted.in_reply_to, None, "it answers nobody");
    assert_eq!(posted.room, s.room.room_id());
    let (_, list) = s.command("!schedules").await?;
    assert!(list.body.contains("announce/`user:1`"), "{}", list.body);
    assert!(
        list.body.contains("**ok**"),
        "the run is on record: {}",
        list.body
    );

    // A room may be named by its alias; the homeserver resolves it.
    let alias = matrix_sdk::ruma::RoomAliasId::parse(format!(
        "#standup-{}:{}",
        std::process::id(),
        s.human
            .account
            .user_id
            .split(':')
            .nth(1)
            .unwrap_or("localhost")
    ))?;
    s.human
        .client
        .create_room_alias(&alias, s.room.room_id())
        .await?;
    let (_, reply) = s
        .command(&format!("!announce {alias} Release at 15:00"))
        .await?;
    assert!(
        reply.body.contains(&format!("posted in {alias}")),
        "{}",
        reply.body
    );
    s.human
        .wait_for(WAIT, "the aliased announcement", |seen| {
            seen.iter().find(|m| m.body == "Release at 15:00").cloned()
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_room_means_group_rooms_not_direct_messages() -> anyhow::Result<()> {
    let s = scene("stardm", false, "", "[roles]\nadmin = [\"$HUMAN\"]\n").await?;
    let dm = s.human.create_dm(s.bot_id()).await?;
    s.human
        .wait_membership(&dm, s.bot_id(), MembershipState::Join, WAIT)
        .await?;
    let dm_id = dm.room_id().to_string();
    let (_, reply) = s.command(&format!("!announce {dm_id} hello")).await?;
    let reply = reply.body;
    assert!(
        reply.contains("it is a direct-message room, which rooms = [\"*\"] does not cover"),
        "{reply}"
    );
    let bot = s.bot_id().to_owned();
    assert!(
        !s.human
            .seen()
            .iter()
            .any(|m| m.room == dm.room_id() && m.sender == bot),
        "nothing was posted in the direct-message room"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_command_in_one_room_does_not_hold_up_another() -> anyhow::Result<()> {
    let s = scene("slowroom", false, "call_timeout = \"20s\"", "").await?;
    let other = s
        .human
        .create_room(&[&s.bot.account.user_id], false)
        .await?;
    s.human
        .wait_membership(&other, &s.bot.account.user_id, MembershipState::Join, WAIT)
        .await?;
    let slow = s.human.say(&s.room, "!nap 8").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let quick = s.human.say(&other, "!points").await?;
    s.human.reply_to(&quick, WAIT).await?;
    let quick_took = started.elapsed();
    assert!(
        s.human.replies_to(&slow).is_empty(),
        "the slow command is still running"
    );
    assert!(
        quick_took < Duration::from_secs(6),
        "the other room waited {quick_took:?}\nbot log:\n{}",
        s.bot.log()
    );
    // The slow one is answered too, once, and the room's order is kept.
    let after = s.human.say(&s.room, "!points").await?;
    s.human.reply_to(&slow, WAIT).await?;
    s.human.reply_to(&after, WAIT).await?;
    let seen = s.human.seen();
    let at = |id: &OwnedEventId| seen.iter().position(|m| m.in_reply_to.as_ref() == Some(id));
    assert!(
        at(&slow) < at(&after),
        "answers in the order asked in the room"
    );
    assert_eq!(s.human.replies_to(&slow).len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_are_inert_and_rich_replies_are_commands() -> anyhow::Result<()> {
    let s = scene("inert", false, "", "").await?;
    // An unknown command full of markup and a room ping: echoed as code,
    // with explicit empty mentions.
    let (_, reply) = s
        .command("!x`[click](https://evil.example)`<b>@room</b>")
        .await?;
    let html = reply.html.clone().unwrap_or_default();
    assert!(reply.body.contains("unknown command"), "{}", reply.body);
    assert!(!html.contains("<a href=\"https://evil"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    assert!(reply.mentions.is_empty(), "{:?}", reply.mentions);
    // A command typed as a reply to another message (with the quote
    // fallback clients add) is recognised.
    let earlier = s.human.say(&s.room, "the build is red").await?;
    let me = s.human.user_id().to_owned();
    let body = format!("> <{me}> the build is red\n\n!points top");
    let html = "<mx-reply><blockquote>the build is red</blockquote></mx-reply>!points top";
    let id = s.human.say_reply(&s.room, &earlier, &body, html).await?;
    let reply = s.human.reply_to(&id, WAIT).await?;
    assert!(!reply.body.contains("unknown command"), "{}", reply.body);
    Ok(())
}

/// The release queue on Matrix with three people in the release room:
/// Ann asks, Bob approves, Olga takes it as the admin. Each is told what
/// concerns them by direct message, and a second release of the same
/// critical component cannot start while the first runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_people_walk_a_release_from_request_to_finish() -> anyhow::Result<()> {
    let hs = synapse::shared().await?;
    let ann = Human::new(hs, "rel-ann").await?;
    let bob = Human::new(hs, "rel-bob").await?;
    let olga = Human::new(hs, "rel-olga").await?;
    let dir = tempfile::tempdir()?;
    let extra = format!(
        "[roles]\napprover = [{bob:?}]\nops = [{olga:?}]\n\
         [plugins.release]\ngrants = [\"chat\", \"direct\", \"kv\", \"events\", \"schedule\", \"directory\", \"config\", \"log\", \"http\"]\n\
         rooms = [\"$ROOM\"]\n\
         [plugins.release.config]\nroom = \"$ROOM\"\ncritical = [\"billing\"]\n",
        bob = bob.user_id(),
        olga = olga.user_id()
    );
    let mut bot = BotProcess::new(hs, "rel-bot", dir.path(), &[ann.user_id()], "", &extra).await?;
    let bot_id = bot.account.user_id.clone();
    // The room exists before the bot starts, so its config can name it;
    // the bot takes the invite that waited for it.
    let room = ann
        .create_room(&[bob.user_id(), olga.user_id(), &bot_id], false)
        .await?;
    let config = dir.path().join("ikkyu.toml");
    let text = std::fs::read_to_string(&config)?.replace("$ROOM", room.room_id().as_str());
    std::fs::write(&config, text)?;
    bot.start()?;
    let mut rooms = Vec::new();
    for (who, human) in [("bob", &bob), ("olga", &olga)] {
        let joined = human
            .client
            .join_room_by_id(room.room_id())
            .await
            .map_err(|e| anyhow::anyhow!("{who} cannot join: {e}"))?;
        rooms.push(joined);
    }
    let (bob_room, olga_room) = (rooms.remove(0), rooms.remove(0));
    if let Err(e) = ann
        .wait_membership(&room, &bot_id, MembershipState::Join, WAIT)
        .await
    {
        anyhow::bail!("{e}\nbot log:\n{}", bot.log());
    }
    let say = say_in;
    let dm = |h, what| dm_from(h, &bot_id, room.room_id(), what);
    let asked = say(&ann, &room, "!dobro BILL-1 --component billing").await?;
    assert!(
        asked.body.contains("is in the queue as **#1**")
            || asked.body.contains("is in the queue as #1"),
        "{}",
        asked.body
    );
    dm(&bob, "New release request #1").await?;
    let second = say(&ann, &room, "!dobro BILL-2 --component billing --no-admin").await?;
    assert!(second.body.contains("#2"), "{}", second.body);

    let denied = say(&olga, &olga_room, "!release accept 1").await?;
    assert!(
        denied.body.to_lowercase().contains("approver"),
        "{}",
        denied.body
    );
    let accepted = say(&bob, &bob_room, "!release accept 1").await?;
    assert!(accepted.body.contains("accepted"), "{}", accepted.body);
    dm(&ann, "was accepted by").await?;
    dm(&olga, "needs an admin: `!release here 1`").await?;
    say(&bob, &bob_room, "!release accept 2").await?;

    let early = say(&ann, &room, "!release start 1").await?;
    assert!(early.body.contains("needs an admin"), "{}", early.body);
    let taken = say(&olga, &olga_room, "!release here 1").await?;
    assert!(taken.body.contains("is the admin of #1"), "{}", taken.body);
    dm(&ann, "is the admin of #1").await?;

    let started = say(&ann, &room, "!release start 1").await?;
    assert!(started.body.contains("started by"), "{}", started.body);
    dm(&olga, "started by").await?;
    let locked = say(&ann, &room, "!release start 2").await?;
    assert!(
        locked.body.contains("billing is being released in #1"),
        "{}",
        locked.body
    );

    let finished = say(&ann, &room, "!release finish 1").await?;
    assert!(finished.body.contains("finished by"), "{}", finished.body);
    let now_free = say(&ann, &room, "!release start 2").await?;
    assert!(
        now_free.body.contains("#2") && now_free.body.contains("started by"),
        "{}",
        now_free.body
    );
    let shown = say(&bob, &bob_room, "!release show 1").await?;
    for step in [
        "requested by",
        "accepted by",
        "taken by",
        "started by",
        "finished by",
    ] {
        assert!(shown.body.contains(step), "{step} missing:\n{}", shown.body);
    }
    bot.check_alive()?;
    Ok(())
}

/// Says `text` in `room` and waits for the bot's reply to it.
async fn say_in(h: &Human, room: &Room, text: &str) -> anyhow::Result<Seen> {
    let id = h.say(room, text).await?;
    h.reply_to(&id, WAIT).await
}

/// Waits for a direct message from `bot` (outside `group`) containing
/// `what`.
async fn dm_from(
    h: &Human,
    bot: &str,
    group: &matrix_sdk::ruma::RoomId,
    what: &str,
) -> anyhow::Result<Seen> {
    h.wait_for(WAIT, what, |seen| {
        seen.iter()
            .find(|m| m.room != group && m.sender.as_str() == bot && m.body.contains(what))
            .cloned()
    })
    .await
}
