//! A real Matrix homeserver for the tests: Synapse from PyPI, in a
//! virtualenv cached under `target/synapse`, started on 127.0.0.1 with a
//! generated config (SQLite, no federation, rate limits raised) and
//! stopped when the test process ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

/// The Synapse release the tests run against.
pub const SYNAPSE_VERSION: &str = "1.163.2";
/// The server name of every test homeserver.
pub const SERVER_NAME: &str = "localhost";

/// A running Synapse.
#[derive(Debug)]
pub struct Synapse {
    /// The client API base URL.
    pub url: String,
    /// Its folder: config, database, log.
    pub dir: PathBuf,
    secret: String,
    child: Child,
}

/// One Synapse for the whole test process, started by the first test that
/// asks; the watchdog stops it when the process ends.
pub async fn shared() -> anyhow::Result<&'static Synapse> {
    static SHARED: tokio::sync::OnceCell<Result<Synapse, String>> =
        tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let start = async {
                let runs = crate::root().join("target/synapse/runs");
                forget_dead_runs(&runs);
                let dir = runs.join(std::process::id().to_string());
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)?;
                Synapse::start(&dir).await
            };
            start.await.map_err(|e: anyhow::Error| format!("{e:#}"))
        })
        .await
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Removes the folders of earlier test processes that are gone.
fn forget_dead_runs(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let alive = name
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A client per request: test runtimes come and go, and a pooled
/// connection must not outlive the runtime that opened it.
fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// A registered account.
#[derive(Debug, Clone)]
pub struct Account {
    /// `@name:localhost`.
    pub user_id: String,
    /// Its password.
    pub password: String,
    /// An access token from registration.
    pub access_token: String,
}

impl Synapse {
    /// Installs Synapse if needed and starts one in `dir` (which must
    /// exist and be empty); ready when this returns.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_on(dir, free_port()?).await
    }

    /// [`Synapse::start`] on a given port.
    pub async fn start_on(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let python = venv_python()?;
        let secret = format!("ikkyu-test-{}-{port}", std::process::id());
        std::fs::write(dir.join("homeserver.yaml"), config(dir, port, &secret))?;
        std::fs::write(dir.join("log.config"), log_config(dir))?;
        let st = Command::new(&python)
            .current_dir(dir)
            .args([
                "-m",
                "synapse.app.homeserver",
                "-c",
                "homeserver.yaml",
                "--generate-keys",
            ])
            .stdout(Stdio::null())
            .status()
            .context("generating Synapse's signing key")?;
        if !st.success() {
            bail!("synapse --generate-keys failed with {st}");
        }
        let child = spawn(&python, dir)?;
        let synapse = Self {
            url: format!("http://127.0.0.1:{port}"),
            dir: dir.to_owned(),
            secret,
            child,
        };
        synapse.wait_ready().await?;
        Ok(synapse)
    }

    /// Kills the server, as a crash or a network outage would look to its
    /// clients.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on the same port with the same
    /// data; ready when this returns.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.child = spawn(&venv_python()?, &self.dir)?;
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let versions = format!("{}/_matrix/client/versions", self.url);
        while Instant::now() < deadline {
            if let Ok(r) = http().get(&versions).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default();
        bail!(
            "Synapse did not answer on {} within 60 s; its output:\n{log}",
            self.url
        )
    }

    /// Registers `name` through the shared-secret admin API.
    pub async fn register(&self, name: &str, admin: bool) -> anyhow::Result<Account> {
        let endpoint = format!("{}/_synapse/admin/v1/register", self.url);
        let nonce: Value = http()
            .get(&endpoint)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let nonce = nonce["nonce"].as_str().context("no nonce")?.to_owned();
        let password = format!("pw-{name}-secret");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.secret.as_bytes())?;
        let kind = if admin { "admin" } else { "notadmin" };
        mac.update(format!("{nonce}\0{name}\0{password}\0{kind}").as_bytes());
        let mac: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let body = json!({ "nonce": nonce, "username": name, "password": password, "admin": admin, "mac": mac });
        let response = http().post(&endpoint).json(&body).send().await?;
        let status = response.status();
        let reply: Value = response.json().await?;
        if !status.is_success() {
            bail!("registering {name} failed: {status} {reply}");
        }
        Ok(Account {
            user_id: reply["user_id"].as_str().context("no user_id")?.to_owned(),
            password,
            access_token: reply["access_token"]
                .as_str()
                .context("no access_token")?
                .to_owned(),
        })
    }

    /// Limits how fast `user` may send messages (admin API), to see the bot
    /// honour `M_LIMIT_EXCEEDED`.
    pub async fn limit_messages(
        &self,
        admin: &Account,
        user: &str,
        per_second: u32,
        burst: u32,
    ) -> anyhow::Result<()> {
        let endpoint = format!(
            "{}/_synapse/admin/v1/users/{user}/override_ratelimit",
            self.url
        );
        http()
            .post(&endpoint)
            .bearer_auth(&admin.access_token)
            .json(&json!({ "messages_per_second": per_second, "burst_count": burst }))
            .send()
            .await?
            .error_for_status()
            .context("overriding the rate limit")?;
        Ok(())
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The virtualenv's python, creating the virtualenv and installing
/// Synapse into it the first time. Installed into a fresh folder and
/// renamed into place, so a run cut short never leaves a half install.
pub fn venv_python() -> anyhow::Result<PathBuf> {
    let base = crate::root().join("target/synapse");
    let venv = base.join(format!("venv-{SYNAPSE_VERSION}"));
    let python = venv.join("bin/python");
    if python.exists() {
        return Ok(python);
    }
    std::fs::create_dir_all(&base)?;
    let tmp = base.join(format!("venv-tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let python3 = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&python3).args(["-m", "venv"]).arg(&tmp))?;
    run(Command::new(tmp.join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("matrix-synapse=={SYNAPSE_VERSION}"),
    ]))?;
    match std::fs::rename(&tmp, &venv) {
        Ok(()) => {}
        // Another process installed it meanwhile.
        Err(_) if python.exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(e).context("moving the virtualenv into place"),
    }
    Ok(python)
}

/// Starts Synapse from the config in `dir`, watched so it never outlives
/// the test process.
fn spawn(python: &Path, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))?;
    let child = Command::new(python)
        .current_dir(dir)
        .args(["-m", "synapse.app.homeserver", "-c", "homeserver.yaml"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting Synapse")?;
    watchdog(child.id())?;
    Ok(child)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed with {st}");
    }
    Ok(())
}

/// Kills `pid` when this process is gone, even if it died without running
/// destructors (a panic that aborts, a SIGKILL of the test runner).
fn watchdog(pid: u32) -> anyhow::Result<()> {
    let me = std::process::id();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; kill {pid} 2>/dev/null"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the Synapse watchdog")?;
    Ok(())
}

/// A port nobody listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn config(dir: &Path, port: u16, secret: &str) -> String {
    let d = dir.display();
    let fast = "{per_second: 1000, burst_count: 1000}";
    format!(
        r#"server_name: "{SERVER_NAME}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "{d}/homeserver.db"
log_config: "{d}/log.config"
media_store_path: "{d}/media_store"
signing_key_path: "{d}/signing.key"
registration_shared_secret: "{secret}"
macaroon_secret_key: "{secret}-macaroon"
form_secret: "{secret}-form"
report_stats: false
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
presence:
  enabled: false
rc_message: {fast}
rc_registration: {fast}
rc_login:
  address: {fast}
  account: {fast}
  failed_attempts: {fast}
rc_joins:
  local: {fast}
  remote: {fast}
rc_joins_per_room: {fast}
rc_invites:
  per_room: {fast}
  per_user: {fast}
  per_issuer: {fast}
rc_key_requests: {fast}
"#
    )
}

fn log_config(dir: &Path) -> String {
    format!(
        r#"version: 1
formatters:
  precise:
    format: "%(asctime)s %(name)s %(levelname)s %(message)s"
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "{}/homeserver.log"
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"#,
        dir.display()
    )
}
