//! The flags of `weft migrate`, which copies every document between a data directory and a
//! cluster's NATS JetStream (or between two of either); the command itself is in
//! `crate::migrate`.

use clap::Args;

/// What `weft migrate --help` explains beyond the flags.
pub(super) const LONG_ABOUT: &str = "\
Copy every document from one store into another: from a data directory into a cluster's NATS \
JetStream, from a cluster back into a data directory, or between two of either.

Each of --from and --to is a data directory (a path) or one or more comma-separated NATS URLs \
(nats://host:4222,nats://host2:4222). --nats-creds, --nats-user/--nats-password, --nats-token \
and --nats-tls-* authenticate with whichever side is NATS.

Every document is copied with its whole content (merged into one update), its title (pinned \
titles stay pinned), its creation and last-change times and its place in the trash, and every \
token revocation is copied too, and each document's version history. Nothing is \
reported as moved before the destination has made it durable, and each document is then read \
back from the destination and its text compared with the source's.

Stop the servers first: a data directory is locked while a server runs on it, and edits made \
in a cluster during the copy may be missed. A document that already exists in the destination \
is skipped (and the command fails at the end) unless --overwrite is given, which replaces it.

Examples:
  # one server -> cluster
  WEFT_NATS_PASSWORD=change-me weft migrate --from /var/lib/weft \\
      --to nats://nats1:4222,nats://nats2:4222 --nats-user weft
  # cluster -> one server
  weft migrate --from nats://nats1:4222 --nats-creds weft.creds --to /var/lib/weft

See docs/cluster.md.";

/// Flags of `weft migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Where the documents are: a data directory, or NATS URL(s) (`nats://host:4222,...`).
    #[arg(long, value_name = "DIR|URLS")]
    pub from: String,
    /// Where they go: a data directory (created if absent), or NATS URL(s).
    #[arg(long, value_name = "DIR|URLS")]
    pub to: String,
    /// Replace documents that already exist in the destination (their copy there is deleted
    /// first); without it they are skipped and the command fails at the end.
    #[arg(long)]
    pub overwrite: bool,
}
