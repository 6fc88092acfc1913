//! The `ikkyu` binary as an operator runs it: console through a pipe,
//! `migrate`, `test` and config errors.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn plugins_dir() -> std::path::PathBuf {
    // Built by `cargo xtask plugins`, which CI runs before the tests.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins")
}

fn spawn(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ikkyu"))
        .current_dir(dir)
        .args(args)
        .env("IKKYU_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ikkyu starts")
}

fn ikkyu(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = spawn(dir, args);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("ikkyu exits")
}

/// Any free port for the web entry point: tests run at once, and a
/// console holding the default port would make another's `run` fail.
const WEB: &str = "[web]\nlisten = \"127.0.0.1:0\"\n";

fn write_config(dir: &Path) {
    let text = format!(
        "{WEB}[runtime]\nplugins_dir = {:?}\n[roles]\nadmin = [\"@alice:local\"]\n\
         [plugins.points]\ngrants = [\"chat\", \"kv\", \"events\", \"directory\", \"config\", \"log\"]\n",
        plugins_dir()
    );
    std::fs::write(dir.join("ikkyu.toml"), text).expect("write config");
}

#[test]
fn console_through_a_pipe_keeps_points_across_runs() {
    if !plugins_dir().join("points.wasm").exists() {
        panic!("target/plugins/points.wasm is missing; run `cargo xtask plugins` first");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path());
    let out = ikkyu(
        dir.path(),
        &["console", "--as", "@alice:local"],
        "!points give @bob:local 5 \"fixed the build\"\n/as @bob:local\n!points\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "@bob:local +5 points (fixed the build); now 5\n@bob:local: 5 points, rank 1 of 1\n"
    );

    let out = ikkyu(dir.path(), &["console", "--as", "@bob:local"], "!points\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "@bob:local: 5 points, rank 1 of 1\n"
    );
    assert!(
        dir.path().join("ikkyu.db").exists(),
        "the database is next to the config"
    );
}

#[test]
fn a_bad_config_names_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("ikkyu.toml"),
        "[runtime]\nmemory_limit_mb = 0\n",
    )
    .expect("write");
    let out = ikkyu(dir.path(), &["--config", "ikkyu.toml", "migrate"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runtime.memory_limit_mb") && stderr.contains("outside 1..=4096"),
        "{stderr}"
    );
}

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path());
    let out = ikkyu(dir.path(), &["migrate"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is up to date"));
    assert!(dir.path().join("ikkyu.db").exists());
}

#[test]
fn test_command_reports_a_failing_transcript() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path());
    std::fs::write(
        dir.path().join("bad.chat"),
        "> @a:local !points\n< 42 points\n",
    )
    .expect("write");
    let out = ikkyu(dir.path(), &["test", "bad.chat"], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL bad.chat:2: expected a reply matching /42 points/"),
        "{stdout}"
    );
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

#[test]
fn run_without_a_matrix_section_says_what_to_add() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path());
    let out = ikkyu(dir.path(), &["--config", "ikkyu.toml", "run"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no [matrix] section"), "{stderr}");
    assert!(stderr.contains("ikkyu console"), "{stderr}");
}

#[test]
fn run_with_an_unreachable_homeserver_fails_with_the_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path());
    let mut config = std::fs::read_to_string(dir.path().join("ikkyu.toml")).expect("config");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    config.push_str(&format!(
        "[matrix]\nhomeserver = \"http://127.0.0.1:{port}\"\npassword = \"x\"\n"
    ));
    std::fs::write(dir.path().join("ikkyu.toml"), config).expect("write config");
    let out = ikkyu(dir.path(), &["--config", "ikkyu.toml", "run"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("logging in to http://127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// `run` with its web port taken stops at once and says which key to
/// change; the console, for trying the bot, goes on without the web.
#[test]
fn a_taken_web_port_stops_run_and_not_the_console() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().expect("address").port();
    write_config(dir.path());
    let config = std::fs::read_to_string(dir.path().join("ikkyu.toml"))
        .expect("config")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + "[matrix]\nhomeserver = \"http://127.0.0.1:1\"\npassword = \"x\"\n";
    std::fs::write(dir.path().join("ikkyu.toml"), config).expect("write config");
    let out = ikkyu(dir.path(), &["--config", "ikkyu.toml", "run"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("listening on 127.0.0.1:{port} (`web.listen`")),
        "{stderr}"
    );
    let out = ikkyu(
        dir.path(),
        &["--config", "ikkyu.toml", "console", "--as", "@alice:local"],
        "!points\n",
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no web entry point"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("points"),
        "the console still answers"
    );
    drop(taken);
}

/// A database that cannot be reached at start is waited for, with a log
/// line that says so, instead of ending the bot.
#[test]
fn an_unreachable_database_at_start_is_waited_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    std::fs::write(
        dir.path().join("ikkyu.toml"),
        format!(
            "{WEB}[database]\nurl = \"postgres://postgres@127.0.0.1:{port}/nothing\"\n[runtime]\nplugins_dir = {:?}\n",
            plugins_dir()
        ),
    )
    .expect("write config");
    let mut child = spawn(dir.path(), &["console", "--as", "@alice:local"]);
    // The first try gives up after the pool's 3 s acquire timeout.
    #[allow(clippy::disallowed_methods)] // a plain test thread, no runtime to block
    std::thread::sleep(std::time::Duration::from_secs(7));
    let still_running = child.try_wait().expect("status").is_none();
    let _ = child.kill();
    let out = child.wait_with_output().expect("ikkyu exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(still_running, "ikkyu ended: {stderr}");
    assert!(
        stderr.contains("opening the database failed") && stderr.contains("retrying"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("opening the database failed").count(),
        1,
        "logged once: {stderr}"
    );
}
