//! Plugins replaced while the bot runs, and compiled plugins cached on disk.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu::config::Config;
use ikkyu::directory::Directory;
use ikkyu::runtime::{Runtime, Source};
use ikkyu::store::Db;
use ikkyu_e2e::{plugins_dir, sqlite_url, start_bot_with};

/// A private copy of the plugins, so a test can overwrite files.
fn own_plugins(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(plugins_dir()?)? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.join(name))?;
        }
    }
    Ok(())
}

async fn bot_with_own_plugins(
    data: &Path,
) -> anyhow::Result<(Arc<Bot>, RecordingSink, std::path::PathBuf)> {
    let dir = data.join("plugins");
    own_plugins(&dir)?;
    let (bot, sink) =
        start_bot_with(&sqlite_url(data), data, &dir, "call_timeout = \"5s\"").await?;
    Ok((Arc::new(bot), sink, dir))
}

async fn wait_for(sink: &RecordingSink, seen: &mut Vec<String>, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        seen.extend(sink.take());
        if seen.iter().any(|s| s.contains(needle)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_in_file_reloads_and_a_broken_one_keeps_the_old_version() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (bot, sink, dir) = bot_with_own_plugins(data.path()).await?;
    let _watch = ikkyu::watch::start(bot.clone(), &dir)?;
    let console = Console::new(1);

    // A call in flight finishes on the version it started on.
    let nap = {
        let (bot, msg) = (bot.clone(), console.message("@alice:local", "!nap 1", 0));
        tokio::spawn(async move { bot.handle(&msg).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::copy(dir.join("misbehave.wasm"), dir.join("misbehave.wasm.new"))?;
    std::fs::rename(dir.join("misbehave.wasm.new"), dir.join("misbehave.wasm"))?;
    nap.await??;
    let mut seen = Vec::new();
    assert!(wait_for(&sink, &mut seen, "slept 1s").await, "{seen:#?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    let reloaded = loop {
        let audit = bot.db.audit_recent(20).await?;
        if let Some(row) = audit.iter().find(|a| a.kind == "reload") {
            break Some(row.clone());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let row = reloaded.expect("the watcher reloaded misbehave within 2 s");
    assert_eq!(row.outcome, "ok");
    assert!(
        row.detail
            .as_deref()
            .unwrap_or_default()
            .contains("misbehave 0.1.0 loaded"),
        "{row:?}"
    );

    // A broken file: admins are told, the old version keeps answering.
    std::fs::write(dir.join("points.wasm"), b"not a component")?;
    let mut seen = Vec::new();
    assert!(
        wait_for(&sink, &mut seen, "[direct to @root:local] ikkyu: a new version of a plugin failed to load; the old version keeps serving").await,
        "{seen:#?}"
    );
    bot.handle(&console.message("@bob:local", "!points", 0))
        .await?;
    assert_eq!(
        sink.take(),
        vec!["@bob:local: 0 points, not ranked yet".to_owned()]
    );
    bot.handle(&console.message("@bob:local", "!plugins", 0))
        .await?;
    let plugins = sink.take().join("\n");
    assert!(
        plugins.contains("points 0.1.0 — ok") && plugins.contains("failed to load"),
        "{plugins}"
    );
    bot.shutdown().await;
    Ok(())
}

/// A runtime with its compiled cache in `<data>/compiled`.
async fn cached_runtime(data: &Path) -> anyhow::Result<Runtime> {
    compiling_runtime(data, None).await
}

/// A runtime with its compiled cache in `<data>/compiled` that compiles
/// in child processes of `compiler`, as the `ikkyu` binary does.
async fn compiling_runtime(data: &Path, compiler: Option<&Path>) -> anyhow::Result<Runtime> {
    let mut config = Config::parse(
        "[runtime]\ncache_dir = \"compiled\"\n",
        Path::new("test.toml"),
        data,
    )?;
    config.runtime.compiler = compiler.map(Path::to_path_buf);
    let db = Db::open(&sqlite_url(data)).await?;
    Runtime::new(
        &config,
        db.clone(),
        Directory::new(db, Default::default()),
        Arc::new(ikkyu::clock::SystemClock),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_plugins_come_from_the_cache() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let runtime = cached_runtime(data.path()).await?;
    let wasm = std::fs::read(plugins_dir()?.join("points.wasm"))?;
    let (_, first) = runtime.compile(&wasm)?;
    let (_, second) = runtime.compile(&wasm)?;
    assert_eq!((first, second), (Source::Compiled, Source::Cache));
    // A cache file someone else could have written is never trusted.
    let cached = std::fs::read_dir(data.path().join("compiled"))?
        .next()
        .expect("a cache file")?
        .path();
    std::fs::set_permissions(&cached, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    let (_, third) = runtime.compile(&wasm)?;
    assert_eq!(third, Source::Compiled);
    let (_, fourth) = runtime.compile(&wasm)?;
    assert_eq!(fourth, Source::Cache, "recompiling rewrote it privately");
    Ok(())
}

/// The binary compiles plugins in a child process of itself (so the
/// compiler's memory is given back and its crash is not the bot's); what
/// the child wrote is then read from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_compiled_in_a_child_process() -> anyhow::Result<()> {
    let wasm = std::fs::read(plugins_dir()?.join("points.wasm"))?;
    let cwasm = |dir: &Path| -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(dir.join("compiled"))?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count())
    };

    let data = tempfile::tempdir()?;
    let binary = ikkyu_e2e::matrix::ikkyu_binary()?;
    let runtime = compiling_runtime(data.path(), Some(binary)).await?;
    let (_, first) = runtime.compile(&wasm)?;
    assert_eq!(first, Source::Compiled);
    assert_eq!(cwasm(data.path())?, 1, "the child wrote the cache file");
    let (_, second) = runtime.compile(&wasm)?;
    assert_eq!(second, Source::Cache);
    // Not a module: the child's reason, and nothing cached.
    let Err(e) = runtime.compile(b"\0asm not really") else {
        anyhow::bail!("a broken module compiled");
    };
    assert!(e.to_string().starts_with("compiling it failed: "), "{e}");
    assert_eq!(cwasm(data.path())?, 1);

    // A child that fails is not followed by compiling in the bot: this
    // "compiler" always fails, and so does the compile.
    let data = tempfile::tempdir()?;
    let runtime = compiling_runtime(data.path(), Some(Path::new("/bin/false"))).await?;
    let Err(e) = runtime.compile(&wasm) else {
        anyhow::bail!("compiled although the compiler process failed");
    };
    assert!(e.to_string().contains("compiler process ended"), "{e}");

    // No compiler to start at all: the bot compiles it itself.
    let runtime = compiling_runtime(data.path(), Some(Path::new("/nonexistent/ikkyu"))).await?;
    let (_, fallback) = runtime.compile(&wasm)?;
    assert_eq!(fallback, Source::Compiled);
    assert_eq!(cwasm(data.path())?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compiled_cache_keeps_only_the_newest_files() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let compiled = data.path().join("compiled");
    std::fs::create_dir_all(&compiled)?;
    for i in 0..70 {
        std::fs::write(compiled.join(format!("old-{i}.cwasm")), b"stale")?;
    }
    let _runtime = cached_runtime(data.path()).await?;
    let left = std::fs::read_dir(&compiled)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(left, 64, "old compiled files are evicted");
    Ok(())
}
