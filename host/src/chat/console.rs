//! The console adapter: a chat of one room in a terminal or a pipe.
//!
//! Each line typed is a message from the current user (`--as`, changed with
//! `/as @user:server`); the bot's messages are printed. It is a real
//! adapter, not a test hook: transcripts run through it too.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{BoxFuture, ChatError, ChatSink, Incoming};
use crate::roles::is_user_id;
use crate::store::{OutMessage, Target};

/// The room id console messages are in.
pub const CONSOLE_ROOM: &str = "!console:local";

/// How a message looks in the console: replies in the console room as
/// they are, anything else with where it went.
/// An edit is the new text again, marked `(edited)`.
pub fn render(message: &OutMessage) -> String {
    let body = if message.edit.is_some() {
        format!("(edited) {}", message.body)
    } else {
        message.body.clone()
    };
    match &message.target {
        Target::Room(room) if room == CONSOLE_ROOM => body,
        Target::Room(room) => format!("[to {room}] {body}"),
        Target::User(user) => format!("[direct to {user}] {body}"),
    }
}

/// Turns typed lines into messages with ids unique across runs, so the
/// processed-message marker never swallows a new line after a restart.
#[derive(Debug)]
pub struct Console {
    run: String,
    seq: AtomicU64,
}

impl Console {
    /// A console for one run of the process started at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self {
            run: format!("{now_ms}-{}", std::process::id()),
            seq: AtomicU64::new(0),
        }
    }

    /// The message `user` typed.
    pub fn message(&self, user: &str, body: &str, now_ms: i64) -> Incoming {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        Incoming {
            id: format!("console:{}:{n}", self.run),
            sender: user.to_owned(),
            room: CONSOLE_ROOM.to_owned(),
            body: body.to_owned(),
            thread_root: None,
            sent_ms: now_ms,
        }
    }
}

/// A sink that prints to any writer (stdout in the CLI).
pub struct WriterSink<W> {
    out: Mutex<W>,
}

impl<W> WriterSink<W> {
    /// Prints to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send> ChatSink for WriterSink<W> {
    fn deliver<'a>(
        &'a self,
        _key: &'a str,
        message: &'a OutMessage,
    ) -> BoxFuture<'a, Result<Option<String>, ChatError>> {
        Box::pin(async move {
            let mut out = self.out.lock().await;
            let text = format!("{}\n", render(message));
            let res = async {
                out.write_all(text.as_bytes()).await?;
                out.flush().await
            };
            res.await.map(|()| None).map_err(|e| ChatError {
                target: "console".into(),
                message: e.to_string(),
                permanent: false,
            })
        })
    }
}

/// A sink that keeps rendered messages, for transcripts and tests.
#[derive(Debug, Default, Clone)]
pub struct RecordingSink {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    direct_rooms: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl RecordingSink {
    /// From now on `room` is a direct-message room, as if someone had
    /// opened one with the bot.
    pub fn mark_direct(&self, room: &str) {
        if let Ok(mut rooms) = self.direct_rooms.lock() {
            rooms.insert(room.to_owned());
        }
    }

    /// Takes everything delivered since the last call.
    pub fn take(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl ChatSink for RecordingSink {
    fn deliver<'a>(
        &'a self,
        _key: &'a str,
        message: &'a OutMessage,
    ) -> BoxFuture<'a, Result<Option<String>, ChatError>> {
        Box::pin(async move {
            self.seen
                .lock()
                .map_err(|_| ChatError {
                    target: "recording".into(),
                    message: "poisoned".into(),
                    permanent: true,
                })?
                .push(render(message));
            Ok(None)
        })
    }

    fn is_direct_room(&self, room: &str) -> bool {
        self.direct_rooms
            .lock()
            .is_ok_and(|rooms| rooms.contains(room))
    }
}

/// What a typed line means.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A chat message to hand to the bot.
    Message(String),
    /// `/as @user:server`: type as someone else from now on.
    SwitchUser(String),
    /// `/quit` or `/exit`.
    Quit,
    /// An empty line.
    Nothing,
    /// A console command used wrongly; the text says how to use it.
    Error(String),
}

/// Reads one typed line: `/as @user:server`, `/quit`, or a message.
pub fn parse_line(line: &str) -> Line {
    let line = line.trim();
    if line.is_empty() {
        return Line::Nothing;
    }
    if line == "/quit" || line == "/exit" {
        return Line::Quit;
    }
    if let Some(user) = line.strip_prefix("/as") {
        let user = user.trim();
        return if is_user_id(user) {
            Line::SwitchUser(user.to_owned())
        } else {
            Line::Error("usage: /as @user:server".into())
        };
    }
    Line::Message(line.to_owned())
}

/// Runs the console until end of input or `/quit`, handing each message
/// to `handle`. The prompt is shown only on a terminal, so piped use stays
/// clean for scripts.
pub async fn run<R, F, Fut>(
    input: R,
    mut user: String,
    now: impl Fn() -> i64,
    mut handle: F,
) -> anyhow::Result<()>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(Incoming) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let interactive = std::io::stdin().is_terminal();
    let console = Console::new(now());
    let mut lines = input.lines();
    let mut stdout = tokio::io::stdout();
    loop {
        if interactive {
            stdout.write_all(format!("{user}> ").as_bytes()).await?;
            stdout.flush().await?;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        match parse_line(&line) {
            Line::Nothing => {}
            Line::Quit => break,
            Line::SwitchUser(u) => user = u,
            Line::Error(e) => stdout.write_all(format!("{e}\n").as_bytes()).await?,
            Line::Message(body) => handle(console.message(&user, &body, now())).await?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse_line("  "), Line::Nothing);
        assert_eq!(
            parse_line("/as @bob:local"),
            Line::SwitchUser("@bob:local".into())
        );
        assert!(matches!(parse_line("/as bob"), Line::Error(_)));
        assert_eq!(parse_line("!points"), Line::Message("!points".into()));
    }

    #[test]
    fn ids_are_unique_within_and_across_runs() {
        let a = Console::new(1);
        let b = Console::new(2);
        let ids = [
            a.message("@a:x", "!x", 0).id,
            a.message("@a:x", "!x", 0).id,
            b.message("@a:x", "!x", 0).id,
        ];
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
    }
}
