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
    /// Signalled when a reload swapped the table: the schedule loop then
    /// writes the new declarations.
    swapped: tokio::sync::Notify,
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

/// [`table::admit`](crate::dispatch::admit), with the refusals as load errors.
fn admit(
    builtins: &[crate::runtime::bindings::CommandSpec],
    plugins: Vec<Arc<LoadedPlugin>>,
) -> (Vec<Arc<LoadedPlugin>>, Vec<LoadError>) {
    let (admitted, refused) = crate::dispatch::admit(builtins, plugins);
    let errors = refused
        .into_iter()
        .map(|(p, message)| LoadError::Clash {
            name: p.name.to_string(),
            path: p.path.clone(),
            message,
        })
        .collect();
    (admitted, errors)
}

impl Registry {
    /// Loads every plugin in the configured folder. Files that fail are
    /// recorded and logged; the others serve.
    pub async fn load(runtime: Arc<Runtime>, config: Arc<Config>) -> anyhow::Result<Self> {
        let (loaded, failed) = runtime.load_dir(&config.plugins_dir(), &config).await?;
        let mut failures = BTreeMap::new();
        let (plugins, refused) = admit(
            &Dispatcher::builtin_specs(),
            loaded.into_iter().map(Arc::new).collect(),
        );
        for e in failed.into_iter().chain(refused) {
            tracing::error!("{e}");
            failures.insert(e.path().to_path_buf(), e.to_string());
        }
        for p in &plugins {
            tracing::info!(plugin = %p.name, version = %p.info.version, "loaded {:?}", p.path);
        }
        let table = CommandTable::new(Dispatcher::builtin_specs(), plugins);
        Ok(Self {
            runtime,
            config,
            table: RwLock::new(Arc::new(table)),
            failures: RwLock::new(failures),
            reloading: tokio::sync::Mutex::new(()),
            swapped: tokio::sync::Notify::new(),
        })
    }

    /// The table to use for one command or delivery.
    pub fn current(&self) -> Arc<CommandTable> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves after the next reload that swapped the table (or at once
    /// if one happened since the last wait).
    pub async fn swapped(&self) {
        self.swapped.notified().await;
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
        // A name, never a path: `..` or `/srv/x` would load any file.
        if crate::roles::RoleName::parse(name).is_err() {
            return Err(LoadError::NotAName {
                path: PathBuf::from(name),
            });
        }
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
        let (plugins, mut refused) = admit(&Dispatcher::builtin_specs(), plugins);
        let mut failures = self
            .failures
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = refused.iter().position(|e| e.path() == new.path) {
            // Refused beside the others: nothing changes, the old version
            // (if any) keeps serving.
            let e = refused.swap_remove(at);
            tracing::error!("{e}");
            failures.insert(path.to_path_buf(), e.to_string());
            return Err(e);
        }
        failures.remove(path);
        for e in refused {
            tracing::error!("{e}");
            failures.insert(e.path().to_path_buf(), e.to_string());
        }
        drop(failures);
        let table = Arc::new(CommandTable::new(Dispatcher::builtin_specs(), plugins));
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        self.swapped.notify_one();
        tracing::info!(plugin = %new.name, version = %new.info.version, "reloaded {path:?}");
        Ok(Reloaded {
            name: new.name.to_string(),
            old_version,
            new_version: new.info.version.clone(),
        })
    }
}
