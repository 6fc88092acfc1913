//! The HTTP entry point: `/healthz` and `/readyz` for the machine's
//! supervisor, `/metrics` for Prometheus, and (in [`hooks`]) the webhooks
//! plugins declare.
//!
//! It serves the running [`Bot`]; nothing here changes state except a
//! webhook's own audited commit. Every request is bounded in time
//! (`web.request_timeout`), so a client that never finishes its request
//! holds nothing but its own connection.

mod health;
mod hooks;

pub use hooks::Hooks;

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};

use crate::bot::Bot;
use crate::config::WebConfig;

/// The listening socket, bound before the bot starts answering so a port
/// already taken is reported at start, not found out later.
pub async fn bind(config: &WebConfig) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(address) = config.address()? else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("listening on {address} (`web.listen`; \"off\" turns the web entry point off)")
        })?;
    Ok(Some(listener))
}

/// What the handlers share: the bot, and the webhooks it serves.
#[derive(Debug)]
pub struct Web {
    bot: Arc<Bot>,
    hooks: Hooks,
}

impl Web {
    /// The entry point over `bot`, with the webhooks of its config (their
    /// secrets read now: one that cannot be read stops the start).
    pub fn new(bot: Arc<Bot>) -> anyhow::Result<Self> {
        let hooks = Hooks::from_config(bot.config())?;
        Ok(Self { bot, hooks })
    }

    /// Every route.
    pub fn router(self) -> Router {
        let timeout = self.bot.config().web.request_timeout;
        Router::new()
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz))
            .route("/metrics", get(health::metrics))
            .route("/hooks/{plugin}/{name}", post(hooks::deliver))
            .layer(axum::middleware::from_fn(move |req, next| {
                within(timeout, req, next)
            }))
            .with_state(Arc::new(self))
    }

    /// Serves on `listener` until the returned future is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        let address = listener.local_addr().context("reading the web address")?;
        let hooks = self.hooks.by_route_names();
        tracing::info!(%address, "web entry point listening: /healthz, /readyz, /metrics{hooks}");
        axum::serve(listener, self.router())
            .await
            .context("serving the web entry point")
    }
}

/// Answers 408 when a request is not done within `timeout`, reading its
/// body included.
async fn within(
    timeout: std::time::Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} (`web.request_timeout`)\n",
                humantime::format_duration(timeout)
            ),
        )
            .into_response(),
    }
}
