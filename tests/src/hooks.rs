//! The bot's web entry point for tests: served on a free port of
//! 127.0.0.1, webhook deliveries signed the way GitHub signs them, and
//! `/metrics` scraped with a Prometheus text parser.

use std::sync::Arc;

use hmac::{Hmac, KeyInit as _, Mac as _};
use ikkyu::bot::Bot;

/// Serves `bot`'s web entry point on a free port: its base URL.
pub async fn serve(bot: Arc<Bot>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let web = ikkyu::web::Web::new(bot)?;
    tokio::spawn(web.serve(listener));
    Ok(base)
}

/// `X-Hub-Signature-256` of `body` under `secret`.
pub fn github_signature(secret: &str, body: &[u8]) -> anyhow::Result<String> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256={hex}"))
}

/// Delivers `body` as GitHub event `event` with id `delivery` to `url`,
/// signed with `secret` when given: the status and the body of the answer.
pub async fn github(
    url: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(secret) = secret {
        req = req.header("X-Hub-Signature-256", github_signature(secret, body)?);
    }
    let r = req.send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// One scrape of `/metrics` at `base`, parsed.
pub async fn scrape(base: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    let r = reqwest::get(format!("{base}/metrics")).await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}: {text}");
    Ok(prometheus_parse::Scrape::parse(
        text.lines().map(|l| Ok(l.to_owned())),
    )?)
}

/// The sum of the samples `name` whose labels include `labels`; 0 when
/// there are none (a counter never incremented has no series yet).
pub fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}
