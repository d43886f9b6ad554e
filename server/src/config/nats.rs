//! The flags of cluster mode: where the NATS servers are, how to authenticate, how many
//! replicas JetStream keeps. Without `--nats` the server is a single node on sled.

use std::path::PathBuf;

use clap::Args;

/// How this node reaches the NATS servers that hold a cluster's documents.
#[derive(Debug, Clone, Default, Args)]
pub struct NatsArgs {
    /// Runs this node as part of a cluster whose documents live in NATS JetStream: one or more
    /// comma-separated server URLs (`nats://host:4222,nats://host2:4222`). Every node given the
    /// same servers serves the same documents; `--data` then keeps only this node's own state.
    #[arg(long = "nats", global = true, env = "WEFT_NATS", value_delimiter = ',')]
    pub urls: Vec<String>,

    /// A NATS credentials file (`.creds`: user JWT and NKey seed) to authenticate with.
    #[arg(long = "nats-creds", global = true, env = "WEFT_NATS_CREDS")]
    pub creds: Option<PathBuf>,

    /// A NATS user name (with `--nats-password`).
    #[arg(
        long = "nats-user",
        global = true,
        env = "WEFT_NATS_USER",
        requires = "password"
    )]
    pub user: Option<String>,

    /// The password of `--nats-user`.
    #[arg(
        long = "nats-password",
        global = true,
        env = "WEFT_NATS_PASSWORD",
        requires = "user"
    )]
    pub password: Option<String>,

    /// A NATS authentication token.
    #[arg(long = "nats-token", global = true, env = "WEFT_NATS_TOKEN")]
    pub token: Option<String>,

    /// A PEM file of CA certificates to trust for TLS to NATS (TLS is then required).
    #[arg(long = "nats-tls-ca", global = true, env = "WEFT_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// A PEM client certificate for TLS to NATS (with `--nats-tls-key`).
    #[arg(
        long = "nats-tls-cert",
        global = true,
        env = "WEFT_NATS_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--nats-tls-cert`.
    #[arg(
        long = "nats-tls-key",
        global = true,
        env = "WEFT_NATS_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// How many NATS servers keep a copy of each document (JetStream replicas, 1 to 5). By
    /// default 3 when the NATS cluster has three or more servers, else 1. An existing stream
    /// keeps its setting; a different explicit value is refused with an explanation.
    #[arg(long = "nats-replicas", global = true, env = "WEFT_NATS_REPLICAS",
        value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: Option<u8>,

    /// This node's name in logs, on the dashboard and in the NATS connection name; by default
    /// the host name and the listening port.
    #[arg(long = "node-name", global = true, env = "WEFT_NODE_NAME")]
    pub node_name: Option<String>,
}

impl NatsArgs {
    /// Whether cluster mode was asked for.
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }
}

impl super::Config {
    /// This node's name in a cluster: `--node-name`, else the host name and the port it
    /// listens on.
    pub fn node_name(&self) -> String {
        if let Some(name) = &self.nats.node_name {
            return name.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "weft".to_owned());
        format!("{host}-{}", self.bind.port())
    }
}
