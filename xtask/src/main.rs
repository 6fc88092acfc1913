//! `cargo xtask`: every build chore of ikkyu, so the README and CI run the
//! same commands a developer does.
//!
//! - `cargo xtask demo`    build host and plugins, start the console bot
//! - `cargo xtask plugins` build the plugins into target/plugins
//! - `cargo xtask matrix`  a local Synapse with the bot in it, to try by hand
//! - `cargo xtask ci`      exactly what CI runs: format, lints, every test

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

/// Plugins shipped with ikkyu: (cargo package, plugin name).
const PLUGINS: &[(&str, &str)] = &[
    ("ikkyu-points", "points"),
    ("ikkyu-contacts", "contacts"),
    ("ikkyu-announce", "announce"),
    ("ikkyu-oncall", "oncall"),
    ("ikkyu-release", "release"),
    ("ikkyu-deploy", "deploy"),
    ("ikkyu-build", "build"),
];
/// Plugins used only by tests; built into target/test-plugins.
const TEST_PLUGINS: &[(&str, &str)] = &[
    ("ikkyu-test-emitter", "emitter"),
    ("ikkyu-test-misbehave", "misbehave"),
    ("ikkyu-test-worker", "worker"),
];
const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root()?;
    match args.first().map(String::as_str) {
        Some("plugins") => build_plugins(&root).map(|_| ()),
        Some("demo") => demo(&root, &args[1..]),
        Some("ci") => ci(&root),
        Some("matrix") => local_matrix(&root, &args[1..]),
        _ => bail!("usage: cargo xtask <demo [--as @user:server] | plugins | matrix [port] | ci>"),
    }
}

fn root() -> anyhow::Result<PathBuf> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("run me through `cargo xtask`")?;
    Path::new(&manifest)
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent folder")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed with {st}");
    }
    Ok(())
}

/// Makes sure the wasm target is installed; rustup is the machine's
/// toolchain manager, so this is the one place we call it.
fn ensure_target() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match out {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET) =>
        {
            Ok(())
        }
        Ok(_) => status(Command::new("rustup").args(["target", "add", WASM_TARGET])),
        Err(e) => bail!("rustup is needed to add the {WASM_TARGET} target: {e}"),
    }
}

/// Builds every plugin (shipped and test) for wasm32-wasip2 and copies
/// them as `<name>.wasm` into target/plugins and target/test-plugins.
fn build_plugins(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_target()?;
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["build", "--release", "--target", WASM_TARGET]);
    for (pkg, _) in PLUGINS.iter().chain(TEST_PLUGINS) {
        cmd.args(["-p", pkg]);
    }
    status(&mut cmd)?;
    let built = root.join("target").join(WASM_TARGET).join("release");
    let copy = |set: &[(&str, &str)], dir: &str| -> anyhow::Result<()> {
        let out = root.join("target").join(dir);
        std::fs::create_dir_all(&out).with_context(|| format!("creating {out:?}"))?;
        for (pkg, name) in set {
            let from = built.join(format!("{}.wasm", pkg.replace('-', "_")));
            let to = out.join(format!("{name}.wasm"));
            std::fs::copy(&from, &to).with_context(|| format!("copying {from:?} to {to:?}"))?;
        }
        Ok(())
    };
    copy(PLUGINS, "plugins")?;
    copy(TEST_PLUGINS, "test-plugins")?;
    Ok(root.join("target/plugins"))
}

fn demo(root: &Path, rest: &[String]) -> anyhow::Result<()> {
    build_plugins(root)?;
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args([
            "run",
            "--quiet",
            "-p",
            "ikkyu",
            "--",
            "--config",
            "ikkyu.toml",
            "console",
        ])
        .args(if rest.is_empty() {
            vec!["--as".to_owned(), "@alice:local".to_owned()]
        } else {
            rest.to_vec()
        });
    status(&mut cmd)
}

/// A local Synapse (installed from PyPI into target/synapse) with the bot
/// logged in, for trying ikkyu with a real Matrix client.
fn local_matrix(root: &Path, rest: &[String]) -> anyhow::Result<()> {
    build_plugins(root)?;
    status(
        cargo()
            .current_dir(root)
            .args(["build", "--quiet", "-p", "ikkyu", "--bin", "ikkyu"]),
    )?;
    status(
        cargo()
            .current_dir(root)
            .args([
                "run",
                "--quiet",
                "-p",
                "ikkyu-e2e",
                "--bin",
                "local-matrix",
                "--",
            ])
            .args(rest),
    )
}

/// Exactly what CI runs. PostgreSQL tests use IKKYU_TEST_POSTGRES_URL,
/// which defaults here to the machine's local server.
fn ci(root: &Path) -> anyhow::Result<()> {
    status(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
    build_plugins(root)?;
    status(cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let mut test = cargo();
    test.current_dir(root).args(["test", "--workspace"]);
    if std::env::var_os("IKKYU_TEST_POSTGRES_URL").is_none() {
        test.env(
            "IKKYU_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        );
    }
    let (passed, failed) = run_counting(&mut test)?;
    // cargo's own last line is often an empty doc-test binary; this total
    // is what the run really did.
    println!("ci: {passed} passed, {failed} failed");
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// Runs `cmd`, echoing its output, and adds up cargo's `test result` lines.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, "passed");
            failed += count(rest, "failed");
        }
    }
    let st = child.wait()?;
    if !st.success() {
        println!("ci: {passed} passed, {failed} failed");
        bail!("cargo test failed with {st}");
    }
    Ok((passed, failed))
}

/// The number before `label` in `ok. 7 passed; 0 failed; ...`.
fn count(text: &str, label: &str) -> u64 {
    text.split(';')
        .map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
        })
        .find_map(|part| part.strip_suffix(label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
