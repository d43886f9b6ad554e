//! Configuration: command-line flags with environment-variable equivalents and safe defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, ValueEnum};
use ipnet::IpNet;
use weft_protocol::Limits;

use crate::token::{Access, AuthSecret};

mod migrate;
mod nats;
pub use migrate::MigrateArgs;
pub use nats::NatsArgs;

/// `weft`: a self-hosted collaborative text editor server speaking the y-websocket protocol.
///
/// Every option of the server is global: `weft --auth-secret S serve` and
/// `weft serve --auth-secret S` mean the same, and so does `weft --auth-secret S` alone.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about = None)]
pub struct Cli {
    /// What to do; with none, `serve`.
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// The server's options, accepted before or after the subcommand.
    #[command(flatten)]
    pub serve: Config,
}

/// The subcommands of `weft`.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Run the server (the default).
    Serve,
    /// Print a signed access token (a bare token string) for the server started with the same
    /// `--auth-secret` (or `WEFT_AUTH_SECRET`).
    Token(TokenArgs),
    /// Back up every document of a running server into a new data directory.
    ///
    /// Downloads `GET /api/backup` from the server at `--url` while it keeps serving, and writes
    /// the documents into DIR (`--to`) as a normal weft data directory, plus a `weft-backup.json`
    /// that marks it complete. Each document is copied as it was when the backup reached it,
    /// with every edit acknowledged before the backup began. DIR must not hold documents yet.
    /// With an auth secret on the server, pass an admin token for every document (`weft token
    /// --all-docs --role admin`) as `--token` or `WEFT_TOKEN`; without one, a token is minted
    /// from `--auth-secret` (`WEFT_AUTH_SECRET`) when that is set. See docs/backup.md.
    Backup(BackupArgs),
    /// Copy the documents of a backup into the data directory; the server must be stopped.
    ///
    /// Copies every document of the backup in DIR (`--from`, made by `weft backup`) into the
    /// data directory (`--data`, `WEFT_DATA`, default ./data), with its title and times. The
    /// data directory must not be in use: stop the server first. A document that already exists
    /// there is only replaced with `--overwrite`; without it, nothing is restored. See
    /// docs/backup.md.
    Restore(RestoreArgs),
    /// Copy every document between a data directory and a cluster's NATS, either way.
    #[command(long_about = migrate::LONG_ABOUT)]
    Migrate(MigrateArgs),
}

/// Flags of `weft backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The directory to write the backup to: absent, empty, or a data directory without
    /// documents.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// The running server's address.
    #[arg(long, env = "WEFT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin token for every document, when the server has an auth secret.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Flags of `weft restore`; the data directory restored into is the global `--data`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup to restore: a directory written by `weft backup`.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Replace documents that already exist in the data directory with their backed-up copy.
    #[arg(long)]
    pub overwrite: bool,
}

/// Flags of `weft token`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["doc", "all_docs"])))]
pub struct TokenArgs {
    /// The document the token is for.
    #[arg(long)]
    pub doc: Option<String>,
    /// Make the token valid for every document (needed to list and create documents).
    #[arg(long)]
    pub all_docs: bool,
    /// `read` (view only), `write` (edit) or `admin` (also delete documents and send notices).
    #[arg(long, default_value = "read")]
    pub role: Access,
    /// How long the token is valid, for example `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The user the token is issued to: `POST /api/docs/{id}/notices` can address one user.
    #[arg(long)]
    pub sub: Option<String>,
}

/// A configuration that must not run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Open mode (no secret) on an address other machines can reach.
    #[error(
        "refusing to listen on {0} without an auth secret: anyone who reaches it could read, \
         edit and delete every document. Set --auth-secret (WEFT_AUTH_SECRET), bind a loopback \
         address, or pass --allow-open if this network is trusted"
    )]
    OpenOnNetwork(SocketAddr),
    /// Webhook URLs without the secret that signs what is sent to them.
    #[error("--webhook-url needs --webhook-secret (WEFT_WEBHOOK_SECRET): a `whsec_` secret the receivers verify signatures with")]
    WebhookWithoutSecret,
}

impl Cli {
    /// The server configuration, whether its options came before or after the subcommand.
    pub fn into_config(self) -> Config {
        self.serve
    }
}

/// When an edit is acknowledged relative to when it is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Flush to disk before broadcasting: whatever any client has seen survives a crash.
    Strict,
    /// Broadcast at once, flush within `--relaxed-flush-ms`: a crash loses at most that window.
    Relaxed,
}

/// Everything the server needs to run. Every field has a flag and an environment variable.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on. Loopback by default: put a TLS proxy in front to serve others.
    #[arg(
        long,
        global = true,
        env = "WEFT_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub bind: SocketAddr,

    /// Directory of the sled database that holds every document; created if absent.
    #[arg(long, global = true, env = "WEFT_DATA", default_value = "./data")]
    pub data: PathBuf,

    /// `strict` (default) makes every broadcast edit durable first; `relaxed` broadcasts at once.
    #[arg(long, global = true, env = "WEFT_DURABILITY", value_enum, default_value_t = Durability::Strict)]
    pub durability: Durability,

    /// In relaxed mode, the longest an acknowledged edit waits before it is flushed, in ms.
    #[arg(
        long,
        global = true,
        env = "WEFT_RELAXED_FLUSH_MS",
        default_value_t = 50
    )]
    pub relaxed_flush_ms: u64,

    /// Seconds a flush may take before the store gives up on it: the store then fails (it
    /// refuses writes, `/readyz` answers 503, the server exits non-zero on shutdown) instead of
    /// leaving every writer waiting on a stalled disk.
    #[arg(
        long,
        global = true,
        env = "WEFT_FLUSH_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub flush_timeout_secs: u64,

    /// Largest WebSocket message accepted, in bytes; larger ones close the socket with 1009.
    #[arg(long, global = true, env = "WEFT_MAX_MESSAGE", default_value_t = Limits::DEFAULT.max_message)]
    pub max_message: usize,

    /// Largest awareness (cursor/presence) state of one client, in bytes.
    #[arg(long, global = true, env = "WEFT_MAX_AWARENESS_STATE", default_value_t = Limits::DEFAULT.max_awareness_state)]
    pub max_awareness_state: usize,

    /// Longest room (document) name, in UTF-8 bytes.
    #[arg(long, global = true, env = "WEFT_MAX_ROOM_NAME", default_value_t = Limits::DEFAULT.max_room_name)]
    pub max_room_name: usize,

    /// Most y-websocket messages packed into one WebSocket frame; stock clients send one.
    #[arg(long, global = true, env = "WEFT_MAX_FRAME_MESSAGES", default_value_t = Limits::DEFAULT.max_frame_messages)]
    pub max_frame_messages: usize,

    /// Most WebSocket connections open at once; further upgrades get HTTP 503.
    #[arg(
        long,
        global = true,
        env = "WEFT_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// Most plain HTTP connections open at once (API, pages, WebSocket handshakes in progress);
    /// at the cap the server stops accepting until one closes. Upgraded WebSockets count
    /// against --max-connections instead.
    #[arg(
        long,
        global = true,
        env = "WEFT_MAX_HTTP_CONNECTIONS",
        default_value_t = 2048
    )]
    pub max_http_connections: usize,

    /// Seconds an HTTP request may take, body included, before it is answered 408; a request's
    /// headers must arrive within 10 s. Bounds what a slow client can hold.
    #[arg(
        long,
        global = true,
        env = "WEFT_HTTP_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub http_timeout_secs: u64,

    /// Bytes of unfinished WebSocket messages (frames still arriving) the server holds for all
    /// clients together; past it, connections holding more than 64 KiB of one stop being read
    /// until others finish (at least --max-message). One client address may hold at most
    /// --max-message.
    #[arg(
        long,
        global = true,
        env = "WEFT_MAX_UNFINISHED_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub max_unfinished_bytes: usize,

    /// Most WebSocket connections open at once from one IP address; further upgrades get
    /// HTTP 429. Raise it when many users share one address (an office NAT); behind a reverse
    /// proxy, set --trusted-proxy so each user counts on their own.
    #[arg(
        long,
        global = true,
        env = "WEFT_MAX_CONNECTIONS_PER_IP",
        default_value_t = 256
    )]
    pub max_connections_per_ip: usize,

    /// Most connections in one room; further joins are closed with 1013 (try again later).
    #[arg(
        long,
        global = true,
        env = "WEFT_MAX_ROOM_CONNECTIONS",
        default_value_t = 500
    )]
    pub max_room_connections: usize,

    /// Frames queued for one connection before it counts as too slow and is closed with 1013.
    #[arg(long, global = true, env = "WEFT_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

    /// Bytes queued for one connection before it counts as too slow and is closed with 1013
    /// (at least --max-message, so one maximal message always fits). Bounds the memory a
    /// member that stopped reading can hold.
    #[arg(long, global = true, env = "WEFT_SEND_QUEUE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// Frames a connection may send per second, on average; bursts of twice that are fine.
    /// A connection over it is read no faster than the rate allows; one that stays over it for
    /// 5 s is closed with 1008 (policy violation).
    #[arg(
        long,
        global = true,
        env = "WEFT_MAX_FRAMES_PER_SEC",
        default_value_t = 1000
    )]
    pub max_frames_per_sec: u32,

    /// Bytes a connection may send per second, on average; a burst may reach the larger of
    /// `--max-message` and twice this. The same budget applies to each client address over all
    /// its connections, so reconnecting does not refill it. Over it, reading slows down; 5 s
    /// over it closes with 1008.
    #[arg(long, global = true, env = "WEFT_MAX_BYTES_PER_SEC", default_value_t = 8 * 1024 * 1024)]
    pub max_bytes_per_sec: u32,

    /// Seconds a new connection has to send sync step 1 before it is closed with 1008; stock
    /// clients send it at once, so a silent socket is only holding a slot.
    #[arg(long, global = true, env = "WEFT_HANDSHAKE_SECS", default_value_t = 15)]
    pub handshake_secs: u64,

    /// Largest stored size of one document (snapshot plus update log), in bytes. Past it, writes
    /// are refused and the writer is told; reading and awareness keep working. The default
    /// equals --max-message: a client holding the whole document must be able to send it back
    /// in one sync step 2 after a reconnect.
    #[arg(long, global = true, env = "WEFT_MAX_DOC_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_doc_bytes: u64,

    /// Seconds between WebSocket pings; a connection that has not answered the previous ping by
    /// the next one is terminated.
    #[arg(long, global = true, env = "WEFT_PING_SECS", default_value_t = 30)]
    pub ping_secs: u64,

    /// Seconds a document stays loaded with nobody connected before it is compacted and unloaded.
    #[arg(
        long,
        global = true,
        env = "WEFT_IDLE_UNLOAD_SECS",
        default_value_t = 30
    )]
    pub idle_unload_secs: u64,

    /// Seconds after the last edit of a burst before the server records a version of the
    /// document in its history (see `GET /api/docs/{id}/versions`).
    #[arg(
        long,
        global = true,
        env = "WEFT_VERSION_IDLE_SECS",
        default_value_t = 30
    )]
    pub version_idle_secs: u64,

    /// While editing goes on without a pause, a version is recorded at least this often
    /// (seconds).
    #[arg(
        long,
        global = true,
        env = "WEFT_VERSION_EVERY_SECS",
        default_value_t = 300
    )]
    pub version_every_secs: u64,

    /// Days every version of a document is kept. Older unnamed versions are thinned: for the
    /// next 7 days to the last version of each hour (UTC), after that to the last of each day
    /// (UTC). Named versions and each document's newest version are never thinned; deleting a
    /// document deletes its history.
    #[arg(
        long,
        global = true,
        env = "WEFT_HISTORY_KEEP_DAYS",
        default_value_t = 30
    )]
    pub history_keep_days: u64,

    /// Updates in a document's log that trigger compaction into its snapshot (once the log
    /// also holds at least as many bytes as the snapshot, so big documents are not rewritten
    /// for every few hundred keystrokes).
    #[arg(long, global = true, env = "WEFT_COMPACT_EVERY", default_value_t = 500)]
    pub compact_every: u64,

    /// Secret (at least 16 bytes; 32 random bytes recommended) that signs access tokens. With
    /// it, every WebSocket and API request needs a token (`weft token`); without it the server
    /// is open to anyone who can reach it.
    #[arg(long, global = true, env = "WEFT_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<AuthSecret>,

    /// Allow open mode (no `--auth-secret`) on a non-loopback address. Only for trusted networks.
    #[arg(long, global = true, env = "WEFT_ALLOW_OPEN")]
    pub allow_open: bool,

    /// Origins (`https://app.example.com`) whose pages may open WebSockets and send API writes
    /// here, besides the server's own origin; repeat the flag or separate with commas; `*`
    /// allows any. Stops other sites from using a visitor's access (cross-site WebSocket
    /// hijacking, cross-site POSTs).
    #[arg(
        global = true,
        long = "allowed-origin",
        env = "WEFT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Host names this server answers to in open mode (no --auth-secret), besides `localhost`,
    /// `127.0.0.1`, `[::1]` and the --bind address (any port); repeat the flag or separate with
    /// commas; `*` allows any. Requests for other names get 421: a web page that rebinds its own
    /// DNS name to this address cannot reach an open server.
    #[arg(
        global = true,
        long = "allowed-host",
        env = "WEFT_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// Address ranges (`10.0.0.0/8`, `127.0.0.1`) of reverse proxies whose `X-Forwarded-For`
    /// (or, without it, `Forwarded`) header names the client; repeat the flag or separate with
    /// commas. Without it the per-address limits and the logs see the proxy's address.
    #[arg(
        global = true,
        long = "trusted-proxy",
        env = "WEFT_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_cidr
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// WebSocket connections one client address may open per second, on average, with bursts
    /// of twice that (tabs reconnecting after a restart); further attempts get HTTP 429 until
    /// the rate allows. 0 turns the limit off.
    #[arg(
        long,
        global = true,
        env = "WEFT_MAX_CONNECTS_PER_SEC",
        default_value_t = 20
    )]
    pub max_connects_per_sec: u32,

    /// Milliseconds the change feed gathers a document's edits into one `document.updated`
    /// event (the first edit opens the window). Lower means fresher events, more of them.
    #[arg(
        long,
        global = true,
        env = "WEFT_FEED_DEBOUNCE_MS",
        default_value_t = 250
    )]
    pub feed_debounce_ms: u64,

    /// Days the change feed keeps its events (fractions allowed: 0.5 is twelve hours). A
    /// `since` older than that is answered 410 with the oldest seq kept.
    #[arg(long, global = true, env = "WEFT_FEED_KEEP_DAYS", default_value_t = 7.0,
          value_parser = parse_non_negative)]
    pub feed_keep_days: f64,

    /// Days a deleted document stays in the trash (restorable with its history) before it is
    /// purged for good (fractions allowed; 0 purges within a minute).
    #[arg(long, global = true, env = "WEFT_TRASH_KEEP_DAYS", default_value_t = 30.0,
          value_parser = parse_non_negative)]
    pub trash_keep_days: f64,

    /// URL every change-feed event is POSTed to (Standard Webhooks); repeat the flag, or
    /// separate URLs with commas in WEFT_WEBHOOK_URLS. `https://` receivers are verified
    /// against the Mozilla root certificates built in (plus --webhook-ca-file).
    #[arg(long = "webhook-url", global = true, env = "WEFT_WEBHOOK_URLS",
          value_delimiter = ',', value_parser = parse_webhook_url)]
    pub webhook_urls: Vec<String>,

    /// The secret webhooks are signed with, as the Standard Webhooks specification defines it:
    /// `whsec_` followed by base64 of at least 24 random bytes. Needed with --webhook-url.
    #[arg(long, global = true, env = "WEFT_WEBHOOK_SECRET", hide_env_values = true,
          value_parser = parse_webhook_secret)]
    pub webhook_secret: Option<WebhookSecret>,

    /// Only these event types are sent to webhooks (e.g. `document.updated`); repeat or
    /// separate with commas. All when absent.
    #[arg(long, global = true, env = "WEFT_WEBHOOK_EVENTS", value_delimiter = ',',
          value_parser = clap::builder::PossibleValuesParser::new(EVENT_TYPES))]
    pub webhook_events: Vec<String>,

    /// Milliseconds a webhook receiver has to answer before the delivery counts as failed and
    /// is retried.
    #[arg(
        long,
        global = true,
        env = "WEFT_WEBHOOK_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub webhook_timeout_ms: u64,

    /// A PEM file of certificate authorities to trust for `https://` webhook receivers besides
    /// the built-in Mozilla roots (a private CA, a self-signed receiver's own certificate).
    #[arg(long, global = true, env = "WEFT_WEBHOOK_CA_FILE", value_name = "PEM")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Hours an undeliverable webhook event is retried (backoff from 1 s doubling to 1 h, with
    /// jitter) before it is recorded as failed and the endpoint moves on.
    #[arg(long, global = true, env = "WEFT_WEBHOOK_RETRY_HOURS", default_value_t = 24.0,
          value_parser = parse_non_negative)]
    pub webhook_retry_hours: f64,

    /// The first webhook retry delay in milliseconds (it doubles up to an hour). Hidden: only
    /// the tests shorten it, so they can watch a retry schedule without waiting seconds.
    #[arg(
        long,
        global = true,
        env = "WEFT_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 1000,
        hide = true
    )]
    pub webhook_retry_base_ms: u64,

    /// Cluster mode: the NATS JetStream servers that hold the documents.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Every change-feed event type (`--webhook-events` accepts these).
pub const EVENT_TYPES: [&str; 5] = [
    "document.created",
    "document.updated",
    "document.deleted",
    "document.restored",
    "version.created",
];

/// A webhook signing key (the bytes of a `whsec_` secret); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(pub Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// Parses a `whsec_<base64>` secret (the prefix is optional, as Standard Webhooks libraries
/// accept it); at least 24 bytes.
fn parse_webhook_secret(s: &str) -> Result<WebhookSecret, String> {
    use base64::Engine as _;
    let b64 = s.trim().strip_prefix("whsec_").unwrap_or(s.trim());
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("not `whsec_` followed by base64: {e}"))?;
    if key.len() < 24 {
        return Err(format!(
            "the secret is {} bytes; at least 24 random bytes are needed",
            key.len()
        ));
    }
    Ok(WebhookSecret(key))
}

/// Checks a webhook URL: absolute, `http`.
fn parse_webhook_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let url = reqwest::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url.to_string()),
        other => Err(format!(
            "`{s}`: scheme `{other}` is not supported (http or https)"
        )),
    }
}

/// Parses a non-negative, finite number (days or hours).
fn parse_non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a non-negative number")),
    }
}

/// Parses a CIDR range, or a single address as the range holding only it.
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("`{s}` is neither an address nor a CIDR range (10.0.0.0/8)"))
}

impl Config {
    /// A configuration with every default, the data directory at `data` and an ephemeral port:
    /// what tests start from.
    pub fn for_tests(data: PathBuf) -> Self {
        let mut config = Cli::parse_from(["weft"]).into_config();
        config.data = data;
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    /// The decoding limits this configuration implies.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message: self.max_message,
            max_awareness_state: self.max_awareness_state,
            max_room_name: self.max_room_name,
            max_frame_messages: self.max_frame_messages,
        }
    }

    /// How long a new connection may take to send sync step 1.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_secs.max(1))
    }

    /// Interval between pings.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_secs.max(1))
    }

    /// The longest a flush may take before the store fails (at least one second).
    pub fn flush_deadline(&self) -> Duration {
        Duration::from_secs(self.flush_timeout_secs.max(1))
    }

    /// How long an empty room stays loaded.
    pub fn idle_unload(&self) -> Duration {
        Duration::from_secs(self.idle_unload_secs)
    }

    /// How long a deleted document stays in the trash.
    pub fn trash_keep(&self) -> Duration {
        Duration::from_secs_f64((self.trash_keep_days * 86_400.0).min(1e12))
    }

    /// How long the change feed keeps events.
    pub fn feed_keep(&self) -> Duration {
        Duration::from_secs_f64((self.feed_keep_days * 86_400.0).min(1e12))
    }

    /// How long an undeliverable webhook event is retried.
    pub fn webhook_retry(&self) -> Duration {
        Duration::from_secs_f64((self.webhook_retry_hours * 3600.0).min(1e12))
    }

    /// Whether no secret is configured: every request is allowed.
    pub fn is_open(&self) -> bool {
        self.auth_secret.is_none()
    }

    /// Refuses open mode on a non-loopback address unless `--allow-open` was given.
    ///
    /// # Errors
    /// [`ConfigError::OpenOnNetwork`].
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.is_open() && !self.bind.ip().is_loopback() && !self.allow_open {
            return Err(ConfigError::OpenOnNetwork(self.bind));
        }
        if !self.webhook_urls.is_empty() && self.webhook_secret.is_none() {
            return Err(ConfigError::WebhookWithoutSecret);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The clap definition is consistent and the defaults are the documented safe ones.
    #[test]
    fn defaults_are_safe() {
        Cli::command().debug_assert();
        let c = Cli::parse_from(["weft"]).into_config();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data, PathBuf::from("./data"));
        assert_eq!(c.durability, Durability::Strict);
        assert_eq!(c.flush_deadline(), Duration::from_secs(10));
    }

    /// Open mode is refused on a network address unless allowed, and always fine on loopback.
    #[test]
    fn open_mode_needs_loopback_or_allow_open() {
        let parse = |args: &[&str]| {
            let mut all = vec!["weft"];
            all.extend_from_slice(args);
            Cli::parse_from(all).into_config()
        };
        assert!(parse(&[]).check_exposure().is_ok());
        assert!(parse(&["--bind", "0.0.0.0:80"]).check_exposure().is_err());
        assert!(parse(&["--bind", "0.0.0.0:80", "--allow-open"])
            .check_exposure()
            .is_ok());
        let secured = parse(&[
            "--bind",
            "0.0.0.0:80",
            "--auth-secret",
            "0123456789abcdef0123",
        ]);
        assert!(secured.check_exposure().is_ok());
        assert!(!format!("{secured:?}").contains("0123456789abcdef"));
    }

    /// `weft token` needs a scope and a secret, and parses lifetimes like `1h`.
    #[test]
    fn token_subcommand_parses() {
        let cli = Cli::try_parse_from([
            "weft",
            "token",
            "--doc",
            "notes",
            "--role",
            "write",
            "--ttl",
            "90m",
            "--auth-secret",
            "0123456789abcdef",
        ])
        .expect("parses");
        let Some(Subcommand::Token(t)) = cli.command else {
            panic!("not the token subcommand");
        };
        assert_eq!(t.doc.as_deref(), Some("notes"));
        assert_eq!(t.role, Access::Write);
        assert_eq!(t.ttl, Duration::from_secs(90 * 60));
        assert!(
            Cli::try_parse_from(["weft", "token", "--auth-secret", "0123456789abcdef"]).is_err()
        );
    }

    /// Trusted proxies parse as ranges or single addresses; hosts and proxies take commas.
    #[test]
    fn proxy_ranges_and_hosts_parse() {
        let c = Cli::parse_from([
            "weft",
            "--trusted-proxy",
            "10.0.0.0/8,127.0.0.1",
            "--trusted-proxy",
            "fd00::/8",
            "--allowed-host",
            "weft.example.com,10.1.2.3",
        ])
        .into_config();
        let nets: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]);
        assert_eq!(c.allowed_hosts, ["weft.example.com", "10.1.2.3"]);
        assert_eq!(c.max_connects_per_sec, 20);
        assert!(Cli::try_parse_from(["weft", "--trusted-proxy", "proxy.lan"]).is_err());
    }

    /// `weft serve --bind ...` and `weft --bind ...` mean the same.
    #[test]
    fn webhook_flags_are_checked() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("weft").chain(args.iter().copied()))
                .map(Cli::into_config)
        };
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let ok = parse(&[
            "--webhook-url",
            "http://a/h,http://b/h",
            "--webhook-secret",
            secret,
        ])
        .expect("valid");
        assert_eq!(ok.webhook_urls, ["http://a/h", "http://b/h"]);
        assert_eq!(ok.webhook_secret.as_ref().map(|s| s.0.len()), Some(24));
        assert!(ok.check_exposure().is_ok());
        let unsigned = parse(&["--webhook-url", "http://a/h"]).expect("parses");
        assert!(matches!(
            unsigned.check_exposure(),
            Err(ConfigError::WebhookWithoutSecret)
        ));
        assert!(parse(&["--webhook-url", "https://a/h"]).is_ok());
        assert!(parse(&["--webhook-url", "ftp://a/h"]).is_err());
        assert!(parse(&["--webhook-url", "not a url"]).is_err());
        assert!(parse(&["--webhook-secret", "whsec_c2hvcnQ="]).is_err());
        assert!(parse(&["--webhook-events", "document.renamed"]).is_err());
        assert!(parse(&["--feed-keep-days", "-1"]).is_err());
        let kept = parse(&["--feed-keep-days", "0.5"]).expect("fraction");
        assert_eq!(kept.feed_keep(), Duration::from_secs(12 * 3600));
    }

    #[test]
    fn serve_subcommand_is_optional() {
        let a = Cli::parse_from(["weft", "serve", "--bind", "127.0.0.1:9"]).into_config();
        let b = Cli::parse_from(["weft", "--bind", "127.0.0.1:9"]).into_config();
        assert_eq!(a.bind, b.bind);
    }

    /// Options before the subcommand are not dropped: `weft --auth-secret S serve` runs with
    /// authentication, exactly like `weft serve --auth-secret S`.
    #[test]
    fn options_work_before_and_after_the_subcommand() {
        let secret = "0123456789abcdef0123";
        for args in [
            [
                "weft",
                "--auth-secret",
                secret,
                "serve",
                "--bind",
                "127.0.0.1:9",
            ],
            [
                "weft",
                "serve",
                "--auth-secret",
                secret,
                "--bind",
                "127.0.0.1:9",
            ],
            [
                "weft",
                "--bind",
                "127.0.0.1:9",
                "serve",
                "--auth-secret",
                secret,
            ],
        ] {
            let config = Cli::parse_from(args).into_config();
            assert!(!config.is_open(), "{args:?} dropped --auth-secret");
            assert_eq!(config.bind.to_string(), "127.0.0.1:9", "{args:?}");
        }
        let cli = Cli::parse_from(["weft", "--auth-secret", secret, "token", "--doc", "d"]);
        assert!(
            cli.serve.auth_secret.is_some(),
            "token sees a secret given before it"
        );
    }
}
