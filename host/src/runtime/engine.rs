//! The one `wasmtime::Engine` of the process, its linker, and the epoch
//! ticker that lets long-running guests yield.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::Plugin;
use super::state::CallState;

/// How often the epoch advances. A running guest yields to the executor
/// once per tick, so the wall-clock timeout can fire and other commands
/// keep being served on the same threads.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine: pooling allocator sized for `slots` concurrent calls
/// with `memory_bytes` each, or on-demand allocation where the pool's
/// address-space reservation is refused (small containers, ulimit -v).
pub fn build(slots: u32, memory_bytes: usize) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * 8)
        .total_memories(slots * 2)
        .total_tables(slots * 8)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_core_instances_per_component(16)
        .max_memory_size(memory_bytes)
        // A call's memory is reset when it ends. Giving the pages back
        // to the kernel and faulting them in again on the next call cost
        // a system call, page faults and a TLB flush on every core, every
        // call; clearing them in place costs a memset. Up to 1 MiB of the
        // pages a call wrote are cleared in place and stay resident.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        // Which pages: the ones the call wrote, found with Linux's
        // PAGEMAP_SCAN (6.7+; without it, the lowest MiB of the memory).
        // A Rust guest's lowest MiB is its stack, of which a call touches
        // a few pages, while its data and heap lie above: clearing that
        // whole MiB cost a memset per call, kept it resident in every
        // plugin's slot (6 MiB with six plugins), and still left the
        // pages the call did use to be faulted in again next time.
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut pooled = base_config();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!(
                "pooling allocator unavailable ({e:#}); falling back to on-demand allocation, \
                 which is slower to instantiate"
            );
            Engine::new(&base_config())
                .map_err(|e| anyhow::anyhow!("creating the wasm engine failed: {e:#}"))
        }
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    config
}

/// A linker with WASI (sandboxed: no files, network or environment) and
/// every ikkyu interface; grants are enforced at load and per call.
pub fn linker(engine: &Engine) -> anyhow::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| anyhow::anyhow!("linking WASI failed: {e:#}"))?;
    Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
        .map_err(|e| anyhow::anyhow!("linking the ikkyu interfaces failed: {e:#}"))?;
    Ok(linker)
}

/// The thread that advances the engine's epoch while guests run, and what
/// calls use to tell it they do.
#[derive(Debug)]
pub struct Ticker {
    running: Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

/// A running guest call: the ticker keeps ticking until every one is
/// dropped.
#[must_use = "the ticker may sleep as soon as this is dropped"]
pub struct Awake<'t>(&'t Ticker);

impl Ticker {
    /// Marks a guest call as running, waking the ticker if it sleeps.
    pub fn awake(&self) -> Awake<'_> {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            // A thread that is not parked only has its token set: no
            // system call unless the ticker really sleeps.
            self.thread.unpark();
        }
        Awake(self)
    }
}

impl Drop for Awake<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticker {
    /// Lets a sleeping ticker see that the engine is gone and end.
    fn drop(&mut self) {
        self.thread.unpark();
    }
}

/// Starts the thread that advances the engine's epoch. A plain thread, not
/// a task: it must keep ticking even when every runtime worker is busy
/// running guest code. It ends once the engine is dropped.
pub fn start_ticker(engine: &Engine) -> anyhow::Result<Ticker> {
    let weak = engine.weak();
    let running = Arc::new(AtomicUsize::new(0));
    let seen = running.clone();
    let handle = std::thread::Builder::new()
        .name("ikkyu-epoch".into())
        .spawn(move || {
            loop {
                #[allow(clippy::disallowed_methods)] // a dedicated OS thread, not async code
                std::thread::sleep(EPOCH_TICK);
                let Some(engine) = weak.upgrade() else { break };
                engine.increment_epoch();
                drop(engine);
                // A tick that finds no guest running is the last until a
                // call starts: most calls end within a tick, and a bot
                // answering a command every few dozen milliseconds kept
                // this thread waking a hundred times a second, 7 % of its
                // CPU over Matrix (BENCHMARKS.md, issue 14). Waking it
                // costs a call one system call, and only if it sleeps.
                if seen.load(Ordering::Acquire) == 0 {
                    // Returns at once if a call started since the load
                    // above (its unpark left the token).
                    std::thread::park();
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("starting the epoch thread failed: {e}"))?;
    Ok(Ticker {
        running,
        thread: handle.thread().clone(),
    })
}
