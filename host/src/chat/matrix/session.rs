//! Logging the bot in and keeping it the same device across restarts.
//!
//! The session (user, device, access token) is saved beside the
//! matrix-sdk store, readable only by the bot's user. Restarts restore it,
//! so the device and its encryption keys stay the same and people who
//! verified the bot need not do it again.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use matrix_sdk::SqliteStoreConfig;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::{Client, SessionMeta, SessionTokens};

use crate::config::{Config, MatrixConfig};

const SESSION_FILE: &str = "session.json";

/// A logged-in client with its store opened.
pub async fn connect(config: &Config, matrix: &MatrixConfig) -> anyhow::Result<Client> {
    let store = config.matrix_store_dir(matrix);
    std::fs::create_dir_all(&store)
        .with_context(|| format!("creating the Matrix store {store:?}"))?;
    // Keys and the access token live here: private to the bot's user.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {store:?} private"))?;
    }
    let passphrase = match &matrix.store_passphrase {
        Some(s) => Some(s.resolve("matrix.store_passphrase")?),
        None => None,
    };
    let client = Client::builder()
        .homeserver_url(&matrix.homeserver)
        // A bot reads few rooms with one client: the SDK's default of four
        // connections per core, each with 2 MB of page cache, in each of
        // its three stores, was most of the process's memory.
        .sqlite_store_with_config_and_cache_path(
            SqliteStoreConfig::with_low_memory_config(&store).passphrase(passphrase.as_deref()),
            None::<&Path>,
        )
        // Rate limits (M_LIMIT_EXCEEDED) are waited out by the SDK, honouring
        // the server's retry-after; network failures are retried too, and
        // anything still failing stays in the outbox.
        .request_config(RequestConfig::new().retry_limit(5))
        .build()
        .await
        .with_context(|| format!("opening the Matrix store {store:?}"))?;
    let session_file = store.join(SESSION_FILE);
    let bot = config.bot.user_id.as_str();
    match read_session(&session_file)? {
        Some(session) if session.meta.user_id == bot => {
            client
                .restore_session(session)
                .await
                .context("restoring the saved Matrix session")?;
            tracing::info!(device = ?client.device_id(), "restored the Matrix session");
        }
        Some(session) => anyhow::bail!(
            "the Matrix store {store:?} belongs to {}, but bot.user_id is {bot}; use another matrix.store_dir",
            session.meta.user_id
        ),
        None => {
            let session = login(&client, matrix, bot).await?;
            write_session(&session_file, &session)?;
            tracing::info!(device = %session.meta.device_id, "logged in to Matrix as a new device");
        }
    }
    Ok(client)
}

async fn login(client: &Client, matrix: &MatrixConfig, bot: &str) -> anyhow::Result<MatrixSession> {
    if let Some(password) = &matrix.password {
        let password = password.resolve("matrix.password")?;
        client
            .matrix_auth()
            .login_username(bot, &password)
            .initial_device_display_name(&matrix.device_name)
            .send()
            .await
            .with_context(|| format!("logging in to {} as {bot}", matrix.homeserver))?;
        return client
            .matrix_auth()
            .session()
            .context("the homeserver accepted the login but gave no session");
    }
    let token = match &matrix.access_token {
        Some(t) => t.resolve("matrix.access_token")?,
        None => anyhow::bail!("config key `matrix.password`: set a password or an access_token"),
    };
    // The token does not say which device it belongs to; ask, with a
    // throwaway client, before opening the real store for that device.
    let probe = Client::builder()
        .homeserver_url(&matrix.homeserver)
        .build()
        .await
        .context("reaching the homeserver")?;
    probe
        .restore_session(MatrixSession {
            meta: SessionMeta {
                user_id: bot.try_into().context("bot.user_id")?,
                device_id: "IKKYU_PROBE".into(),
            },
            tokens: SessionTokens {
                access_token: token.clone(),
                refresh_token: None,
            },
        })
        .await?;
    let who = probe
        .whoami()
        .await
        .context("checking matrix.access_token with the homeserver")?;
    anyhow::ensure!(
        who.user_id == bot,
        "matrix.access_token belongs to {}, not to bot.user_id {bot}",
        who.user_id
    );
    let device_id = who
        .device_id
        .context("matrix.access_token has no device; log in with a password instead")?;
    let session = MatrixSession {
        meta: SessionMeta {
            user_id: who.user_id,
            device_id,
        },
        tokens: SessionTokens {
            access_token: token,
            refresh_token: None,
        },
    };
    client
        .restore_session(session.clone())
        .await
        .context("using matrix.access_token")?;
    Ok(session)
}

fn read_session(path: &Path) -> anyhow::Result<Option<MatrixSession>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!("{path:?} is not a saved Matrix session; remove it to log in again")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path:?}")),
    }
}

/// Writes the session atomically, private to the bot's user: it holds the
/// access token.
fn write_session(path: &Path, session: &MatrixSession) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut file = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a file in {dir:?}"))?;
    file.write_all(&serde_json::to_vec(session)?)?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("saving the Matrix session to {path:?}"))?;
    Ok(())
}
