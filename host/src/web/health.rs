//! `/healthz`, `/readyz` and `/metrics`: what a supervisor and Prometheus
//! ask. Each reads the database with a short bound of its own, so an
//! unreachable database turns into a 503 that says so, not a hang.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::bot::Bot;
use crate::chat::LinkState;

/// How long a probe waits for the database before calling it down.
const DATABASE_PROBE: Duration = Duration::from_secs(2);

/// Whether the database answers now, and if not, why.
async fn database(bot: &Bot) -> Result<(), String> {
    match tokio::time::timeout(DATABASE_PROBE, bot.db.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(crate::text::one_line(&e.to_string())),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(DATABASE_PROBE)
        )),
    }
}

/// 200 only when the database answers and the chat adapter is connected;
/// the body has a line for each, saying which is down and why.
pub(super) async fn healthz(State(web): State<Arc<super::Web>>) -> Response {
    let bot = &web.bot;
    let db = database(bot).await;
    let chat = bot.link().state();
    let mut body = String::new();
    match &db {
        Ok(()) => body.push_str("database: up\n"),
        Err(why) => body.push_str(&format!("database: down ({why})\n")),
    }
    match &chat {
        LinkState::Up => body.push_str("chat: connected\n"),
        LinkState::Starting => body.push_str("chat: down (not connected yet)\n"),
        LinkState::Down(why) => body.push_str(&format!("chat: down ({why})\n")),
    }
    let status = if db.is_ok() && chat == LinkState::Up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

/// 200 once start-up is done (plugins loaded, the chat adapter connected
/// at least once) while the database answers: when webhooks and commands
/// can be taken. A chat network that drops later makes `/healthz` fail,
/// not this.
pub(super) async fn readyz(State(web): State<Arc<super::Web>>) -> Response {
    let bot = &web.bot;
    if !bot.link().started() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the chat adapter has not connected yet\n",
        )
            .into_response();
    }
    match database(bot).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the database is down ({why})\n"),
        )
            .into_response(),
    }
}

/// The Prometheus text; the database's gauges are left at their last
/// values, and `ikkyu_database_up` is 0, when it does not answer.
pub(super) async fn metrics(State(web): State<Arc<super::Web>>) -> Response {
    let bot = &web.bot;
    let backlog = match tokio::time::timeout(DATABASE_PROBE, bot.db.backlog()).await {
        Ok(Ok(b)) => Some(b),
        Ok(Err(e)) => {
            tracing::warn!("reading the backlog for /metrics: {e}");
            None
        }
        Err(_) => None,
    };
    match bot.metrics().render(backlog.as_ref()) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!("{e}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}
