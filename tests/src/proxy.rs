//! A loopback TCP proxy that can refuse WebSocket upgrades, as a locked-down corporate proxy
//! does. Plain HTTP passes through untouched; while blocking, an upgrade request gets `403` and
//! open WebSocket tunnels are cut. Tests put it in front of a real server to watch pages fall
//! back to polling and come back to push.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// Largest request head the proxy reads before deciding; browsers send a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;

/// What the accept loop and the tunnels share.
#[derive(Default)]
struct Shared {
    blocked: AtomicBool,
    /// Tunnels that carry an upgraded WebSocket, so blocking can cut them.
    sockets: Mutex<Vec<AbortHandle>>,
}

/// A proxy in front of one upstream server, on its own loopback port.
pub struct UpgradeBlocker {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl UpgradeBlocker {
    /// Starts forwarding a fresh loopback port to `upstream` (not blocking yet).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses WebSocket upgrades from now on and cuts the WebSockets already open.
    pub fn block(&self) {
        self.shared.blocked.store(true, Ordering::SeqCst);
        let open = std::mem::take(&mut *lock(&self.shared.sockets));
        for tunnel in open {
            tunnel.abort();
        }
    }

    /// Lets WebSocket upgrades through again.
    pub fn unblock(&self) {
        self.shared.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for UpgradeBlocker {
    fn drop(&mut self) {
        self.accept.abort();
        self.block();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(client, upstream, shared).await {
                eprintln!("upgrade blocker: {e:#}");
            }
        });
    }
}

/// Reads the request head, then refuses it or tunnels the connection to `upstream`.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        anyhow::ensure!(head.len() <= MAX_HEAD, "request head over {MAX_HEAD} bytes");
    }
    let upgrade = String::from_utf8_lossy(&head)
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "upgrade:websocket");
    if upgrade && shared.blocked.load(Ordering::SeqCst) {
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let mut server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connecting to {upstream}"))?;
    server.set_nodelay(true)?;
    server.write_all(&head).await?;
    let tunnel = tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    if upgrade {
        lock(&shared.sockets).push(tunnel.abort_handle());
    }
    // An aborted tunnel is the point of blocking, not an error.
    let _ = tunnel.await;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
