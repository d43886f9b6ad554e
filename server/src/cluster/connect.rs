//! Connecting a node to NATS and making sure JetStream holds what a cluster needs: the update
//! log stream, the documents' key-value bucket, the snapshot object store and the version
//! history's bucket and object store (`history.rs`), each created with the chosen replicas or
//! checked against it.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use async_nats::{Client, ConnectOptions};
use tracing::info;

use crate::cluster::buckets::{file_object_store, history_buckets, kv_bucket, HistoryBuckets};
use crate::cluster::names::{DOCS_BUCKET, LOG_STREAM, LOG_SUBJECTS, SNAPSHOT_BUCKET};
use crate::cluster::ClusterError;
use crate::config::NatsArgs;
use crate::store::StoreError;

/// How long a node tries to reach NATS at start before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a JetStream request (a publish's ack among them) waits before it is retried. NATS
/// 2.9 takes 5–6 s to elect a new stream leader after a server dies; short tries, repeated,
/// resume sooner than one long wait.
pub(crate) const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// How long publishes of the same update are recognised as duplicates, so a retried publish
/// whose first try did land is stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A node's connection to NATS and the JetStream objects of the cluster.
pub(crate) struct Nats {
    /// The connection (core NATS: awareness between nodes).
    pub(crate) client: Client,
    /// JetStream on that connection.
    pub(crate) js: jetstream::Context,
    /// The update log.
    pub(crate) log: stream::Stream,
    /// Metadata, snapshot pointers, trash, revocations, refusals.
    pub(crate) docs: kv::Store,
    /// Compaction snapshots.
    pub(crate) snapshots: object_store::ObjectStore,
    /// This process's id, on every update it publishes (fresh at each start).
    pub(crate) node: String,
    /// Largest message the NATS servers accept.
    pub(crate) max_payload: usize,
    /// Version histories (see `history.rs`).
    pub(crate) history: HistoryBuckets,
}

impl Nats {
    /// Fails at once while the connection is down: a request would only wait for its
    /// deadline, and everything behind it (a dashboard, a shutdown) would queue up.
    pub(crate) fn reachable(&self) -> Result<(), StoreError> {
        if self.client.connection_state() == async_nats::connection::State::Disconnected {
            return Err(connection_lost());
        }
        Ok(())
    }
}

/// What a store call says while the connection to NATS is down.
pub(crate) fn connection_lost() -> StoreError {
    StoreError::Unavailable(
        "the connection to NATS is lost; edits are kept and saved once it is back".into(),
    )
}

/// Connects to the servers of `args` and creates or checks the cluster's stream and buckets.
pub(crate) async fn connect(args: &NatsArgs, node_name: &str) -> Result<Nats, ClusterError> {
    let urls = args.urls.join(",");
    // One address each: the client parses a single string as one URL, commas and all.
    let servers: Vec<&str> = args.urls.iter().map(|u| u.trim()).collect();
    let client = options(args)
        .await?
        .name(format!("weft {node_name}"))
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .connect(servers.as_slice())
        .await
        .map_err(|e| ClusterError::Connect {
            urls: urls.clone(),
            reason: e.to_string(),
        })?;
    let server = client.server_info();
    if !server.jetstream {
        return Err(ClusterError::NoJetStream { urls });
    }
    let servers = known_servers(&server, args.urls.len());
    let replicas = usize::from(args.replicas.unwrap_or(if servers >= 3 { 3 } else { 1 }));
    let js = jetstream::ContextBuilder::new()
        .timeout(JETSTREAM_TIMEOUT)
        .build(client.clone());
    let log = log_stream(&js, replicas, args.replicas.is_some()).await?;
    let docs = docs_bucket(&js, replicas).await?;
    let snapshots = file_object_store(
        &js,
        SNAPSHOT_BUCKET,
        "Weft: compaction snapshots of documents",
        replicas,
    )
    .await?;
    let history = history_buckets(&js, replicas).await?;
    let node = format!("{node_name}-{}", uuid::Uuid::new_v4().simple());
    info!(%urls, server = %server.server_name, version = %server.version, servers, replicas,
        max_payload = server.max_payload, "connected to NATS JetStream");
    Ok(Nats {
        client,
        js,
        log,
        docs,
        snapshots,
        node,
        max_payload: server.max_payload,
        history,
    })
}

/// Connection options with the credentials and TLS settings of `args`.
async fn options(args: &NatsArgs) -> Result<ConnectOptions, ClusterError> {
    let mut options = match &args.creds {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| ClusterError::Credentials {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &args.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &args.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// How many servers the NATS cluster has, as far as the connected one tells: the client URLs
/// it advertises (its own among them in a cluster), or the URLs given, whichever is more.
fn known_servers(server: &async_nats::ServerInfo, given: usize) -> usize {
    let mut urls = server.connect_urls.clone();
    urls.sort();
    urls.dedup();
    urls.len().max(given).max(1)
}

/// The update log stream, created with `replicas` or checked: an explicit replica count that
/// differs from the existing stream's is refused rather than silently ignored.
async fn log_stream(
    js: &jetstream::Context,
    replicas: usize,
    explicit: bool,
) -> Result<stream::Stream, ClusterError> {
    let mut log = js
        .get_or_create_stream(stream::Config {
            name: LOG_STREAM.into(),
            description: Some("Weft: every document's update log".into()),
            subjects: vec![LOG_SUBJECTS.into()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::setup(LOG_STREAM, e))?;
    let info = log
        .info()
        .await
        .map_err(|e| ClusterError::setup(LOG_STREAM, e))?;
    if explicit && info.config.num_replicas != replicas {
        return Err(ClusterError::Replicas {
            stream: LOG_STREAM,
            has: info.config.num_replicas,
            asked: replicas,
        });
    }
    Ok(log)
}

/// The documents' key-value bucket.
async fn docs_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, ClusterError> {
    let description = "Weft: document metadata, snapshot pointers, trash, revocations";
    Ok(kv_bucket(js, DOCS_BUCKET, description, replicas).await?.1)
}
