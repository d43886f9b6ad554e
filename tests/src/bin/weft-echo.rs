//! # `weft-echo`: Weft's WebSocket connection loop with an echo handler, for conformance runs
//!
//! ```text
//! weft-echo [PORT]        # PORT 0 (the default) picks a free one
//! ```
//!
//! Serves `weft_server::serve_echo` on `127.0.0.1:PORT`: the production socket loop, limits and
//! upgrade settings (the defaults of `weft serve`, and its `WEFT_*` environment variables), with
//! every message echoed at `/`. Once listening it prints one line on stdout,
//! `listening on ws://127.0.0.1:PORT/`, for the caller to parse.
//!
//! It stops on SIGTERM or SIGINT, and when its stdin reaches end of file, so a test runner that
//! holds the other end of a pipe cannot leave it running when it dies. (Started with stdin at
//! `/dev/null`, it therefore exits at once.)

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;
use weft_server::{Cli, Shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .with_context(|| format!("PORT must be a number from 0 to 65535, not {arg:?}"))?,
        None => 0,
    };
    // The production defaults: no flags, so `weft serve`'s own values (and WEFT_* variables).
    let config = Cli::parse_from(["weft"]).into_config();
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("could not listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on ws://{addr}/")?;
    stdout.flush()?;

    let shutdown = Shutdown::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    // A plain thread, not tokio's stdin: that reads in the runtime's blocking pool, which the
    // runtime waits for when `main` returns, so a signal could not end the process while stdin
    // stays open. A detached thread does not hold the process up.
    let on_eof = shutdown.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        on_eof.trigger();
    });
    weft_server::serve_echo(listener, config, shutdown)
        .await
        .context("echo server failed")
}

/// Triggers shutdown on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: Shutdown) {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    shutdown.trigger();
}
