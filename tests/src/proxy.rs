//! A TCP proxy the test owns, between the bot and PostgreSQL, so a test
//! can make the database unreachable (every connection dropped, new ones
//! refused) and bring it back, without touching the server other tests
//! use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, links) = (cut.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    if let Ok(mut all) = links.lock() {
                        all.retain(|l| !l.is_finished());
                        all.push(link.abort_handle());
                    }
                }
            }
        })
        .abort_handle();
        Ok(Self {
            addr,
            cut,
            links,
            accept,
        })
    }

    /// A proxy in front of the test PostgreSQL server (127.0.0.1:5432), and
    /// `url` (a database on it) rewritten to go through the proxy.
    pub async fn before_postgres(url: &str) -> anyhow::Result<(Self, String)> {
        const SERVER: &str = "127.0.0.1:5432";
        let proxy = Self::start(SERVER.parse()?).await?;
        let via = url.replace(SERVER, &proxy.addr());
        anyhow::ensure!(via != url, "the test database is not on {SERVER}: {url}");
        Ok((proxy, via))
    }

    /// `host:port` to connect to instead of the upstream.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The database goes away: open connections are dropped, new ones
    /// closed at once.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut all) = self.links.lock() {
            for link in all.drain(..) {
                link.abort();
            }
        }
    }

    /// The database is back.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
