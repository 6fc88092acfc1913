//! Loading one plugin: compile, pre-link, read its declaration, and check
//! that it imports only what the operator granted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use wasmtime::component::Component;

use super::bindings::{PluginInfo, PluginPre};
use super::state::{CallState, Grants};
use super::{PluginError, Runtime};
use crate::config::{Config, GRANTABLE};

/// A plugin ready to be called: compiled and linked once, instantiated
/// fresh for every call.
pub struct LoadedPlugin {
    /// The file's name, which describe() must declare; also the kv
    /// namespace and config key.
    pub name: Arc<str>,
    /// Everything describe() declared.
    pub info: PluginInfo,
    /// What the operator granted it.
    pub grants: Arc<Grants>,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Failures in a row and quarantine.
    pub health: Health,
    /// Unique to this load, so a reload is always told apart.
    pub generation: u64,
    pub(super) pre: PluginPre<CallState>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

/// Why a plugin could not be loaded; each message names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path:?}: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Not a component, or it does not link against the host.
    #[error("{path:?} is not a valid ikkyu plugin component: {message}")]
    Invalid {
        /// The plugin file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// It imports an interface the config does not grant it.
    #[error(
        "plugin {name:?} ({path:?}) imports `{interface}` but is not granted it; add \"{interface}\" to grants under [plugins.{name}] in the config"
    )]
    NotGranted {
        /// The plugin's name (from describe(), or the file name).
        name: String,
        /// The plugin file.
        path: PathBuf,
        /// The interface it imports without a grant.
        interface: String,
    },
    /// Its describe() trapped or timed out.
    #[error("plugin {name:?} ({path:?}): describe() failed: {error}")]
    Describe {
        /// The plugin's name (from describe(), or the file name).
        name: String,
        /// The plugin file.
        path: PathBuf,
        /// How describe() failed.
        error: PluginError,
    },
    /// Its commands overlap a built-in's or another plugin's.
    #[error("plugin {name:?} ({path:?}) is not served: {message}")]
    Clash {
        /// The plugin's name.
        name: String,
        /// The plugin file.
        path: PathBuf,
        /// Which commands overlap.
        message: String,
    },
    /// What was asked to be reloaded is not a plugin name (a path, say).
    #[error(
        "{} is not a plugin name: write it as `!plugins` shows it (lowercase letters, digits and dashes)",
        crate::text::quoted(&path.to_string_lossy())
    )]
    NotAName {
        /// What was given, as typed.
        path: PathBuf,
    },
    /// Its declaration breaks a rule of the contract.
    #[error("plugin {name:?} ({path:?}) declares an invalid command: {message}")]
    BadDeclaration {
        /// The plugin's name (from describe(), or the file name).
        name: String,
        /// The plugin file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl LoadError {
    /// The file that failed.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::Read { path, .. }
            | LoadError::Invalid { path, .. }
            | LoadError::NotGranted { path, .. }
            | LoadError::Describe { path, .. }
            | LoadError::NotAName { path }
            | LoadError::Clash { path, .. }
            | LoadError::BadDeclaration { path, .. } => path,
        }
    }
}

/// A plugin's recent record: consecutive failures (traps, timeouts, out of
/// memory) and whether it is quarantined. Lives with the loaded version, so
/// loading the plugin again starts it clean.
#[derive(Debug, Default)]
pub struct Health {
    failures: AtomicU32,
    quarantined: AtomicBool,
}

impl Health {
    /// Records a failure; true when this one put the plugin in quarantine.
    pub fn failed(&self, quarantine_after: u32) -> bool {
        let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        n >= quarantine_after && !self.quarantined.swap(true, Ordering::SeqCst)
    }

    /// Records a call that returned normally.
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::SeqCst);
    }

    /// Whether calls are refused.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined.load(Ordering::SeqCst)
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::SeqCst)
    }
}

impl Runtime {
    /// Loads the component at `path` with the grants in `config`.
    pub async fn load(&self, path: &Path, config: &Config) -> Result<LoadedPlugin, LoadError> {
        let invalid = |message: String| LoadError::Invalid {
            path: path.into(),
            message,
        };
        let (component, source) = self.read_and_compile(path).await?;
        tracing::debug!(?source, "compiled {path:?}");
        if let Some(other) = contract_versions(&component, &self.engine)
            .into_iter()
            .find(|v| v != CONTRACT_VERSION)
        {
            return Err(invalid(format!(
                "it was built against ikkyu:plugin@{other} but this host speaks \
                 ikkyu:plugin@{CONTRACT_VERSION}; rebuild it with the matching ikkyu-plugin-sdk"
            )));
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = PluginPre::new(instance_pre).map_err(|e| invalid(format!("{e:#}")))?;

        let file_name: Arc<str> = path
            .file_stem()
            .map_or("?".into(), |s| s.to_string_lossy().into());
        // describe() may read the config of the section named after the
        // file (its name is not known before it answers), if granted.
        let named = config.plugins.get(&*file_name).cloned().unwrap_or_default();
        let mut interfaces: BTreeSet<String> = ["log".to_owned()].into();
        if named.grants.contains("config") {
            interfaces.insert("config".to_owned());
        }
        let describe_grants = Arc::new(Grants {
            interfaces,
            rooms: BTreeSet::new(),
            direct_to: BTreeSet::new(),
            config_json: config_json(named.config, &invalid)?,
            kv_quota: 0,
            http: None,
            jobs: std::collections::BTreeMap::new(),
        });
        let info = self
            .describe(&pre, file_name.clone(), describe_grants)
            .await
            .map_err(|error| LoadError::Describe {
                name: file_name.to_string(),
                path: path.into(),
                error,
            })?;
        let name = info.name.clone();
        // The operator names a plugin by naming its file: grants, kv
        // namespace, config and schedules follow that name, so a file may
        // not claim another.
        if *name == *crate::http::sender::HOST_SOURCE {
            return Err(invalid(format!(
                "it declares the plugin name {name:?}, which is the host's own; rename it"
            )));
        }
        if *name != *file_name {
            return Err(invalid(format!(
                "it declares the plugin name {name:?}, but a plugin is named by its file: \
                 rename the file to {name}.wasm if it is that plugin, or build it with the name {file_name:?}"
            )));
        }
        super::declaration::check(&info).map_err(|message| LoadError::BadDeclaration {
            name: name.clone(),
            path: path.into(),
            message,
        })?;

        let section = config.plugins.get(&name).cloned().unwrap_or_default();
        for interface in imported_interfaces(&component, &self.engine) {
            if !section.grants.contains(&interface) {
                return Err(LoadError::NotGranted {
                    name,
                    path: path.into(),
                    interface,
                });
            }
        }
        let config_json = config_json(section.config.clone(), &invalid)?;
        let jobs = if section.grants.contains("jobs") {
            let defined = config
                .jobs
                .compile(&config.base_dir)
                .map_err(|e| invalid(e.to_string()))?;
            defined
                .into_iter()
                .filter(|(name, _)| section.jobs.contains(name))
                .map(|(name, job)| (name, Arc::new(job)))
                .collect()
        } else {
            std::collections::BTreeMap::new()
        };
        let http = if section.grants.contains("http") {
            Some(Arc::new(
                crate::http::Http::new(&name, &section).map_err(&invalid)?,
            ))
        } else {
            None
        };
        Ok(LoadedPlugin {
            name: name.as_str().into(),
            info,
            grants: Arc::new(Grants {
                interfaces: section.grants,
                rooms: section.rooms,
                direct_to: section.direct_to,
                config_json,
                kv_quota: section.kv_quota_mb.saturating_mul(1 << 20),
                http,
                jobs,
            }),
            path: path.into(),
            health: Health::default(),
            generation: next_generation(),
            pre,
        })
    }
}

/// A number no other load in this process had: what tells a reloaded
/// plugin from the version before it (an address could be reused).
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The version of `wit/plugin.wit` this host implements.
pub const CONTRACT_VERSION: &str = "0.5.0";

/// The contract versions a component's ikkyu imports name.
fn contract_versions(component: &Component, engine: &wasmtime::Engine) -> BTreeSet<String> {
    component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix("ikkyu:plugin/")?;
            Some(rest.split_once('@')?.1.to_owned())
        })
        .collect()
}

/// A plugin's config table as the JSON its `config.get` returns.
fn config_json(
    table: Option<toml::Table>,
    invalid: &dyn Fn(String) -> LoadError,
) -> Result<String, LoadError> {
    serde_json::to_string(&table.unwrap_or_default())
        .map_err(|e| invalid(format!("plugin config is not representable as JSON: {e}")))
}

/// The ikkyu interfaces a component imports (`kv`, `chat`, ...); WASI
/// imports are always provided, sandboxed, and not listed.
fn imported_interfaces(component: &Component, engine: &wasmtime::Engine) -> BTreeSet<String> {
    component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix("ikkyu:plugin/")?;
            let iface = rest.split('@').next()?;
            GRANTABLE.contains(&iface).then(|| iface.to_owned())
        })
        .collect()
}
