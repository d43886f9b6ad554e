//! The command line, shared by the `weft` binary and its fault-injection twin: parse flags,
//! install logging, open the store, bind, serve until a signal; or, with `weft token`, print a
//! signed access token; or run `weft backup` / `weft restore` (in [`crate::backup`]) or `weft
//! migrate` (in [`crate::migrate`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::{BackupArgs, Cli, Config, MigrateArgs, RestoreArgs, Subcommand, TokenArgs};
use crate::shutdown::Shutdown;
use crate::token::AuthSecret;
use crate::token::{mint, unix_now, Claims, Scope};
use crate::Server;
use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Runs the server or a subcommand: the whole of `weft`'s (and `weft-fault-injection`'s) `main`.
///
/// # Errors
/// Whatever stopped the server or the subcommand, with its context, for the binary to print.
pub fn run() -> anyhow::Result<()> {
    crate::arenas::cap_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let result = runtime.block_on(main());
    // Dropping a runtime waits for every blocking task without limit; one stuck in a failed
    // store must not keep the process from exiting (with the error, non-zero).
    runtime.shutdown_timeout(EXIT_GRACE);
    result
}

/// How long the exit waits for blocking tasks still running after the server stopped.
const EXIT_GRACE: Duration = Duration::from_secs(2);

async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if let Some(Subcommand::Token(args)) = &cli.command {
        let secret = cli.serve.auth_secret.as_ref().context(
            "weft token needs the server's secret: set WEFT_AUTH_SECRET or pass --auth-secret",
        )?;
        println!("{}", token(args, secret)?);
        return Ok(());
    }
    match cli.command {
        Some(Subcommand::Backup(args)) => return backup(&args, &cli.serve).await,
        Some(Subcommand::Restore(args)) => return restore(args, &cli.serve).await,
        Some(Subcommand::Migrate(args)) => return migrate(args, &cli.serve).await,
        _ => {}
    }
    let config = cli.into_config();
    config.check_exposure()?;
    if config.is_open() {
        tracing::warn!(
            "OPEN MODE: no --auth-secret is set, so anyone who can reach {} can read, edit and \
             delete every document. Set WEFT_AUTH_SECRET and hand out `weft token` tokens",
            config.bind
        );
    }
    let bind = config.bind;
    let data = config.data.clone();
    let server = Server::open(config).map_err(|e| match e {
        // The store's messages name the directory and include their cause: printed as one
        // line, not followed by the same cause again as a "Caused by" chain.
        crate::ServerError::Store(store) => anyhow::anyhow!("{store}"),
        crate::ServerError::Cluster(cluster) => anyhow::anyhow!("{cluster}"),
        other => anyhow::Error::new(other).context(format!(
            "could not open the data directory {}",
            data.display()
        )),
    })?;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("could not listen on {bind}"))?;
    let local = listener.local_addr()?;
    if local.ip().is_unspecified() {
        tracing::info!("listening on every interface, port {}", local.port());
    }
    tracing::info!(
        "Weft is running: open {} (Ctrl-C to stop)",
        browser_url(local)
    );
    let shutdown = Shutdown::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    server
        .serve(listener, shutdown)
        .await
        .context("server failed")?;
    Ok(())
}

/// An address a browser on this machine can open for `addr`: a wildcard bind (`0.0.0.0`, `::`)
/// is not an address to visit, so it becomes loopback of the same family.
fn browser_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Mints the token `weft token` prints.
///
/// # Errors
/// When `--ttl` is under a second (the token would be expired when printed) or too long.
fn token(args: &TokenArgs, secret: &AuthSecret) -> anyhow::Result<String> {
    // Expiry is in whole seconds: anything shorter mints a token that is already expired.
    anyhow::ensure!(
        args.ttl.as_secs() > 0,
        "--ttl {} would make a token that has already expired: give a lifetime of at least 1s, \
         for example 30m, 8h or 7d",
        humantime::format_duration(args.ttl)
    );
    let scope = match &args.doc {
        Some(doc) => Scope::Doc(doc.clone()),
        None => Scope::AllDocs,
    };
    let exp = unix_now()
        .checked_add(args.ttl.as_secs())
        .context("--ttl is too long")?;
    let claims = Claims {
        scope,
        role: args.role,
        exp,
        sub: args.sub.clone(),
    };
    Ok(mint(secret, &claims))
}

/// `weft backup`: prints what it saved, and fails if any listed document could not be read.
async fn backup(args: &BackupArgs, config: &Config) -> anyhow::Result<()> {
    let info = crate::backup::backup(args, config.auth_secret.as_ref()).await?;
    println!(
        "backed up {} documents, {} bytes, to {}",
        info.documents,
        info.bytes,
        args.to.display()
    );
    for s in info.skipped.iter().filter(|s| !s.failed) {
        println!("  not included: {:?} ({})", s.id, s.reason);
    }
    let failed: Vec<String> = info
        .failed()
        .map(|s| format!("{:?}: {}", s.id, s.reason))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "{} documents could not be read and are missing from the backup: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// `weft restore`: copies a backup into the (stopped) server's data directory.
async fn restore(args: RestoreArgs, config: &Config) -> anyhow::Result<()> {
    let data = config.data.clone();
    let (from, into) = (args.from.clone(), data.clone());
    let done = tokio::task::spawn_blocking(move || crate::backup::restore(&args, &data))
        .await
        .context("the restore task failed")??;
    println!(
        "restored {} documents ({} replaced), {} bytes, from {} into {}",
        done.documents,
        done.replaced,
        done.bytes,
        from.display(),
        into.display()
    );
    let failed = done.info.failed().count();
    if failed > 0 {
        println!("note: {failed} documents could not be read when this backup was taken");
    }
    Ok(())
}

/// `weft migrate`: prints what moved; fails if a document was skipped or reads back differently.
async fn migrate(args: MigrateArgs, config: &Config) -> anyhow::Result<()> {
    let (nats, deadline) = (config.nats.clone(), config.flush_deadline());
    let report =
        tokio::task::spawn_blocking(move || crate::migrate::migrate(&args, &nats, deadline))
            .await
            .context("the migration task failed")??;
    print!("{report}");
    match report.problems() {
        Some(problems) => anyhow::bail!("{problems}"),
        None => Ok(()),
    }
}

/// Triggers graceful shutdown on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: Shutdown) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.trigger();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Access;

    /// A wildcard bind is logged as a loopback address a browser can open.
    #[test]
    fn startup_url_is_usable() {
        let url = |s: &str| browser_url(s.parse().expect("an address"));
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080");
        assert_eq!(url("192.0.2.7:80"), "http://192.0.2.7:80");
        assert_eq!(url("127.0.0.1:9000"), "http://127.0.0.1:9000");
    }

    /// `--ttl 0s` is refused with an explanation instead of printing an expired token.
    #[test]
    fn zero_ttl_is_refused() {
        let secret = AuthSecret::new(b"0123456789abcdef0123456789abcdef").expect("a valid secret");
        let args = |ttl| TokenArgs {
            doc: Some("notes".into()),
            all_docs: false,
            role: Access::Write,
            ttl,
            sub: None,
        };
        let err = token(&args(Duration::ZERO), &secret).expect_err("0s must be refused");
        assert!(err.to_string().contains("already expired"), "{err}");
        let err = token(&args(Duration::from_millis(500)), &secret).expect_err("0.5s too");
        assert!(err.to_string().contains("at least 1s"), "{err}");
        assert!(token(&args(Duration::from_secs(60)), &secret).is_ok());
    }
}
