//! The plugins serving right now, and replacing one while the bot runs.
//!
//! The command table is an immutable snapshot behind an `Arc`: a command
//! takes the current snapshot when it starts and finishes on it, so calls
//! in flight finish on the old version while new calls see the new one. A
//! reload builds a whole new table and swaps it in; if the new file does not
//! load, the old version keeps serving. Only reloads take the reload lock;
//! commands never wait for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::Config;
use crate::dispatch::{CommandTable, Dispatcher};
use crate::runtime::{LoadError, LoadedPlugin, Runtime};

/// Loaded plugins and the command table built from them.
pub struct Registry {
    runtime: Arc<Runtime>,
    config: Arc<Config>,
    table: RwLock<Arc<CommandTable>>,
    /// Files that failed to load, by path, with the reason.
    failures: RwLock<BTreeMap<PathBuf, String>>,
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The plugin's name from describe().
    pub name: String,
    /// The version that was serving before, if any.
    pub old_version: Option<String>,
    /// The version serving now.
    pub new_version: String,
}

impl Registry {
    /// Loads every plugin in the configured folder. Files that fail are
    /// recorded and logged; the others serve.
    pub async fn load(runtime: Arc<Runtime>, config: Arc<Config>) -> anyhow::Result<Self> {
        let (loaded, failed) = runtime.load_dir(&config.plugins_dir(), &config).await?;
        let mut failures = BTreeMap::new();
        for e in failed {
            tracing::error!("{e}");
            failures.insert(e.path().to_path_buf(), e.to_string());
        }
        for p in &loaded {
            tracing::info!(plugin = %p.name, version = %p.info.version, "loaded {:?}", p.path);
        }
        let plugins = loaded.into_iter().map(Arc::new).collect();
        let table = CommandTable::new(Dispatcher::builtin_specs(), plugins);
        Ok(Self {
            runtime,
            config,
            table: RwLock::new(Arc::new(table)),
            failures: RwLock::new(failures),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The table to use for one command or delivery.
    pub fn current(&self) -> Arc<CommandTable> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Files that failed to load, with their reasons.
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Reloads the plugin called `name` from the file it came from (or
    /// `<plugins_dir>/<name>.wasm`).
    pub async fn reload_named(&self, name: &str) -> Result<Reloaded, LoadError> {
        let path = match self.current().plugin(name) {
            Some(p) => p.path.clone(),
            None => self.config.plugins_dir().join(format!("{name}.wasm")),
        };
        self.reload_path(&path).await
    }

    /// Loads `path` and puts it in place of the plugin of the same name or
    /// from the same file. On failure nothing changes except that the
    /// failure is recorded for `!plugins`.
    pub async fn reload_path(&self, path: &Path) -> Result<Reloaded, LoadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let new = match self.runtime.load(path, &self.config).await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::error!("reload failed, the old version keeps serving: {e}");
                self.failures
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(path.to_path_buf(), e.to_string());
                return Err(e);
            }
        };
        let current = self.current();
        let old_version = current
            .plugins()
            .iter()
            .find(|p| p.name == new.name)
            .map(|p| p.info.version.clone());
        let mut plugins: Vec<Arc<LoadedPlugin>> = current
            .plugins()
            .iter()
            .filter(|p| p.name != new.name && p.path != new.path)
            .cloned()
            .collect();
        plugins.push(new.clone());
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        let table = Arc::new(CommandTable::new(Dispatcher::builtin_specs(), plugins));
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        self.failures
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
        tracing::info!(plugin = %new.name, version = %new.info.version, "reloaded {path:?}");
        Ok(Reloaded {
            name: new.name.to_string(),
            old_version,
            new_version: new.info.version.clone(),
        })
    }
}
