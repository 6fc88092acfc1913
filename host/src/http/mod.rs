//! HTTP for plugins: which origins a plugin may reach, which secrets its
//! requests may carry and where, and the one client that performs every
//! request of that plugin (reads during a call, sends after a commit)
//! under those rules.
//!
//! Deny by default: an origin must be listed, the addresses a name
//! resolves to are checked before connecting (so a public-looking name
//! that points at 127.0.0.1 is refused like the address), redirects stay on
//! the origin they started from (a secret never follows one elsewhere), no
//! proxy from the environment is used, and bodies are bounded both ways.

pub mod guard;
pub mod sender;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::PluginConfig;

/// Bytes a request or response body may have.
pub const MAX_BODY: usize = 1 << 20;
/// Redirects followed within one origin.
const MAX_REDIRECTS: usize = 5;

/// `scheme://host:port`, the unit a plugin is allowed to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses an origin as written in the config: `https://host`,
    /// `http://host:8080`; nothing after the authority but an optional `/`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(text)
            .map_err(|e| format!("{text:?} is not an origin like https://jira.example.org: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{text:?} has a user name or password; put credentials in secrets"
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{text:?} has a path; an origin is only scheme://host[:port]"
            ));
        }
        Self::of(&url).ok_or_else(|| format!("{text:?} is not an http or https origin"))
    }

    /// The origin of `url`, for http and https URLs with a host.
    pub fn of(url: &reqwest::Url) -> Option<Self> {
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    /// The host as an address, when it is written as one.
    fn ip(&self) -> Option<IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Whether `name` can name a secret: `{secret:NAME}` in a header.
pub fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a request was not made or did not succeed, in words fit to show the
/// person whose command needed it.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The rules refuse it (origin, address, method, size, secret).
    #[error("{0}")]
    Refused(String),
    /// No answer in time.
    #[error("{origin} did not answer within {}", humantime::format_duration(*after))]
    Timeout {
        /// Where it went.
        origin: String,
        /// How long it waited.
        after: Duration,
    },
    /// No connection, or it broke.
    #[error("cannot reach {origin}: {message}")]
    Unreachable {
        /// Where it went.
        origin: String,
        /// What the client said.
        message: String,
    },
    /// The answer was larger than [`MAX_BODY`]; it is an error, never a
    /// cut body.
    #[error("the answer from {origin} is larger than {} KiB", MAX_BODY / 1024)]
    TooLarge {
        /// Where it came from.
        origin: String,
    },
}

impl HttpError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HttpError::Timeout { .. } | HttpError::Unreachable { .. }
        )
    }
}

/// A request as a plugin asked for it, checked against its rules; header
/// values may still hold `{secret:NAME}`.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: reqwest::Method,
    /// The URL, on an allowed origin.
    pub url: reqwest::Url,
    /// Headers as the plugin wrote them.
    pub headers: Vec<(String, String)>,
    /// At most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// `METHOD scheme://host:port/path`, what the audit log keeps (no query,
    /// which may carry data, no body).
    pub fn describe(&self) -> String {
        describe(self.method.as_str(), &self.url)
    }
}

/// `METHOD scheme://host:port/path` of a request: what the audit log
/// keeps (no query, which may carry data, no body).
pub fn describe(method: &str, url: &reqwest::Url) -> String {
    let origin = Origin::of(url).map_or_else(|| "?".into(), |o| o.to_string());
    format!("{method} {origin}{}", url.path())
}

/// What came back, with every secret value replaced by its `{secret:NAME}`.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, values redacted.
    pub headers: Vec<(String, String)>,
    /// The body, redacted.
    pub body: Vec<u8>,
}

struct Allowed {
    origin: Origin,
    allow_private: bool,
}

struct Bound {
    value: String,
    origins: Vec<Origin>,
}

/// One plugin's HTTP: its origins, its secrets and its client.
pub struct Http {
    allowed: Arc<Vec<Allowed>>,
    secrets: BTreeMap<String, Bound>,
    /// Built on the first request, off the runtime's threads: building a
    /// client reads and parses every root certificate of the system (19 M
    /// instructions, counted with callgrind), which every plugin paid at
    /// load, a third of the bot's start-up with eight plugins, and most
    /// plugins never make a request.
    client: tokio::sync::OnceCell<reqwest::Client>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origins: Vec<String> = self.allowed.iter().map(|a| a.origin.to_string()).collect();
        f.debug_struct("Http")
            .field("origins", &origins)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Http {
    /// The HTTP of the plugin configured by `section`; its secrets are read
    /// now (a missing environment variable fails the load, not a request).
    pub fn new(plugin: &str, section: &PluginConfig) -> Result<Self, String> {
        let allowed: Vec<Allowed> = section
            .http
            .iter()
            .map(|entry| {
                let (origin, allow_private) = entry.parts();
                Origin::parse(origin).map(|origin| Allowed {
                    origin,
                    allow_private,
                })
            })
            .collect::<Result<_, _>>()?;
        let mut secrets = BTreeMap::new();
        for (name, bound) in &section.secrets {
            let value = bound
                .value
                .resolve(&format!("plugins.{plugin}.secrets.{name}"))
                .map_err(|e| e.to_string())?;
            let origins = bound
                .origins
                .iter()
                .map(|o| Origin::parse(o))
                .collect::<Result<_, _>>()?;
            secrets.insert(name.clone(), Bound { value, origins });
        }
        Ok(Self {
            allowed: Arc::new(allowed),
            secrets,
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// The plugin's client, built on first use.
    async fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_try_init(|| {
                let allowed = self.allowed.clone();
                async move {
                    tokio::task::spawn_blocking(move || build_client(allowed))
                        .await
                        .map_err(|e| format!("cannot set up HTTP: {e}"))?
                }
            })
            .await
    }

    /// Checks what a plugin asked for against its rules: the method (only
    /// `GET` and `HEAD` when `read_only`), the origin, an address written
    /// in the URL, the body's size, and the secrets it names.
    pub fn check(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        read_only: bool,
    ) -> Result<Request, HttpError> {
        let refused = |m: String| Err(HttpError::Refused(m));
        let method = method.to_ascii_uppercase();
        let allowed_methods: &[&str] = if read_only {
            &["GET", "HEAD"]
        } else {
            &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        };
        if !allowed_methods.contains(&method.as_str()) {
            return refused(format!(
                "{} is not a method {} allows; use {}",
                crate::text::quoted(&method),
                if read_only { "http.fetch" } else { "http.send" },
                allowed_methods.join(", ")
            ));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| HttpError::Refused(format!("bad method: {e}")))?;
        let url = reqwest::Url::parse(url).map_err(|e| {
            HttpError::Refused(format!("{} is not a URL: {e}", crate::text::quoted(url)))
        })?;
        let origin = self.allow(&url)?;
        if body.len() > MAX_BODY {
            return refused(format!(
                "the request body is {}; at most {} KiB",
                crate::text::size(u64::try_from(body.len()).unwrap_or(u64::MAX)),
                MAX_BODY / 1024
            ));
        }
        for (name, value) in &headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return refused(format!(
                    "{} is not a header name",
                    crate::text::quoted(name)
                ));
            }
            for secret in secret_names(value) {
                let Some(bound) = self.secrets.get(secret) else {
                    return refused(format!(
                        "there is no secret {secret:?}; the operator adds it under [plugins.<name>.secrets.{secret}]"
                    ));
                };
                if !bound.origins.contains(&origin) {
                    return refused(format!(
                        "the secret {secret:?} may not be sent to {origin}; it is bound to {}",
                        bound
                            .origins
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        Ok(Request {
            method,
            url,
            headers,
            body,
        })
    }

    /// The allowed entry for `url`'s origin; an address written in the URL
    /// is checked here, since the resolver never sees one.
    fn allow(&self, url: &reqwest::Url) -> Result<Origin, HttpError> {
        let Some(origin) = Origin::of(url) else {
            return Err(HttpError::Refused(format!(
                "{} is not an http or https URL",
                crate::text::quoted(url.as_str())
            )));
        };
        let Some(entry) = self.allowed.iter().find(|a| a.origin == origin) else {
            return Err(HttpError::Refused(format!(
                "{origin} is not an origin this plugin may reach; the operator can add it to http = [...] under its [plugins.<name>]"
            )));
        };
        if let Some(ip) = origin.ip()
            && !entry.allow_private
            && let Some(why) = guard::forbidden(ip)
        {
            return Err(HttpError::Refused(format!(
                "{origin} is a {why} address; the operator can allow it with {{ origin = \"{origin}\", allow_private = true }}"
            )));
        }
        Ok(origin)
    }

    /// Performs `request` within `time`, splicing in its secrets and
    /// redacting them from what comes back.
    pub async fn perform(&self, request: &Request, time: Duration) -> Result<Response, HttpError> {
        let origin = Origin::of(&request.url).map_or_else(|| "?".into(), |o| o.to_string());
        let client = self
            .client()
            .await
            .map_err(|message| HttpError::Unreachable {
                origin: origin.clone(),
                message,
            })?;
        let mut builder = client
            .request(request.method.clone(), request.url.clone())
            .timeout(time)
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), self.splice(value));
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                HttpError::Timeout {
                    origin: origin.clone(),
                    after: time,
                }
            } else if e.is_redirect() || e.is_builder() {
                HttpError::Refused(crate::text::error_chain(&e))
            } else {
                HttpError::Unreachable {
                    origin: origin.clone(),
                    message: crate::text::error_chain(&e),
                }
            }
        };
        let answer = async {
            let mut response = builder.send().await.map_err(transport)?;
            if response
                .content_length()
                .is_some_and(|n| n > u64::try_from(MAX_BODY).unwrap_or(u64::MAX))
            {
                return Err(HttpError::TooLarge {
                    origin: origin.clone(),
                });
            }
            let status = response.status().as_u16();
            let headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        self.redact(&String::from_utf8_lossy(v.as_bytes())),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(HttpError::TooLarge {
                        origin: origin.clone(),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body: self.redact_bytes(body),
            })
        };
        tokio::time::timeout(time, answer)
            .await
            .unwrap_or_else(|_| {
                Err(HttpError::Timeout {
                    origin: origin.clone(),
                    after: time,
                })
            })
    }

    /// `value` with each `{secret:NAME}` replaced by the secret (checked
    /// to exist and be bound to the origin in [`Http::check`]).
    fn splice(&self, value: &str) -> String {
        let mut out = value.to_owned();
        for (name, bound) in &self.secrets {
            out = out.replace(&format!("{{secret:{name}}}"), &bound.value);
        }
        out
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, bound) in &self.secrets {
            if !bound.value.is_empty() {
                out = out.replace(&bound.value, &format!("{{secret:{name}}}"));
            }
        }
        out
    }

    fn redact_bytes(&self, body: Vec<u8>) -> Vec<u8> {
        let echoes = self.secrets.values().any(|b| {
            !b.value.is_empty() && body.windows(b.value.len()).any(|w| w == b.value.as_bytes())
        });
        if !echoes {
            return body;
        }
        self.redact(&String::from_utf8_lossy(&body)).into_bytes()
    }
}

/// The secret names a header value refers to.
fn secret_names(value: &str) -> impl Iterator<Item = &str> {
    value
        .split("{secret:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// A client for one plugin: no proxy, names resolved to allowed addresses
/// only, redirects kept on the origin they started from.
fn build_client(allowed: Arc<Vec<Allowed>>) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(Arc::new(Guarded { allowed }))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().and_then(Origin::of);
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if first.is_some() && first == Origin::of(attempt.url()) {
                attempt.follow()
            } else {
                let to = Origin::of(attempt.url()).map_or_else(|| "?".into(), |o| o.to_string());
                attempt.error(format!(
                    "redirected to {to}; requests follow redirects only within their origin"
                ))
            }
        }))
        .user_agent(concat!("ikkyu/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up HTTP: {e}"))
}

/// Resolves names for one plugin's client, keeping only the addresses its
/// origins allow.
struct Guarded {
    allowed: Arc<Vec<Allowed>>,
}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let private_ok = allowed
                .iter()
                .any(|a| a.origin.host == host && a.allow_private);
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match guard::forbidden(a.ip()) {
                    Some(why) if !private_ok => {
                        refused = Some((a.ip(), why));
                        false
                    }
                    _ => true,
                })
                .collect();
            if kept.is_empty() {
                let why = refused.map_or_else(
                    || "no address".to_owned(),
                    |(ip, why)| format!("{ip}, a {why} address, which plugins may not reach without allow_private"),
                );
                return Err(format!("{host} resolves to {why}").into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(toml: &str) -> Http {
        let section: PluginConfig = toml::from_str(toml).expect("a section");
        Http::new("p", &section).expect("valid")
    }

    /// A client parses every root certificate of the system when it is
    /// built, so a plugin gets one only when it first makes a request.
    #[tokio::test]
    async fn the_client_is_built_on_the_first_request() {
        let h = http(r#"http = [{ origin = "http://127.0.0.1:9", allow_private = true }]"#);
        assert!(h.client.get().is_none(), "built at load");
        let request = h
            .check("GET", "http://127.0.0.1:9/", Vec::new(), Vec::new(), true)
            .expect("allowed");
        let answer = h.perform(&request, Duration::from_secs(5)).await;
        assert!(
            matches!(&answer, Err(HttpError::Unreachable { message, .. }) if !message.contains("set up")),
            "{answer:?}"
        );
        assert!(h.client.get().is_some(), "built for the request");
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        let o = Origin::parse("https://Jira.Example.org").expect("an origin");
        assert_eq!(o.to_string(), "https://jira.example.org:443");
        assert!(Origin::parse("https://jira.example.org/rest").is_err());
        assert!(Origin::parse("https://u:p@jira.example.org").is_err());
        assert!(Origin::parse("ftp://jira.example.org").is_err());
    }

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        let h = http(
            r#"http = ["https://jira.example.org", "http://127.0.0.1:9"]
               [secrets.jira]
               value = "s3cr3t"
               origins = ["https://jira.example.org"]"#,
        );
        let check = |method: &str, url: &str, header: &str, read_only: bool| {
            h.check(
                method,
                url,
                vec![("Authorization".into(), header.into())],
                Vec::new(),
                read_only,
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert!(
            check(
                "get",
                "https://jira.example.org/x",
                "Bearer {secret:jira}",
                true
            )
            .is_ok()
        );
        let post = check("POST", "https://jira.example.org/x", "", true);
        assert!(post.is_err_and(|e| e.contains("http.fetch")));
        let other = check("GET", "https://evil.example.org/x", "", true);
        assert!(other.is_err_and(|e| e.contains("is not an origin this plugin may reach")));
        let loopback = check("GET", "http://127.0.0.1:9/", "", true);
        assert!(loopback.is_err_and(|e| e.contains("loopback")));
        let unbound = check("GET", "http://127.0.0.1:9/", "{secret:jira}", true);
        assert!(unbound.is_err());
        let missing = check("GET", "https://jira.example.org/", "{secret:nope}", true);
        assert!(missing.is_err_and(|e| e.contains("there is no secret \"nope\"")));
    }

    #[test]
    fn secrets_are_spliced_in_and_redacted_out() {
        let h = http(
            r#"http = ["https://jira.example.org"]
               [secrets.jira]
               value = "s3cr3t"
               origins = ["https://jira.example.org"]"#,
        );
        assert_eq!(h.splice("Bearer {secret:jira}"), "Bearer s3cr3t");
        assert_eq!(
            h.redact_bytes(b"you sent s3cr3t".to_vec()),
            b"you sent {secret:jira}".to_vec()
        );
        assert_eq!(h.redact("nothing"), "nothing");
    }
}
