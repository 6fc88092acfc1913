//! `POST /hooks/<plugin>/<name>`: webhooks plugins declare, reachable only
//! with a secret from the operator.
//!
//! A delivery is checked before any plugin code sees it, in this order:
//! the webhook is configured (404), the body fits (413), the signature or
//! token matches the secret in constant time (401), it carries a delivery
//! id (400) not taken before (409). Then the plugin's `handle-webhook`
//! runs as its own audited transaction through [`Attempts::run`], the one
//! path every plugin call takes, and the sender is answered only after
//! that commit: a sender whose delivery was not taken (the database away,
//! the host busy: 503; the plugin crashed: 500) sends it again, and the
//! delivery id, stored with the commit as its processed marker, makes the
//! second copy of one that was taken a 409 rather than a second build.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit as _, Mac as _};

use crate::attempt::{Call, Ran};
use crate::bot::Bot;
use crate::config::{Config, ConfigError, WebhookSender};
use crate::dispatch::{CommandTable, chat_text, detail_of, outcome_of};
use crate::runtime::bindings::WebhookRequest;
use crate::runtime::{CallOutcome, CallState, LoadedPlugin, PluginError};
use crate::store::{AuditRecord, Commit, Decision, OutMessage, Outcome};

/// The configured webhooks, with their secrets read once at start.
#[derive(Default)]
pub struct Hooks {
    by_route: HashMap<(String, String), Hook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("routes", &self.by_route.keys().collect::<Vec<_>>())
            .finish()
    }
}

struct Hook {
    sender: WebhookSender,
    secret: String,
}

impl Hooks {
    /// Every `[plugins.<name>.webhooks.<hook>]`, its secret resolved: a
    /// secret that cannot be read stops the start with the key to fix.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut by_route = HashMap::new();
        for (plugin, section) in &config.plugins {
            for (name, hook) in &section.webhooks {
                let secret = hook
                    .secret
                    .resolve(&format!("plugins.{plugin}.webhooks.{name}.secret"))?;
                if secret.is_empty() {
                    return Err(ConfigError::Secret {
                        key: format!("plugins.{plugin}.webhooks.{name}.secret"),
                        message:
                            "is empty; a webhook without a secret would take anyone's deliveries"
                                .into(),
                    });
                }
                by_route.insert(
                    (plugin.clone(), name.clone()),
                    Hook {
                        sender: hook.sender,
                        secret,
                    },
                );
            }
        }
        Ok(Self { by_route })
    }
}

impl Hooks {
    /// `, /hooks/<plugin>/<name>` for each, for the start-up log line.
    pub(super) fn by_route_names(&self) -> String {
        let mut names: Vec<String> = self
            .by_route
            .keys()
            .map(|(p, n)| format!(", /hooks/{p}/{n}"))
            .collect();
        names.sort();
        names.concat()
    }
}

/// Why a delivery was refused before the plugin saw it: the status, the
/// word the metrics count it under, and what the sender is told.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn new(status: StatusCode, outcome: &'static str, why: impl Into<String>) -> Self {
        Self(status, outcome, why.into())
    }
}

/// The delivery checked: what the plugin will be handed.
struct Verified {
    delivery: String,
    event: String,
    body: Vec<u8>,
}

/// Handles one delivery to `/hooks/<plugin>/<name>`.
pub(super) async fn deliver(
    State(web): State<Arc<super::Web>>,
    Path((plugin, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(hook) = web.hooks.by_route.get(&(plugin.clone(), name.clone())) else {
        // The path is the sender's text: neither logged as is nor a label.
        web.bot.metrics().webhook("none", "none", "not_found");
        return (
            StatusCode::NOT_FOUND,
            "no webhook is configured at this path\n",
        )
            .into_response();
    };
    let started = Instant::now();
    let limit = usize::try_from(web.bot.config().web.max_body_kib)
        .unwrap_or(usize::MAX)
        .saturating_mul(1024);
    let verified = match verify(hook, &headers, body, limit).await {
        Ok(v) => v,
        Err(Refusal(status, outcome, why)) => {
            tracing::warn!(%plugin, hook = %name, %status, "refused a webhook delivery: {why}");
            web.bot.metrics().webhook(&plugin, &name, outcome);
            return (status, format!("{why}\n")).into_response();
        }
    };
    let (status, outcome, text) =
        run(&web.bot, &plugin, &name, hook.sender, verified, started).await;
    web.bot.metrics().webhook(&plugin, &name, outcome);
    (status, text).into_response()
}

/// Reads the body within `limit` and checks the signature and the
/// delivery id.
async fn verify(
    hook: &Hook,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Verified, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is larger than {} (`web.max_body_kib`)",
                crate::text::size(u64::try_from(limit).unwrap_or(u64::MAX))
            ),
        )
    };
    let declared = header(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?
        .to_vec();
    let (delivery_header, event_header) = match hook.sender {
        WebhookSender::Github => {
            github_signature(headers, &hook.secret, &body)?;
            ("X-GitHub-Delivery", "X-GitHub-Event")
        }
        WebhookSender::Gitlab => {
            gitlab_token(headers, &hook.secret)?;
            ("X-Gitlab-Event-UUID", "X-Gitlab-Event")
        }
    };
    let delivery = header(headers, delivery_header)
        .filter(|d| crate::text::is_id(d))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "no_delivery_id",
                format!(
                    "a delivery needs an id in `{delivery_header}`, so a repeat can be told apart"
                ),
            )
        })?;
    let event = header(headers, event_header)
        .map(crate::text::one_line)
        .unwrap_or_default();
    Ok(Verified {
        delivery: delivery.to_owned(),
        event,
        body,
    })
}

/// A header's value, when it is text (`name` in any case).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`,
/// compared in constant time by the MAC itself.
fn github_signature(headers: &HeaderMap, secret: &str, body: &[u8]) -> Result<(), Refusal> {
    let unsigned = || {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unsigned",
            "the delivery is not signed: `X-Hub-Signature-256: sha256=…` is missing",
        )
    };
    let given = header(headers, "x-hub-signature-256")
        .and_then(|v| v.strip_prefix("sha256="))
        .ok_or_else(unsigned)?;
    let forged = || {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "forged",
            "the signature does not match this webhook's secret",
        )
    };
    let given = hex(given).ok_or_else(forged)?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| forged())?;
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| forged())
}

/// GitLab: `X-Gitlab-Token: <the secret>`. Both sides are hashed first,
/// so the comparison takes the same time whatever the token's length.
fn gitlab_token(headers: &HeaderMap, secret: &str) -> Result<(), Refusal> {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let given = header(headers, "x-gitlab-token").ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unsigned",
            "the delivery carries no `X-Gitlab-Token`",
        )
    })?;
    let (given, secret) = (
        sha2::Sha256::digest(given.as_bytes()),
        sha2::Sha256::digest(secret.as_bytes()),
    );
    let same: bool = given.as_slice().ct_eq(secret.as_slice()).into();
    if same {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "forged",
            "the token does not match this webhook's secret",
        ))
    }
}

/// Lowercase or uppercase hex as bytes; none for anything else.
fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            match pair {
                [hi, lo] => Some(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()?),
                _ => None,
            }
        })
        .collect()
}

/// The processed marker of a delivery: its id under the webhook's name,
/// so two webhooks never refuse each other's deliveries.
fn marker(plugin: &str, name: &str, delivery: &str) -> String {
    crate::dispatch::marker(&format!("hook:{plugin}/{name}:{delivery}"))
}

/// Runs a verified delivery in its plugin to its commit: the status, the
/// metrics' word and the body to answer with.
async fn run(
    bot: &Bot,
    plugin: &str,
    name: &str,
    sender: WebhookSender,
    verified: Verified,
    started: Instant,
) -> (StatusCode, &'static str, String) {
    let table = bot.registry().current();
    let Some(loaded) = table.plugin(plugin).cloned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("plugin {plugin} is not loaded; send it again once it is\n"),
        );
    };
    if !loaded.info.webhooks.iter().any(|h| h.name == name) {
        return (
            StatusCode::NOT_FOUND,
            "not_found",
            format!("plugin {plugin} does not declare a webhook {name}\n"),
        );
    }
    if loaded.health.is_quarantined() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "quarantined",
            format!("plugin {plugin} is quarantined; send it again once an admin lifted it\n"),
        );
    }
    let marker = marker(plugin, name, &verified.delivery);
    match bot.db.processed(&marker).await {
        Ok(false) => {}
        Ok(true) => return replayed(plugin, name, &verified.delivery),
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the database is unavailable ({e}); send it again later\n"),
            );
        }
    }
    let call = HookCall {
        bot,
        plugin: &loaded,
        table: &table,
        name,
        sender,
        verified,
        marker,
        started,
        answer: Mutex::new(None),
    };
    let ran = bot
        .attempts()
        .run(&loaded, &call.verified.delivery, &call)
        .await;
    let answer = call
        .answer
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match (ran, answer) {
        (Ok(Ran::Committed(_)), Some((status, outcome, text))) => (status, outcome, text),
        (Ok(Ran::Duplicate), _) => replayed(plugin, name, &call.verified.delivery),
        (Ok(Ran::NotNow(e)), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{e}; send it again later\n"),
        ),
        (Ok(Ran::Contended), _) | (Ok(Ran::Committed(_)), None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many changes to the same data at once; send it again later\n".into(),
        ),
        (Err(e), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the delivery could not be recorded ({e}); send it again later\n"),
        ),
    }
}

fn replayed(plugin: &str, name: &str, delivery: &str) -> (StatusCode, &'static str, String) {
    tracing::warn!(%plugin, hook = %name, delivery = %crate::text::one_line(delivery), "refused a replayed webhook delivery");
    (
        StatusCode::CONFLICT,
        "replayed",
        format!(
            "delivery {} was taken before; it is not run twice\n",
            crate::text::one_line(delivery)
        ),
    )
}

/// One delivery, for [`crate::attempt::Attempts::run`].
struct HookCall<'a> {
    bot: &'a Bot,
    plugin: &'a Arc<LoadedPlugin>,
    table: &'a CommandTable,
    name: &'a str,
    sender: WebhookSender,
    verified: Verified,
    marker: String,
    started: Instant,
    /// What the sender is told, set by whichever commit is built last.
    answer: Mutex<Option<(StatusCode, &'static str, String)>>,
}

impl HookCall<'_> {
    fn audit(&self, outcome: Outcome, detail: Option<String>) -> AuditRecord {
        let event = if self.verified.event.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.verified.event)
        };
        AuditRecord {
            at_ms: self.bot.now_ms(),
            kind: "webhook",
            actor: format!("webhook:{}", self.sender.as_str()),
            room: None,
            command: format!(
                "{} delivery {}{event}",
                self.name,
                crate::text::one_line(&self.verified.delivery)
            ),
            plugin: Some(self.plugin.name.to_string()),
            plugin_version: Some(self.plugin.info.version.clone()),
            decision: Decision::NotChecked,
            outcome,
            detail,
            duration_us: AuditRecord::micros_since(self.started),
        }
    }

    fn answer(&self, status: StatusCode, outcome: &'static str, text: String) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some((status, outcome, text));
    }
}

impl Call for HookCall<'_> {
    type Value = Result<String, String>;

    fn run(&self) -> impl std::future::Future<Output = CallOutcome<Self::Value>> + Send {
        let request = WebhookRequest {
            delivery: self.verified.delivery.clone(),
            event: self.verified.event.clone(),
            sender: self.sender.as_str().to_owned(),
            body: self.verified.body.clone(),
            now_ms: self.bot.now_ms(),
        };
        self.bot
            .runtime()
            .webhook(self.plugin, self.name.to_owned(), request)
    }

    fn returned(&self, value: Self::Value, state: CallState) -> Commit {
        match value {
            Ok(text) => {
                self.answer(StatusCode::OK, "ok", format!("{}\n", text.trim_end()));
                crate::attempt::with_effects(
                    state,
                    self.table,
                    (0, None),
                    Some(self.marker.clone()),
                    self.audit(Outcome::Ok, None),
                    None,
                )
            }
            // The sender's payload: sending it again would fail the same
            // way, so it is taken (marked) and refused with the reason.
            Err(why) => {
                self.answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "refused",
                    format!("{}\n", crate::text::one_line(&why)),
                );
                Commit::only_audit(
                    Some(self.marker.clone()),
                    self.audit(Outcome::Error, Some(why)),
                    Vec::new(),
                )
            }
        }
    }

    /// A crash is not the sender's fault: nothing is marked, so the
    /// sender's retry runs it again (perhaps on a fixed plugin).
    fn failed(&self, e: &PluginError, notices: Vec<OutMessage>) -> Commit {
        self.answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            format!("{}; send it again later\n", chat_text(e)),
        );
        Commit::only_audit(None, self.audit(outcome_of(e), Some(detail_of(e))), notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_reads_both_cases_and_refuses_the_rest() {
        assert_eq!(hex("00ffAB"), Some(vec![0, 255, 171]));
        assert_eq!(hex(""), Some(vec![]));
        assert_eq!(hex("abc"), None);
        assert_eq!(hex("zz"), None);
        assert_eq!(hex("éé"), None);
    }

    fn github(secret: &str, body: &[u8], signature: Option<&str>) -> Result<(), &'static str> {
        let mut headers = HeaderMap::new();
        if let Some(s) = signature {
            headers.insert("x-hub-signature-256", s.parse().expect("a header value"));
        }
        github_signature(&headers, secret, body).map_err(|Refusal(_, outcome, _)| outcome)
    }

    #[test]
    fn a_github_signature_matches_only_its_secret_and_body() {
        // GitHub's own example: secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let secret = "It's a Secret to Everybody";
        assert_eq!(github(secret, b"Hello, World!", Some(good)), Ok(()));
        assert_eq!(github(secret, b"Hello, World?", Some(good)), Err("forged"));
        assert_eq!(
            github("another", b"Hello, World!", Some(good)),
            Err("forged")
        );
        assert_eq!(
            github(secret, b"Hello, World!", Some("sha256=zz")),
            Err("forged")
        );
        assert_eq!(
            github(secret, b"Hello, World!", Some("sha1=00")),
            Err("unsigned")
        );
        assert_eq!(github(secret, b"Hello, World!", None), Err("unsigned"));
    }

    #[test]
    fn a_gitlab_token_must_be_the_secret() {
        let check = |token: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(t) = token {
                headers.insert("x-gitlab-token", t.parse().expect("a header value"));
            }
            gitlab_token(&headers, "s3cret").map_err(|Refusal(_, outcome, _)| outcome)
        };
        assert_eq!(check(Some("s3cret")), Ok(()));
        assert_eq!(check(Some("s3cret ")), Err("forged"));
        assert_eq!(check(Some("")), Err("forged"));
        assert_eq!(check(None), Err("unsigned"));
    }
}
