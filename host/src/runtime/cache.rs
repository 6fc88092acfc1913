//! Compiled components on disk, so a restart or a reload of an unchanged
//! plugin does not compile it again.
//!
//! Deserializing compiled code is trusting it completely, so only files
//! this host wrote are ever read: the key is the SHA-256 of the `.wasm`
//! plus the engine's compatibility hash, files are written atomically into
//! a folder created for this purpose, and a file not owned by the user the
//! host runs as (its effective uid, read from a file it just created) or
//! writable by others is ignored and recompiled. The folder keeps the
//! [`KEEP`] newest files; older ones are removed when it is opened.

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

/// Compiled files kept; a plugin folder rarely holds more than a few
/// dozen versions worth keeping.
pub const KEEP: usize = 64;

/// A folder of compiled components.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    /// The user the host runs as: a file it creates is owned by it.
    uid: u32,
}

impl Cache {
    /// A cache in `dir`, created (private to this user) if missing. A
    /// folder that belongs to another user is refused: its files could
    /// have been written by anyone who owns it.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let uid = tempfile::NamedTempFile::new_in(dir)?
            .as_file()
            .metadata()?
            .uid();
        if std::fs::metadata(dir)?.uid() != uid {
            return Err(std::io::Error::other(format!(
                "{dir:?} belongs to another user (uid {} is not the host's {uid})",
                std::fs::metadata(dir)?.uid()
            )));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        evict(dir, KEEP);
        Ok(Self {
            dir: dir.to_path_buf(),
            uid,
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

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The compiled component for `wasm` if this host wrote it earlier.
    pub fn cached(&self, engine: &Engine, wasm: &[u8]) -> Option<Component> {
        let path = self.path_for(engine, wasm);
        if trusted(&path, self.uid) {
            load(engine, &path)
        } else {
            None
        }
    }

    /// Compiles `wasm` here and writes it to the cache.
    pub fn compile(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
        let path = self.path_for(engine, wasm);
        let compiled = Component::new(engine, wasm)?;
        match store(&compiled, &path) {
            // Run from the file just written, as after a restart: its code
            // is mapped from disk and only the pages calls touch stay in
            // memory, where the compiled copy holds all of it.
            Ok(()) => {
                if let Some(mapped) = load(engine, &path) {
                    return Ok(mapped);
                }
            }
            Err(e) => tracing::warn!("cannot cache the compiled plugin at {path:?}: {e:#}"),
        }
        Ok(compiled)
    }
}

/// Removes all but the `keep` most recently written compiled files.
fn evict(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, old) in files.into_iter().skip(keep) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!("cannot remove the old compiled plugin {old:?}: {e}");
        }
    }
}

/// Owned by the host's user (`uid`) and writable by nobody else.
fn trusted(path: &Path, uid: u32) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let ok = meta.is_file() && meta.uid() == uid && meta.mode() & 0o022 == 0;
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
