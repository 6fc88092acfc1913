//! Compiled components on disk, so a restart or a reload of an unchanged
//! plugin does not compile it again.
//!
//! Deserializing compiled code is trusting it completely, so only files
//! this host wrote are ever read: the key is the SHA-256 of the `.wasm`
//! plus the engine's compatibility hash, files are written atomically into
//! a folder created for this purpose, and a file not owned by this user or
//! writable by others is ignored and recompiled.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a component came from the cache or was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Deserialized from a file this host wrote earlier.
    Cache,
    /// Compiled now (and written to the cache).
    Compiled,
}

/// A folder of compiled components.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// A cache in `dir`, created (private to this user) if missing.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path_for(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut compat = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let digest = Sha256::digest(wasm);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir
            .join(format!("{hex}-{:016x}.cwasm", compat.finish()))
    }

    /// The compiled component for `wasm`, from the cache when possible.
    pub fn component(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(Component, Source)> {
        let path = self.path_for(engine, wasm);
        if trusted(&path)
            && let Some(component) = load(engine, &path)
        {
            return Ok((component, Source::Cache));
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = store(&component, &path) {
            tracing::warn!("cannot cache the compiled plugin at {path:?}: {e:#}");
        }
        Ok((component, Source::Compiled))
    }
}

/// Owned by us and writable by nobody else.
fn trusted(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    // The cache folder was created (or chmod-ed) by this process, so its
    // owner is this user.
    let ours = std::fs::metadata(path.parent().unwrap_or(path))
        .map(|m| m.uid())
        .ok();
    let ok = meta.is_file() && Some(meta.uid()) == ours && meta.mode() & 0o022 == 0;
    if !ok {
        tracing::warn!(
            "ignoring cache file {path:?}: not owned by this user or writable by others"
        );
    }
    ok
}

#[allow(unsafe_code)]
fn load(engine: &Engine, path: &Path) -> Option<Component> {
    // SAFETY: wasmtime requires that deserialized bytes were produced by
    // `Component::serialize` of a compatible engine. The file name carries
    // the engine's compatibility hash and the source's SHA-256, the folder
    // is private to this user, and `trusted` refused anything we did not
    // write; wasmtime additionally checks the header and engine settings.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("cache file {path:?} is unusable, compiling again: {e:#}");
            None
        }
    }
}

fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    tmp.persist(path)?;
    Ok(())
}
