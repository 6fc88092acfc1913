//! Watches the plugins folder and reloads a plugin when its `.wasm` file is
//! written, so dropping in a new version needs no restart and no command.
//!
//! Events are debounced (a copy shows up as several writes) and each file is
//! reloaded once per burst. A file that does not load leaves the old version
//! serving; the bot reports the failure to the admins.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::{EventKind, RecursiveMode, Watcher};

use crate::bot::Bot;

/// Quiet time after the last write before a file is loaded.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps the folder watched while it lives.
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard").finish_non_exhaustive()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `dir` for `bot`.
pub fn start(bot: Arc<Bot>, dir: &Path) -> anyhow::Result<WatchGuard> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) if matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_)) => {
                for path in event
                    .paths
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                {
                    // The receiver only goes away when the bot stops.
                    let _ = tx.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching the plugins folder: {e}"),
        })
        .context("creating the plugins folder watcher")?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .with_context(|| {
            format!(
                "watching {dir:?} (runtime.plugins_dir; set runtime.watch = false to turn this off)"
            )
        })?;
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = BTreeSet::from([first]);
            while let Ok(Some(more)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                changed.insert(more);
            }
            for path in changed.into_iter().filter(|p| p.is_file()) {
                if let Err(e) = bot.reload_file(&path).await {
                    tracing::error!("reloading {path:?}: {e:#}");
                }
            }
        }
    });
    Ok(WatchGuard {
        _watcher: watcher,
        task,
    })
}
