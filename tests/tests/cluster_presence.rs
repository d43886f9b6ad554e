//! Presence across the nodes of a cluster: carets (awareness) of members on one Weft node show
//! on the others, a node that opens the room late sees those already present, a node that
//! closes takes its members' carets along at once, and a node that dies takes them within
//! 15 s. Real NATS server, real Weft nodes on real sockets.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use weft_tests::nats::{require_nats, NatsServer};
use weft_tests::{Client, TestServer, WeftProcess};

/// Longest any awareness is allowed to take across nodes in these tests.
const ACROSS: Duration = Duration::from_secs(10);

async fn node(nats: &NatsServer) -> anyhow::Result<TestServer> {
    let url = nats.url();
    TestServer::start_with(move |c| c.nats.urls = vec![url]).await
}

/// Polls until `peer` sees `client_id`'s state containing `needle` (or, with `None`, no
/// state at all); returns how long it took.
async fn until_seen(
    peer: &Client,
    client_id: u64,
    needle: Option<&str>,
    within: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let state = peer.awareness_of(client_id);
        let done = match needle {
            Some(n) => state.as_deref().is_some_and(|s| s.contains(n)),
            None => state.is_none(),
        };
        if done {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!(
                "after {within:?}, peer sees {state:?} for client {client_id}, expected {needle:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn carets_cross_nodes_and_leave_with_their_node() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster presence") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let a = node(&nats).await?;
    let b = node(&nats).await?;
    let room = "presence-across";
    let alice = Client::connect_synced(&a.room_url(room)).await?;
    alice.set_awareness(1, r#"{"user":{"name":"Alice"},"cursor":1}"#)?;
    // Bob's node opens the room after Alice is there: it asks the other nodes.
    let bob = Client::connect_synced(&b.room_url(room)).await?;
    let took = until_seen(&bob, alice.client_id(), Some("Alice"), ACROSS)
        .await
        .context("a node opening the room late shows the carets already present")?;
    eprintln!("late joiner on another node saw the caret after {took:?}");
    bob.set_awareness(1, r#"{"user":{"name":"Bob"},"cursor":7}"#)?;
    until_seen(&alice, bob.client_id(), Some("Bob"), ACROSS).await?;
    // A move travels too.
    alice.set_awareness(2, r#"{"user":{"name":"Alice"},"cursor":42}"#)?;
    let took = until_seen(&bob, alice.client_id(), Some("42"), ACROSS).await?;
    eprintln!("a caret move crossed nodes after {took:?}");
    // Alice leaving removes her caret on the other node.
    let alice_id = alice.client_id();
    drop(alice);
    until_seen(&bob, alice_id, None, ACROSS).await?;
    let carol = Client::connect_synced(&a.room_url(room)).await?;
    carol.set_awareness(1, r#"{"user":{"name":"Carol"}}"#)?;
    until_seen(&bob, carol.client_id(), Some("Carol"), ACROSS).await?;
    // Node A closes: its members' carets go at once on B.
    a.stop().await?;
    let took = until_seen(&bob, carol.client_id(), None, ACROSS)
        .await
        .context("a node that closes takes its members' carets")?;
    eprintln!("carets of a stopped node left after {took:?}");
    Ok(())
}

#[tokio::test]
async fn carets_of_a_killed_node_leave_within_15_s() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster presence") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let url = nats.url();
    let mut a = WeftProcess::spawn(dir.path(), &["--nats", &url]).await?;
    let b = node(&nats).await?;
    let room = "presence-killed";
    let bob = Client::connect_synced(&b.room_url(room)).await?;
    let alice = Client::connect_synced(&a.room_url(room)).await?;
    alice.set_awareness(1, r#"{"user":{"name":"Alice"}}"#)?;
    until_seen(&bob, alice.client_id(), Some("Alice"), ACROSS).await?;
    a.kill()?;
    // Peers take a node that has said nothing for 10 s as gone; 15 s is the promise.
    let took = until_seen(&bob, alice.client_id(), None, Duration::from_secs(15))
        .await
        .context("carets of a killed node leave within 15 s")?;
    eprintln!("carets of a killed node left after {took:?}");
    Ok(())
}
