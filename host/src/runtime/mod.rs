//! The WebAssembly side of the host: one engine, plugins compiled once and
//! instantiated per call, and the host interfaces they may import.
//!
//! This module runs guest code and returns what it asked for; it never
//! commits anything, never talks to chat, and never holds a lock while a
//! guest runs.

pub mod bindings;
mod cache;
mod call;
pub mod compiler;
mod declaration;
mod engine;
mod host;
mod plugin;
mod state;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Linker;

pub use cache::Source;
pub use call::CallOutcome;
pub use plugin::{Health, LoadError, LoadedPlugin};
pub use state::{CallState, Grants, Services};

use crate::chat::RoomKinds;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::directory::Directory;
use crate::store::Db;

/// Why a plugin call did not return normally. Whose fault it was decides
/// what the caller is told: traps and timeouts are the plugin's, `Busy` is
/// load, and the message of each is safe to show in chat.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// `cause` is the innermost error (e.g. "wasm trap: unreachable"),
    /// `detail` the whole chain with the guest backtrace.
    #[error("the plugin crashed: {cause}")]
    Trap {
        /// The innermost error, short enough for a chat message.
        cause: String,
        /// The whole chain with the guest backtrace, for the audit log.
        detail: String,
    },
    /// The wall-clock limit (`runtime.call_timeout`) passed.
    #[error("the plugin timed out after {0:?}")]
    Timeout(Duration),
    /// The plugin's memory would have grown past its limit.
    #[error("the plugin ran out of memory (limit {limit_mb} MiB)")]
    OutOfMemory {
        /// The limit that was hit (`runtime.memory_limit_mb`).
        limit_mb: usize,
        /// The trap that followed, for the audit log.
        detail: String,
    },
    /// Every call slot is taken; not the plugin's fault.
    #[error("too many commands are running; try again in a moment")]
    Busy,
    /// A host call needed the database and it could not be reached; not
    /// the plugin's fault, and the call can be made again later.
    #[error("the database is unavailable, try again in a moment")]
    Unavailable(String),
}

impl PluginError {
    /// Whether the plugin is to blame, so the failure counts toward its
    /// quarantine: not when the host was busy or its database away.
    pub fn is_plugin_fault(&self) -> bool {
        !matches!(self, PluginError::Busy | PluginError::Unavailable(_))
    }
}

/// Compiles `wasm` with `engine`, through `cache` when there is one, in a
/// child process when there is a `compiler` (a module the child could not
/// compile is not tried again here: it may be what crashed the child).
fn compile_with(
    engine: &wasmtime::Engine,
    cache: Option<&cache::Cache>,
    compiler: Option<&compiler::Compiler>,
    wasm: &[u8],
) -> wasmtime::Result<(wasmtime::component::Component, Source)> {
    let Some(cache) = cache else {
        return Ok((
            wasmtime::component::Component::new(engine, wasm)?,
            Source::Compiled,
        ));
    };
    if let Some(found) = cache.cached(engine, wasm) {
        return Ok((found, Source::Cache));
    }
    if let Some(compiler) = compiler {
        match compiler.compile(cache.dir(), wasm) {
            Ok(()) => match cache.cached(engine, wasm) {
                Some(compiled) => return Ok((compiled, Source::Compiled)),
                None => tracing::warn!(
                    "the compiler process left nothing usable in {:?}; compiling in the bot",
                    cache.dir()
                ),
            },
            Err(compiler::ChildError::Failed(why)) => return Err(wasmtime::Error::msg(why)),
            Err(e @ compiler::ChildError::Start { .. }) => {
                tracing::warn!("{e}; compiling in the bot");
            }
        }
    }
    Ok((cache.compile(engine, wasm)?, Source::Compiled))
}

/// The engine, the linker and the limits every call runs under.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    services: Services,
    timeout: Duration,
    memory_bytes: usize,
    calls: Arc<tokio::sync::Semaphore>,
    cache: Option<cache::Cache>,
    /// Compiles in a child process; only the `ikkyu` binary has one.
    compiler: Option<compiler::Compiler>,
    /// Declared after `engine`: dropped after it, so a sleeping ticker
    /// wakes to find the engine gone.
    ticker: engine::Ticker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Runtime {
    /// Lets calls ask `rooms` which rooms are direct-message rooms (for
    /// `rooms = ["*"]`); without it none are.
    pub fn with_rooms(mut self, rooms: RoomKinds) -> Self {
        self.services.rooms = rooms;
        self
    }

    /// Compiles `wasm`, or takes it from the on-disk cache.
    pub fn compile(
        &self,
        wasm: &[u8],
    ) -> wasmtime::Result<(wasmtime::component::Component, Source)> {
        compile_with(
            &self.engine,
            self.cache.as_ref(),
            self.compiler.as_ref(),
            wasm,
        )
    }

    /// Reads and compiles the file at `path` on a blocking thread: a
    /// compile takes Cranelift tenths of a second to seconds, which must
    /// never stall a worker that answers chat.
    async fn read_and_compile(
        &self,
        path: &std::path::Path,
    ) -> Result<(wasmtime::component::Component, Source), LoadError> {
        let (engine, cache, file) = (self.engine.clone(), self.cache.clone(), path.to_owned());
        let compiler = self.compiler.clone();
        let invalid = |message: String| LoadError::Invalid {
            path: path.into(),
            message,
        };
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&file).map_err(|source| LoadError::Read {
                path: file.clone(),
                source,
            })?;
            compile_with(&engine, cache.as_ref(), compiler.as_ref(), &bytes).map_err(|e| {
                LoadError::Invalid {
                    path: file.clone(),
                    message: format!("{e:#}"),
                }
            })
        })
        .await
        .map_err(|e| invalid(format!("compiling it failed: {e}")))?
    }

    /// Builds the engine and linker from the config's `[runtime]`.
    pub fn new(
        config: &Config,
        db: Db,
        directory: Directory,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let memory_bytes = usize::try_from(config.runtime.memory_limit_mb << 20)?;
        let slots = config.runtime.max_concurrent_calls;
        let engine = engine::build(slots, memory_bytes)?;
        let ticker = engine::start_ticker(&engine)?;
        let linker = engine::linker(&engine)?;
        Ok(Self {
            engine,
            linker,
            services: Services {
                db,
                directory,
                clock,
                rooms: RoomKinds::none(),
                call_timeout: config.runtime.call_timeout,
            },
            timeout: config.runtime.call_timeout,
            memory_bytes,
            calls: Arc::new(tokio::sync::Semaphore::new(slots as usize)),
            cache: config.cache_dir().and_then(|dir| match cache::Cache::open(&dir) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("compiled plugins will not be cached: cannot use {dir:?} (runtime.cache_dir): {e}");
                    None
                }
            }),
            compiler: config
                .runtime
                .compiler
                .clone()
                .map(|exe| compiler::Compiler::new(exe, slots, memory_bytes)),
            ticker,
        })
    }

    /// Loads every `*.wasm` in `dir`, sorted by file name. Failures are
    /// returned alongside the plugins that loaded, so one bad file does not
    /// keep the others from serving.
    pub async fn load_dir(
        &self,
        dir: &Path,
        config: &Config,
    ) -> anyhow::Result<(Vec<LoadedPlugin>, Vec<LoadError>)> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| {
                anyhow::anyhow!("cannot read the plugins folder {dir:?} (runtime.plugins_dir): {e}")
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        let mut loaded = Vec::new();
        let mut failed = Vec::new();
        for path in paths {
            match self.load(&path, config).await {
                Ok(p) if loaded.iter().any(|l: &LoadedPlugin| l.name == p.name) => {
                    failed.push(LoadError::Invalid {
                        path,
                        message: format!("another file already provides plugin {:?}", p.name),
                    });
                }
                Ok(p) => loaded.push(p),
                Err(e) => failed.push(e),
            }
        }
        Ok((loaded, failed))
    }
}
