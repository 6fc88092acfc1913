//! The operator's `ikkyu.toml`: parsed once at start, validated completely,
//! and reported with the key and the fix when it is wrong.
//!
//! Unknown keys are errors, never silently ignored. Relative paths are
//! resolved against the config file's folder so the bot behaves the same
//! whatever directory it is started from. This module does no I/O beyond
//! reading the file and the secrets it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::roles::{self, RoleName};

/// Why a config could not be used; each message names the key and what is
/// allowed there.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path:?}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or has unknown keys or wrongly typed values.
    #[error("{path:?} is not a valid ikkyu config: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is well-typed but not allowed.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `runtime.call_timeout`.
        key: String,
        /// What is allowed there.
        message: String,
    },
    /// A secret's environment variable or file is missing.
    #[error("config key `{key}`: {message}")]
    Secret {
        /// The dotted key that names the secret.
        key: String,
        /// Which variable or file is missing.
        message: String,
    },
}

/// The whole config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How commands are recognised.
    #[serde(default)]
    pub bot: BotConfig,
    /// Where state is kept.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Plugin limits and places.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Per-plugin grants and settings, keyed by the plugin's name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Role name -> users who hold it from the config.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// The Matrix homeserver `ikkyu run` connects to; the console needs none.
    #[serde(default)]
    pub matrix: Option<MatrixConfig>,
    /// How durable schedules run.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// How long finished records are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The programs plugins may have the host run.
    #[serde(default)]
    pub jobs: crate::jobs::JobsConfig,
    /// The HTTP entry point: health, metrics and plugins' webhooks.
    #[serde(default)]
    pub web: WebConfig,
    /// Folder the config file is in; relative paths are resolved from it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// How the bot recognises commands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotConfig {
    /// Messages starting with this are commands.
    pub prefix: String,
    /// The bot's own user id; a message that mentions it is a command too.
    pub user_id: String,
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            prefix: "!".into(),
            user_id: "@ikkyu:local".into(),
        }
    }
}

/// Where state is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (relative to the config file) or `postgres://...`.
    pub url: Secret,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::Plain("sqlite://ikkyu.db".into()),
        }
    }
}

/// Limits and places for plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Folder scanned for `*.wasm` plugins.
    pub plugins_dir: PathBuf,
    /// Wall-clock limit of one plugin call, e.g. `"5s"`.
    #[serde(with = "humantime_serde_compat")]
    pub call_timeout: Duration,
    /// Linear memory one plugin instance may grow to, in MiB.
    pub memory_limit_mb: u64,
    /// Plugin calls running at once, across all plugins.
    pub max_concurrent_calls: u32,
    /// Crashes or timeouts in a row after which a plugin is quarantined.
    pub quarantine_after: u32,
    /// Watch the plugins folder and reload a plugin when its file changes.
    pub watch: bool,
    /// Folder for compiled plugins, so restarts need not compile them
    /// again; `""` turns the cache off.
    pub cache_dir: PathBuf,
    /// The executable that compiles plugins in a child process (the
    /// `ikkyu` binary itself, set by it, never by the file); none compiles
    /// in-process, as library users and tests do.
    #[serde(skip)]
    pub compiler: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            plugins_dir: PathBuf::from("plugins"),
            call_timeout: Duration::from_secs(5),
            memory_limit_mb: 64,
            max_concurrent_calls: 64,
            quarantine_after: 5,
            watch: true,
            cache_dir: PathBuf::from("cache"),
            compiler: None,
        }
    }
}

/// How the bot reaches its Matrix homeserver. The bot's account is
/// `bot.user_id`; exactly one of `password` and `access_token` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// The homeserver's client API base URL, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// The bot account's password; the bot logs in once and then reuses
    /// its stored session (and device) on every restart.
    #[serde(default)]
    pub password: Option<Secret>,
    /// An access token for the bot account, instead of a password.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// The name other users see for the bot's device.
    #[serde(default = "default_device_name")]
    pub device_name: String,
    /// Session and end-to-end encryption keys (SQLite), relative to the
    /// config file. Losing it means a new device that cannot read old
    /// encrypted messages; back it up with the database.
    #[serde(default = "default_store_dir")]
    pub store_dir: PathBuf,
    /// Encrypts the store at rest.
    #[serde(default)]
    pub store_passphrase: Option<Secret>,
    /// Who may invite the bot into a room: user ids (`@alice:example.org`)
    /// or whole servers (`:example.org`). Invites from anyone else are
    /// declined.
    #[serde(default)]
    pub allowed_inviters: Vec<String>,
    /// Commands sent while the bot was down are answered after it starts if
    /// they are at most this old; older ones are told they were skipped.
    #[serde(default = "default_max_command_age", with = "humantime_serde_compat")]
    pub max_command_age: Duration,
}

fn default_device_name() -> String {
    "ikkyu".into()
}

fn default_store_dir() -> PathBuf {
    PathBuf::from("matrix-store")
}

fn default_max_command_age() -> Duration {
    Duration::from_secs(3600)
}

impl MatrixConfig {
    /// Whether `user` may invite the bot into a room.
    pub fn may_invite(&self, user: &str) -> bool {
        let server = user.split_once(':').map(|(_, s)| s);
        self.allowed_inviters.iter().any(|allowed| {
            allowed == user || allowed.strip_prefix(':').is_some_and(|s| Some(s) == server)
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: format!("matrix.{key}"),
                message,
            })
        };
        if !(self.homeserver.starts_with("https://") || self.homeserver.starts_with("http://")) {
            return invalid(
                "homeserver",
                format!(
                    "{:?} is not a URL like \"https://matrix.example.org\"",
                    self.homeserver
                ),
            );
        }
        if self.password.is_some() == self.access_token.is_some() {
            return invalid(
                "password",
                "set exactly one of `password` and `access_token`, e.g. password = { env = \"IKKYU_MATRIX_PASSWORD\" }".into(),
            );
        }
        if let Some(bad) = self
            .allowed_inviters
            .iter()
            .find(|u| !(roles::is_user_id(u) || u.strip_prefix(':').is_some_and(|s| !s.is_empty())))
        {
            return invalid(
                "allowed_inviters",
                format!(
                    "{bad:?} is neither a user id like \"@alice:example.org\" nor a server like \":example.org\""
                ),
            );
        }
        if self.max_command_age.is_zero() {
            return invalid("max_command_age", "must be more than 0, e.g. \"1h\"".into());
        }
        Ok(())
    }
}

/// `[scheduler]`: how durable schedules run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// A run missed while the bot was down (or busy) still happens, once,
    /// if it is at most this late; a later one is skipped and logged, so a
    /// restart never floods a room with stale announcements.
    #[serde(default = "default_grace", with = "humantime_serde_compat")]
    pub grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            grace: default_grace(),
        }
    }
}

fn default_grace() -> Duration {
    Duration::from_secs(3600)
}

/// `[retention]`: how long the host keeps what it no longer needs. Pruned
/// by the host itself about once an hour; nothing pending is ever pruned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// The audit log: who did what, kept long for incident reviews.
    #[serde(with = "humantime_serde_compat")]
    pub audit: Duration,
    /// Markers of handled chat messages. Must be longer than any replay
    /// (`matrix.max_command_age`), so a re-read message is still known.
    #[serde(with = "humantime_serde_compat")]
    pub processed: Duration,
    /// Delivered or given-up outbox messages.
    #[serde(with = "humantime_serde_compat")]
    pub outbox: Duration,
    /// Events whose every delivery finished.
    #[serde(with = "humantime_serde_compat")]
    pub events: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            audit: Duration::from_secs(365 * DAY),
            processed: Duration::from_secs(7 * DAY),
            outbox: Duration::from_secs(7 * DAY),
            events: Duration::from_secs(7 * DAY),
        }
    }
}

/// `[web]`: the HTTP entry point (health, metrics, plugins' webhooks).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// `address:port` to listen on, or `"off"`. The default answers only
    /// on this machine: health and metrics are for its own monitoring, and
    /// webhooks from elsewhere come through a reverse proxy that holds the
    /// TLS certificate. Port 0 takes any free port (the log says which).
    pub listen: String,
    /// The largest request body taken; a larger one is refused (413)
    /// before it is read whole.
    pub max_body_kib: u32,
    /// The longest a request may take, reading its body included; a
    /// sender that trickles its body is cut off (408).
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_kib: 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl WebConfig {
    /// Where to listen; none when the entry point is `off`.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.listen == "off" {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                key: "web.listen".into(),
                message: format!(
                    "{:?} is not an address with a port like \"127.0.0.1:8080\", or \"off\"",
                    self.listen
                ),
            })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.address()?;
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: format!("web.{key}"),
                message: message.into(),
            })
        };
        if !(1..=64 * 1024).contains(&self.max_body_kib) {
            return invalid("max_body_kib", "must be between 1 and 65536 (64 MiB)");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be more than 0, e.g. \"10s\"");
        }
        Ok(())
    }
}

/// What the operator grants one plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Host interfaces the plugin may import: `chat`, `kv`, `events`,
    /// `schedule`, `directory`, `config`, `log`, `http`, `jobs`; and
    /// `direct`, sending direct messages (with `chat`).
    #[serde(default)]
    pub grants: BTreeSet<String>,
    /// With the `direct` grant: the users (`@a:example.org`) or servers
    /// (`:example.org`) it may message; empty is anyone.
    #[serde(default)]
    pub direct_to: BTreeSet<String>,
    /// Rooms the plugin may post in besides the room of the command; `"*"`
    /// is every group room the bot is in (for plugins whose job is posting
    /// where an admin tells them, like announcements), never a
    /// direct-message room unless that is listed by name.
    #[serde(default)]
    pub rooms: BTreeSet<String>,
    /// Free-form settings handed to the plugin as JSON.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// What its kv namespace may hold (keys and values), in MiB; a command
    /// that would store more is refused and changes nothing.
    #[serde(default = "default_kv_quota_mb")]
    pub kv_quota_mb: u64,
    /// With the `http` grant: the origins it may reach.
    #[serde(default)]
    pub http: Vec<HttpOrigin>,
    /// Secrets its HTTP requests may carry (`{secret:NAME}` in a header),
    /// each bound to the origins it may go to.
    #[serde(default)]
    pub secrets: BTreeMap<String, BoundSecret>,
    /// With the `jobs` grant: the jobs (`[jobs.<name>]`) it may start.
    #[serde(default)]
    pub jobs: BTreeSet<String>,
    /// The webhooks it declares that the web entry point serves, by name
    /// (`[plugins.<name>.webhooks.<hook>]`); one it declares without a
    /// section here is not reachable.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookConfig>,
}

/// How one webhook's deliveries are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Who sends them, which says how they are signed.
    pub sender: WebhookSender,
    /// The secret shared with the sender: GitHub's webhook secret, or
    /// GitLab's secret token.
    pub secret: Secret,
}

/// The senders whose signing the host knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookSender {
    /// `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`, with the
    /// delivery id in `X-GitHub-Delivery`.
    Github,
    /// `X-Gitlab-Token: <the secret>`, with the delivery id in
    /// `X-Gitlab-Event-UUID`.
    Gitlab,
}

impl WebhookSender {
    /// The word plugins see in `webhook-request.sender`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookSender::Github => "github",
            WebhookSender::Gitlab => "gitlab",
        }
    }
}

/// An origin a plugin may reach: `"https://jira.example.org"`, or a table
/// to allow private addresses: `{ origin = "http://127.0.0.1:8080",
/// allow_private = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HttpOrigin {
    /// Public addresses only.
    Public(String),
    /// With its options.
    Table {
        /// `scheme://host[:port]`.
        origin: String,
        /// Whether the name may resolve to (or be) a loopback, private,
        /// link-local, CGNAT, unique-local or multicast address.
        #[serde(default)]
        allow_private: bool,
    },
}

impl HttpOrigin {
    /// The origin as written and whether private addresses are allowed.
    pub fn parts(&self) -> (&str, bool) {
        match self {
            HttpOrigin::Public(o) => (o, false),
            HttpOrigin::Table {
                origin,
                allow_private,
            } => (origin, *allow_private),
        }
    }
}

/// A secret for HTTP requests and the origins it may be sent to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundSecret {
    /// The value, written, `{ env = … }` or `{ file = … }`.
    pub value: Secret,
    /// Origins (as under `http`) that may receive it.
    pub origins: Vec<String>,
}

fn default_kv_quota_mb() -> u64 {
    64
}

impl Default for PluginConfig {
    /// What a plugin without a section gets: nothing granted, the default
    /// quota.
    fn default() -> Self {
        Self {
            grants: BTreeSet::new(),
            direct_to: BTreeSet::new(),
            rooms: BTreeSet::new(),
            config: None,
            kv_quota_mb: default_kv_quota_mb(),
            http: Vec::new(),
            secrets: BTreeMap::new(),
            jobs: BTreeSet::new(),
            webhooks: BTreeMap::new(),
        }
    }
}

/// The host interfaces a plugin can be granted.
pub const GRANTABLE: &[&str] = &[
    "chat",
    "kv",
    "events",
    "schedule",
    "directory",
    "config",
    "log",
    "direct",
    "http",
    "jobs",
];

/// A value that may be written in the file or read from the environment or
/// a file, so secrets need not be committed with the config. Its `Debug`
/// never shows a written value, and a table with any key but `env` or
/// `file` is an error, like every other unknown key.
#[derive(Clone)]
pub enum Secret {
    /// `key = "value"`
    Plain(String),
    /// `key = { env = "NAME" }`
    Env {
        /// The name of the variable.
        env: String,
    },
    /// `key = { file = "/run/secrets/name" }`
    File {
        /// The path of the file.
        file: PathBuf,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret(***)"),
            Secret::Env { env } => f.debug_struct("Secret").field("env", env).finish(),
            Secret::File { file } => f.debug_struct("Secret").field("file", file).finish(),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let how = "write a secret as \"value\", { env = \"NAME\" } or { file = \"path\" }";
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(Secret::Plain(s)),
            toml::Value::Table(t) => {
                let mut keys = t.keys();
                match (
                    keys.next().map(String::as_str),
                    keys.next(),
                    t.values().next(),
                ) {
                    (Some("env"), None, Some(toml::Value::String(env))) => {
                        Ok(Secret::Env { env: env.clone() })
                    }
                    (Some("file"), None, Some(toml::Value::String(file))) => Ok(Secret::File {
                        file: PathBuf::from(file),
                    }),
                    _ => {
                        let names: Vec<&str> = t.keys().map(String::as_str).collect();
                        Err(D::Error::custom(format!(
                            "unexpected secret table with keys {names:?}; {how}"
                        )))
                    }
                }
            }
            other => Err(D::Error::custom(format!(
                "a secret cannot be a {}; {how}",
                other.type_str()
            ))),
        }
    }
}

impl Secret {
    /// A `{ file = … }` relative to `base`, as the config says relative
    /// paths are.
    pub(crate) fn anchored(&mut self, base: &Path) {
        if let Secret::File { file } = self
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
    }

    /// The secret's value; `key` is only for the error message.
    pub fn resolve(&self, key: &str) -> Result<String, ConfigError> {
        match self {
            Secret::Plain(v) => Ok(v.clone()),
            Secret::Env { env } => std::env::var(env).map_err(|_| ConfigError::Secret {
                key: key.into(),
                message: format!("environment variable {env:?} is not set"),
            }),
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end().to_owned())
                .map_err(|e| ConfigError::Secret {
                    key: key.into(),
                    message: format!("cannot read secret file {file:?}: {e}"),
                }),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Parses config text; `path` names it in errors and `base_dir` anchors
    /// relative paths.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.database.url.anchored(base_dir);
        for plugin in config.plugins.values_mut() {
            for secret in plugin.secrets.values_mut() {
                secret.value.anchored(base_dir);
            }
            for hook in plugin.webhooks.values_mut() {
                hook.secret.anchored(base_dir);
            }
        }
        if let Some(m) = &mut config.matrix {
            for secret in [
                &mut m.password,
                &mut m.access_token,
                &mut m.store_passphrase,
            ]
            .into_iter()
            .flatten()
            {
                secret.anchored(base_dir);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The plugins folder, resolved against the config's folder.
    pub fn plugins_dir(&self) -> PathBuf {
        self.base_dir.join(&self.runtime.plugins_dir)
    }

    /// The compiled-plugin cache folder, or none when turned off.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        (!self.runtime.cache_dir.as_os_str().is_empty())
            .then(|| self.base_dir.join(&self.runtime.cache_dir))
    }

    /// The database URL with a relative SQLite path resolved.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        let url = self.database.url.resolve("database.url")?;
        Ok(match url.strip_prefix("sqlite://") {
            Some(path) if !path.starts_with('/') && !path.starts_with(':') => {
                format!("sqlite://{}", self.base_dir.join(path).display())
            }
            _ => url,
        })
    }

    /// The Matrix store folder, resolved against the config's folder.
    pub fn matrix_store_dir(&self, matrix: &MatrixConfig) -> PathBuf {
        self.base_dir.join(&matrix.store_dir)
    }

    /// Users who are admins by the config: the people told about things
    /// nobody asked for in chat (quarantines, failed reloads).
    pub fn admins(&self) -> &[String] {
        self.roles
            .get(crate::roles::ADMIN)
            .map_or(&[], Vec::as_slice)
    }

    /// Every role the operator defined, plus the built-in ones.
    pub fn known_roles(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = roles::BUILT_IN.iter().map(|r| (*r).to_owned()).collect();
        all.extend(self.roles.keys().cloned());
        all
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| Err(ConfigError::Invalid { key, message });
        if self.bot.prefix.is_empty() || self.bot.prefix.chars().any(char::is_whitespace) {
            return invalid(
                "bot.prefix".into(),
                "must be non-empty without spaces, e.g. \"!\"".into(),
            );
        }
        if !roles::is_user_id(&self.bot.user_id) {
            return invalid(
                "bot.user_id".into(),
                format!(
                    "{:?} is not a Matrix user id like \"@ikkyu:example.org\"",
                    self.bot.user_id
                ),
            );
        }
        if let Some(m) = &self.matrix
            && self.retention.processed <= m.max_command_age
        {
            return invalid(
                "retention.processed".into(),
                format!(
                    "must be longer than matrix.max_command_age ({}), or a replayed message could run twice",
                    humantime::format_duration(m.max_command_age)
                ),
            );
        }
        if let Secret::Plain(url) = &self.database.url
            && !(url.starts_with("sqlite://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return invalid(
                "database.url".into(),
                format!("{url:?} must start with sqlite:// or postgres://"),
            );
        }
        self.web.validate()?;
        if self.runtime.call_timeout.is_zero() {
            return invalid(
                "runtime.call_timeout".into(),
                "must be more than 0, e.g. \"5s\"".into(),
            );
        }
        if !(1..=4096).contains(&self.runtime.memory_limit_mb) {
            return invalid(
                "runtime.memory_limit_mb".into(),
                format!("{} is outside 1..=4096", self.runtime.memory_limit_mb),
            );
        }
        if self.runtime.quarantine_after == 0 {
            return invalid(
                "runtime.quarantine_after".into(),
                "must be at least 1".into(),
            );
        }
        if self.runtime.max_concurrent_calls == 0 {
            return invalid(
                "runtime.max_concurrent_calls".into(),
                "must be at least 1".into(),
            );
        }
        for (name, plugin) in &self.plugins {
            if let Some(bad) = plugin.webhooks.keys().find(|h| RoleName::parse(h).is_err()) {
                return invalid(
                    format!("plugins.{name}.webhooks"),
                    format!("{bad:?} is not a webhook name: lowercase letters, digits and dashes"),
                );
            }
            let origins: Vec<String> = plugin
                .http
                .iter()
                .map(|o| crate::http::Origin::parse(o.parts().0).map(|o| o.to_string()))
                .collect::<Result<_, _>>()
                .map_err(|message| ConfigError::Invalid {
                    key: format!("plugins.{name}.http"),
                    message,
                })?;
            for (secret, bound) in &plugin.secrets {
                if !crate::http::is_secret_name(secret) {
                    return invalid(
                        format!("plugins.{name}.secrets"),
                        format!("{secret:?} is not a secret name: letters, digits, _ and - only"),
                    );
                }
                for origin in &bound.origins {
                    let parsed = crate::http::Origin::parse(origin)
                        .map(|o| o.to_string())
                        .map_err(|message| ConfigError::Invalid {
                            key: format!("plugins.{name}.secrets.{secret}.origins"),
                            message,
                        })?;
                    if !origins.contains(&parsed) {
                        return invalid(
                            format!("plugins.{name}.secrets.{secret}.origins"),
                            format!(
                                "{origin:?} is not one of the origins under plugins.{name}.http"
                            ),
                        );
                    }
                }
            }
            if !(1..=1024 * 1024).contains(&plugin.kv_quota_mb) {
                return invalid(
                    format!("plugins.{name}.kv_quota_mb"),
                    format!("{} is outside 1..=1048576", plugin.kv_quota_mb),
                );
            }
            if let Some(bad) = plugin.direct_to.iter().find(|u| {
                !(roles::is_user_id(u) || u.strip_prefix(':').is_some_and(|s| !s.is_empty()))
            }) {
                return invalid(
                    format!("plugins.{name}.direct_to"),
                    format!(
                        "{bad:?} is neither a user id (@a:example.org) nor a server (:example.org)"
                    ),
                );
            }
            for grant in &plugin.grants {
                if !GRANTABLE.contains(&grant.as_str()) {
                    return invalid(
                        format!("plugins.{name}.grants"),
                        format!(
                            "{grant:?} is not a grant; allowed: {}",
                            GRANTABLE.join(", ")
                        ),
                    );
                }
            }
        }
        let jobs = self.jobs.compile(&self.base_dir)?;
        for (name, plugin) in &self.plugins {
            if let Some(unknown) = plugin.jobs.iter().find(|j| !jobs.contains_key(*j)) {
                return invalid(
                    format!("plugins.{name}.jobs"),
                    format!("{unknown:?} is not a job; define it under [jobs.{unknown}]"),
                );
            }
        }
        if let Some(matrix) = &self.matrix {
            matrix.validate()?;
        }
        for (role, users) in &self.roles {
            if RoleName::parse(role).is_err() {
                return invalid(
                    format!("roles.{role}"),
                    "role names are lowercase letters, digits and dashes".into(),
                );
            }
            if let Some(bad) = users.iter().find(|u| !roles::is_user_id(u)) {
                return invalid(
                    format!("roles.{role}"),
                    format!("{bad:?} is not a Matrix user id like \"@alice:example.org\""),
                );
            }
        }
        Ok(())
    }
}

/// Durations written the human way (`"5s"`, `"250ms"`).
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"5s\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("ikkyu.toml"), Path::new("/etc/ikkyu"))
    }

    #[test]
    fn empty_config_uses_defaults() {
        let c = parse("").expect("valid");
        assert_eq!(c.bot.prefix, "!");
        assert_eq!(
            c.database_url().expect("url"),
            "sqlite:///etc/ikkyu/ikkyu.db"
        );
        assert_eq!(c.runtime.call_timeout, Duration::from_secs(5));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[runtime]\ncall_timout = \"5s\"\n").expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("call_timout"), "{text}");
        assert!(
            text.contains("call_timeout"),
            "should list the expected keys: {text}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let cases = [
            ("[runtime]\ncall_timeout = \"soon\"", "not a duration"),
            (
                "[plugins.points]\ngrants = [\"net\"]",
                "plugins.points.grants",
            ),
            ("[roles]\nadmin = [\"root\"]", "roles.admin"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            (
                "[matrix]\nhomeserver = \"matrix.org\"\npassword = \"x\"",
                "matrix.homeserver",
            ),
            ("[matrix]\nhomeserver = \"http://h\"", "exactly one of"),
            (
                "[matrix]\nhomeserver = \"http://h\"\npassword = \"x\"\nallowed_inviters = [\"bob\"]",
                "matrix.allowed_inviters",
            ),
            (
                "[plugins.release]\nhttp = [\"https://jira.example.org/rest\"]",
                "plugins.release.http",
            ),
            (
                "[plugins.release]\nhttp = [\"https://jira.example.org\"]\n\
                 [plugins.release.secrets.jira]\nvalue = \"t\"\norigins = [\"https://evil.example.org\"]",
                "is not one of the origins under plugins.release.http",
            ),
            (
                "[plugins.release.secrets.jira]\nvalue = \"t\"\norigins = []\nextra = 1",
                "unknown field",
            ),
            (
                "[plugins.points]\nkv_quota_mb = 0",
                "plugins.points.kv_quota_mb",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn inviters_are_users_or_whole_servers() {
        let c = parse(
            "[matrix]\nhomeserver = \"http://h\"\naccess_token = \"t\"\nallowed_inviters = [\"@alice:a.org\", \":b.org\"]",
        )
        .expect("valid");
        let m = c.matrix.expect("matrix section");
        assert!(m.may_invite("@alice:a.org"));
        assert!(!m.may_invite("@mallory:a.org"));
        assert!(m.may_invite("@anyone:b.org"));
        assert!(!m.may_invite("@anyone:evil-b.org"));
        assert_eq!(m.max_command_age, Duration::from_secs(3600));
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let c = parse("[database]\nurl = { env = \"IKKYU_TEST_UNSET_VARIABLE\" }").expect("valid");
        let err = c.database_url().expect_err("unset").to_string();
        assert!(err.contains("IKKYU_TEST_UNSET_VARIABLE"), "{err}");
    }

    #[test]
    fn secrets_never_print_and_files_are_relative_to_the_config() {
        let c = parse("[database]\nurl = \"postgres://u:hunter2@h/db\"").expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = Config::parse(
            "[database]\nurl = { file = \"db-url\" }",
            Path::new("/etc/ikkyu/ikkyu.toml"),
            Path::new("/etc/ikkyu"),
        )
        .expect("valid");
        assert!(
            matches!(&c.database.url, Secret::File { file } if file == Path::new("/etc/ikkyu/db-url")),
            "{:?}",
            c.database.url
        );
        let err = parse("[database]\nurl = { env = \"X\", typo = 1 }").expect_err("unknown key");
        assert!(err.to_string().contains("typo"), "{err}");
    }
}
