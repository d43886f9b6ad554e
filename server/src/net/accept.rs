//! Where TCP connections are accepted and handed to hyper: the accept loop, with the limits
//! plain HTTP needs and `axum::serve` does not give.
//!
//! - **A cap on open HTTP connections** (`--max-http-connections`): each accepted connection holds
//!   a permit until hyper is done with it (an upgraded WebSocket hands its socket over and is then
//!   counted by the WebSocket caps instead). At the cap the loop stops accepting, so the kernel's
//!   backlog pushes back rather than the server growing without bound.
//! - **A deadline for a request's headers** ([`HEADER_READ_TIMEOUT`]): hyper drops a connection
//!   whose headers trickle in, so a client sending one byte a second holds nothing for long.
//! - **A deadline for shutdown**: on shutdown every connection is asked to finish its current
//!   request; what is still open after [`SHUTDOWN_GRACE`] is dropped, so a slow client cannot
//!   delay the exit.
//! - **Metered reads** (`net::metered`): every stream counts what a WebSocket has read but not
//!   yet received as a whole message, against a per-address share and a server-wide cap.
//! - TCP_NODELAY on every socket: without it, small frames meet Nagle plus delayed ACKs (~40 ms
//!   tails).
//!
//! The body of a request has its own deadline, a layer on the router (`--http-timeout-secs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::net::metered::{Metered, ReadBudget, ReadMeter};
use crate::shutdown::Shutdown;

/// How long a client has to send a request's headers once it has started (or, on a kept-alive
/// connection, once the previous response went out). Browsers and proxies send them at once.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connections get, once shutdown starts, to finish what they are doing.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// After a failed `accept` (out of file descriptors, say), how long to wait before the next one,
/// so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` is triggered, with at most `max_connections`
/// HTTP connections open at once; then lets open connections finish for up to
/// [`SHUTDOWN_GRACE`] and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    budget: Arc<ReadBudget>,
    shutdown: &Shutdown,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.triggered() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.triggered() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    warn!(error = %e, "could not set TCP_NODELAY");
                }
                let meter = ReadMeter::new(budget.clone());
                let tcp = Metered::new(tcp, meter.clone());
                let conn =
                    serve_connection(tcp, peer, meter, app.clone(), permit, shutdown.clone());
                connections.spawn(conn);
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        info!(
            open = connections.len(),
            "HTTP connections still open after the shutdown grace; dropping them"
        );
    }
}

/// Serves one HTTP/1 connection (with upgrades, for WebSockets), the client's
/// address available to handlers as `ConnectInfo`, finished early when shutdown starts.
async fn serve_connection(
    tcp: Metered<TcpStream>,
    peer: SocketAddr,
    meter: Arc<ReadMeter>,
    app: Router,
    permit: OwnedSemaphorePermit,
    shutdown: Shutdown,
) {
    let service = app.map_request(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        // The WebSocket upgrade activates it: from then on what is read is metered.
        req.extensions_mut().insert(meter.clone());
        req.map(axum::body::Body::new)
    });
    let service = TowerToHyperService::new(service);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.triggered() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
    drop(permit);
}
