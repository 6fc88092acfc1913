//! A small real HTTP/1.1 server on 127.0.0.1 for tests that stand in for a
//! web service ikkyu talks to (an issue tracker): it records every request
//! and answers with whatever the test's handler says, including slowly or
//! with garbage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path and query.
    pub target: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// `status` with a text body.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    /// A redirect to `location`.
    pub fn redirect(location: &str) -> Self {
        Self {
            headers: vec![("Location".into(), location.into())],
            ..Self::text(302, "")
        }
    }
}

type Handler = dyn Fn(&Received) -> Reply + Send + Sync;

/// A running server; stops when dropped.
pub struct FakeWeb {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeWeb {
    /// Starts a server answering with `handler`.
    pub async fn start(
        handler: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let origin = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, seen) = (handler.clone(), seen.clone());
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = serve(stream, &*handler, &seen).await;
                });
            }
        });
        Ok(Self {
            origin,
            received,
            task,
        })
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for FakeWeb {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    handler: &Handler,
    seen: &Mutex<Vec<Received>>,
) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let request = Received {
            method,
            target,
            headers,
            body,
        };
        if let Ok(mut all) = seen.lock() {
            all.push(request.clone());
        }
        let reply = handler(&request);
        tokio::time::sleep(reply.delay).await;
        let mut head = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        // One write: a head and a body in two small writes wait out the
        // client's delayed ACK (Nagle), ~40 ms a request that a real
        // server does not add.
        let mut out_bytes = head.into_bytes();
        out_bytes.extend_from_slice(&reply.body);
        let out = reader.get_mut();
        out.write_all(&out_bytes).await?;
        out.flush().await?;
    }
}
