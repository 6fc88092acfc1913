//! The one `wasmtime::Engine` of the process, its linker, and the epoch
//! ticker that lets long-running guests yield.

use std::sync::Arc;
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
        // call; clearing the first MiB in place (most calls touch less)
        // costs a memset.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);
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

/// Starts the thread that advances the engine's epoch. A plain thread, not
/// a task: it must keep ticking even when every runtime worker is busy
/// running guest code.
pub fn start_ticker(engine: &Engine) -> anyhow::Result<()> {
    let weak = Arc::new(engine.weak());
    std::thread::Builder::new()
        .name("ikkyu-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                #[allow(clippy::disallowed_methods)] // a dedicated OS thread, not async code
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("starting the epoch thread failed: {e}"))
}
