//! Compiling plugins in a child process of the same binary.
//!
//! Cranelift needs tens of MiB to compile a large plugin, and at start-up
//! it compiles them all at once. Memory a process once touched stays its
//! high-water mark, and most of it stays in its allocator; in a child it is
//! given back when the child exits, and the bot maps the compiled file from
//! the cache as it does after a restart. A compiler that crashes or runs
//! out of memory on a hostile module ends the child, not the bot.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cache::Cache;
use super::engine;

/// The hidden subcommand a child runs: `<exe> compile-plugin --cache-dir D
/// --slots N --memory-bytes M`, the module on stdin.
pub const SUBCOMMAND: &str = "compile-plugin";

/// How to start a child that compiles with the bot's engine settings (the
/// cache's file names carry them, so a child with others would write a
/// file the bot never reads).
#[derive(Debug, Clone)]
pub struct Compiler {
    exe: PathBuf,
    slots: u32,
    memory_bytes: usize,
}

/// Why a child did not compile a module.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// No child ran (the executable is gone, no processes left): the bot
    /// may compile in-process instead.
    #[error("cannot start {exe:?}: {source}")]
    Start {
        /// The executable.
        exe: PathBuf,
        /// What starting or waiting for it answered.
        source: std::io::Error,
    },
    /// The child ran and failed: the module is invalid, or compiling it
    /// crashed. Not tried again in the bot.
    #[error("{0}")]
    Failed(String),
}

impl Compiler {
    /// Children of `exe`, compiling for an engine built with `slots` and
    /// `memory_bytes`.
    pub fn new(exe: PathBuf, slots: u32, memory_bytes: usize) -> Self {
        Self {
            exe,
            slots,
            memory_bytes,
        }
    }

    /// Compiles `wasm` into the cache at `cache_dir`, in a child; blocks.
    pub fn compile(&self, cache_dir: &Path, wasm: &[u8]) -> Result<(), ChildError> {
        let start = |source| ChildError::Start {
            exe: self.exe.clone(),
            source,
        };
        let mut child = Command::new(&self.exe)
            .arg(SUBCOMMAND)
            .arg("--cache-dir")
            .arg(cache_dir)
            .arg("--slots")
            .arg(self.slots.to_string())
            .arg("--memory-bytes")
            .arg(self.memory_bytes.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(start)?;
        // A child that died before reading it all fails the write; its
        // exit status below says why.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(wasm);
        }
        let out = child.wait_with_output().map_err(start)?;
        // The child read the executable ahead, the compiler's code above all,
        // which the bot never runs.
        crate::code_pages::forget_unmapped();
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        let last = said.lines().rev().find(|l| !l.trim().is_empty());
        Err(ChildError::Failed(match last {
            Some(line) => {
                let line = line.trim();
                format!(
                    "compiling it failed: {}",
                    line.strip_prefix("error: ").unwrap_or(line)
                )
            }
            None => format!("the compiler process ended with {}", out.status),
        }))
    }
}

/// What the child does: reads a module on stdin and writes its compiled
/// form into the cache at `cache_dir`.
pub fn child_main(cache_dir: &Path, slots: u32, memory_bytes: usize) -> anyhow::Result<()> {
    let engine = engine::build(slots, memory_bytes)?;
    let cache = Cache::open(cache_dir)
        .map_err(|e| anyhow::anyhow!("cannot use the cache {cache_dir:?}: {e}"))?;
    let mut wasm = Vec::new();
    std::io::stdin()
        .read_to_end(&mut wasm)
        .map_err(|e| anyhow::anyhow!("reading the module: {e}"))?;
    cache
        .compile(&engine, &wasm)
        .map(drop)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
}
