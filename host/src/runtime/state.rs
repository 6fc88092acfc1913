//! What one plugin call owns: its grants, its buffered effects, its kv
//! overlay and its resource limits. A fresh `CallState` goes into every
//! `Store`, so nothing leaks from one call to the next.
//!
//! Nothing here touches the database directly except kv and directory
//! reads; effects are only collected, and the caller commits them.

use std::collections::BTreeSet;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::chat::RoomKinds;
use crate::clock::SharedClock;
use crate::directory::Directory;
use crate::store::{Db, JobChange, KvChanges, NewSend, OutMessage, ScheduleChange};

/// What every call reaches outside its sandbox, shared by all of them.
#[derive(Debug, Clone)]
pub struct Services {
    /// For kv reads.
    pub db: Db,
    /// For role questions.
    pub directory: Directory,
    /// The host's clock, which is also the plugins' WASI clock.
    pub clock: SharedClock,
    /// Which rooms are direct-message rooms.
    pub rooms: RoomKinds,
    /// How long one call may take.
    pub call_timeout: std::time::Duration,
}

/// The operator's grants for one plugin, fixed at load.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Host interfaces the plugin may import.
    pub interfaces: BTreeSet<String>,
    /// Rooms it may post in besides the command's own.
    pub rooms: BTreeSet<String>,
    /// With the `direct` grant, who it may message (users or `:server`s;
    /// empty is anyone).
    pub direct_to: BTreeSet<String>,
    /// The plugin's config section, as JSON.
    pub config_json: String,
    /// Bytes its kv namespace may hold.
    pub kv_quota: u64,
    /// With the `http` grant: its origins, secrets and client.
    pub http: Option<Arc<crate::http::Http>>,
    /// With the `jobs` grant: the operator's jobs it may start.
    pub jobs: std::collections::BTreeMap<String, Arc<crate::jobs::Job>>,
}

/// Why the plugin is being called; decides what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Reading `describe()`: only `log` works.
    Describe,
    /// A command from `room`; replies there are always allowed.
    Command { room: String },
    /// An event or schedule: no room of its own.
    Background,
}

/// Bounds on one store's memory and tables, and a record of whether a
/// bound was hit so a trap can be reported as "out of memory". The memory
/// bound is for the whole plugin instance: every linear memory it has
/// counts toward it, so a component with several cannot multiply it.
#[derive(Debug)]
pub struct Limits {
    pub memory_bytes: usize,
    pub hit_memory_limit: bool,
    /// Bytes of every memory of this store, together.
    pub memory_used: usize,
}

/// Linear memories one plugin instance may have (a component built by
/// wit-bindgen has one).
const MAX_MEMORIES: usize = 4;

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_bytes {
            self.hit_memory_limit = true;
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Most kv entries, events and messages one call may produce; a plugin
/// that goes past them is trapped, since it is looping or hostile.
pub const MAX_EFFECTS: usize = 10_000;
/// Largest kv key, in bytes.
pub const MAX_KEY: usize = 512;
/// Largest kv value or message, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Bytes one call may hand the host in all (kv keys and values, deleted
/// keys, scan prefixes, messages and their targets, events, schedule ids,
/// payloads and expressions) and take back from scans: what it costs the
/// host, outside the guest's own memory limit, is bounded too.
pub const CALL_BUDGET: usize = 32 << 20;

/// The `Store` data of one call.
pub struct CallState {
    /// The plugin's name.
    pub plugin: Arc<str>,
    /// What it may use.
    pub grants: Arc<Grants>,
    /// Why it is being called.
    pub phase: Phase,
    /// For kv reads.
    pub db: Db,
    /// For role questions.
    pub directory: Directory,
    /// Which rooms are direct-message rooms.
    pub rooms: RoomKinds,
    /// Buffered kv writes and the reads to validate.
    pub kv: KvChanges,
    /// Buffered chat messages.
    pub messages: Vec<OutMessage>,
    /// (topic, payload JSON)
    pub events: Vec<(String, String)>,
    /// Buffered schedule additions and removals, in order.
    pub schedules: Vec<ScheduleChange>,
    /// Buffered HTTP requests to send after the commit.
    pub sends: Vec<NewSend>,
    /// Jobs to start or cancel after the commit.
    pub jobs: Vec<JobChange>,
    /// Each `http.fetch` made, as the audit record keeps it.
    pub requests: Vec<String>,
    /// When the call's time is up; a fetch gets only what is left.
    pub deadline: tokio::time::Instant,
    /// The host's clock when the call started; schedules added during the
    /// call are computed from it.
    pub now_ms: i64,
    /// Memory cap of this store.
    pub limits: Limits,
    /// Bytes of [`CALL_BUDGET`] used so far.
    pub spent: usize,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl std::fmt::Debug for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallState")
            .field("plugin", &self.plugin)
            .field("phase", &self.phase)
            .finish()
    }
}

impl CallState {
    /// A fresh state for one call of `plugin`.
    pub fn new(
        plugin: Arc<str>,
        grants: Arc<Grants>,
        phase: Phase,
        services: &Services,
        memory_bytes: usize,
    ) -> Self {
        let clock = services.clock.clone();
        let now_ms = clock.now_ms();
        Self {
            kv: KvChanges {
                namespace: plugin.to_string(),
                quota: grants.kv_quota,
                ..KvChanges::default()
            },
            plugin,
            grants,
            phase,
            db: services.db.clone(),
            directory: services.directory.clone(),
            rooms: services.rooms.clone(),
            messages: Vec::new(),
            events: Vec::new(),
            schedules: Vec::new(),
            sends: Vec::new(),
            jobs: Vec::new(),
            requests: Vec::new(),
            deadline: tokio::time::Instant::now() + services.call_timeout,
            now_ms,
            spent: 0,
            limits: Limits {
                memory_bytes,
                hit_memory_limit: false,
                memory_used: 0,
            },
            // No files, no environment, no network, no inherited stdio: a
            // plugin reaches the world only through ikkyu's interfaces. Its
            // clocks are the host's, so time in tests and transcripts is
            // the same for every plugin.
            wasi: WasiCtx::builder()
                .wall_clock(HostClock(clock.clone()))
                .monotonic_clock(HostClock(clock))
                .build(),
            table: ResourceTable::new(),
        }
    }

    /// Traps unless the plugin was granted `interface` and the phase
    /// allows it.
    pub fn require(&self, interface: &str) -> wasmtime::Result<()> {
        if self.phase == Phase::Describe && !matches!(interface, "log" | "config") {
            wasmtime::bail!(
                "plugin {:?} used `{interface}` inside describe(); only `log` and `config` are available there",
                self.plugin
            );
        }
        if !self.grants.interfaces.contains(interface) {
            wasmtime::bail!(
                "plugin {:?} is not granted `{interface}`; add grants = [\"{interface}\"] under [plugins.{}]",
                self.plugin,
                self.plugin
            );
        }
        Ok(())
    }

    /// Counts `bytes` against the call's budget; past it the call traps,
    /// committing nothing.
    pub fn charge(&mut self, bytes: usize, what: &str) -> wasmtime::Result<()> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > CALL_BUDGET {
            wasmtime::bail!(
                "plugin {:?} handed the host more than {} MiB in one call (at {what}); \
                 split the work over several calls",
                self.plugin,
                CALL_BUDGET >> 20
            );
        }
        Ok(())
    }

    /// Traps once a call has produced too many effects.
    pub fn count_effect(&self) -> wasmtime::Result<()> {
        let n = self.kv.writes.len()
            + self.messages.len()
            + self.events.len()
            + self.schedules.len()
            + self.sends.len()
            + self.jobs.len();
        if n >= MAX_EFFECTS {
            wasmtime::bail!(
                "plugin {:?} produced more than {MAX_EFFECTS} effects in one call",
                self.plugin
            );
        }
        Ok(())
    }
}

/// The host's injected clock as WASI's wall and monotonic clocks.
struct HostClock(SharedClock);

impl wasmtime_wasi::HostWallClock for HostClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }

    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

impl wasmtime_wasi::HostMonotonicClock for HostClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.now_ms())
            .unwrap_or(0)
            .saturating_mul(1_000_000)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
