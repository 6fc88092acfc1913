//! `http`: reading from allowed origins during a call, and requests to
//! send after the commit. Both are checked against the plugin's origins
//! and secrets here, so a refused request fails the call's own step with a
//! reason instead of failing later where nobody sees it.

use crate::http::Http;
use crate::runtime::bindings::ikkyu::plugin::http::{Host, Request, Response};
use crate::runtime::state::CallState;
use crate::store::NewSend;

/// Kept from a fetch's time so the plugin can still answer when it fails.
const ANSWER_TIME: std::time::Duration = std::time::Duration::from_millis(300);

impl CallState {
    fn http(&self) -> wasmtime::Result<std::sync::Arc<Http>> {
        self.require("http")?;
        self.grants.http.clone().ok_or_else(|| {
            wasmtime::format_err!("plugin {:?} has no HTTP origins configured", self.plugin)
        })
    }
}

impl Host for CallState {
    async fn fetch(&mut self, request: Request) -> wasmtime::Result<Result<Response, String>> {
        let http = self.http()?;
        self.charge(request_size(&request), "http.fetch")?;
        let checked = match http.check(
            &request.method,
            &request.url,
            request.headers,
            request.body,
            true,
        ) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        // What is left of the call, less a moment for the plugin to answer
        // with the error instead of being stopped by the call's limit.
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .saturating_sub(ANSWER_TIME);
        let started = std::time::Instant::now();
        let result = http.perform(&checked, left).await;
        let took = started.elapsed().as_millis();
        let line = match &result {
            Ok(r) => format!("{} → {} in {took} ms", checked.describe(), r.status),
            Err(e) => format!("{} → {e} after {took} ms", checked.describe()),
        };
        tracing::debug!(plugin = %self.plugin, "{line}");
        self.requests.push(line);
        match result {
            Ok(r) => {
                self.charge(
                    r.body.len()
                        + r.headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>(),
                    "http.fetch",
                )?;
                Ok(Ok(Response {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                }))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    async fn send(
        &mut self,
        request: Request,
        tag: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let http = self.http()?;
        self.count_effect()?;
        self.charge(request_size(&request) + tag.len(), "http.send")?;
        if tag.len() > 256 {
            return Ok(Err(format!("the tag is {} bytes; at most 256", tag.len())));
        }
        let checked = match http.check(
            &request.method,
            &request.url,
            request.headers,
            request.body,
            false,
        ) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        self.sends.push(NewSend {
            plugin: self.plugin.to_string(),
            tag,
            method: checked.method.to_string(),
            url: checked.url.to_string(),
            headers: checked.headers,
            body: checked.body,
        });
        Ok(Ok(()))
    }
}

fn request_size(r: &Request) -> usize {
    r.method.len()
        + r.url.len()
        + r.body.len()
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}
