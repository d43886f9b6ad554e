//! The documents of a cluster as NATS JetStream keeps them: compaction (a snapshot with the
//! log position it covers, written by one node at a time, the log purged behind it) while
//! another node follows the same document, idle rooms unloading and loading again, and a node
//! that starts later loading snapshot plus log. Real NATS server, real Weft nodes.

use std::time::Duration;

use weft_tests::nats::{require_nats, NatsServer};
use weft_tests::{wait_until, Client, TestServer, WAIT};

async fn node(nats: &NatsServer, compact_every: u64) -> anyhow::Result<TestServer> {
    let url = nats.url();
    TestServer::start_with(move |c| {
        c.nats.urls = vec![url];
        c.compact_every = compact_every;
        c.idle_unload_secs = 1;
    })
    .await
}

#[tokio::test]
async fn compaction_and_unload_keep_every_edit_across_nodes() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster store") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let a = node(&nats, 5).await?;
    let b = node(&nats, 5).await?;
    let room = "compacted";
    let writer = Client::connect_synced(&a.room_url(room)).await?;
    let follower = Client::connect_synced(&b.room_url(room)).await?;
    let mut expected = String::new();
    // Many compactions on A (every 5 updates) while B follows the log and writes too.
    for i in 0..60 {
        let piece = format!("{i},");
        if i % 3 == 0 {
            follower.push(&piece)?;
        } else {
            writer.push(&piece)?;
        }
        expected.push_str(&piece);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let same_len = |c: &Client| c.text().len() == expected.len();
    wait_until("both members to converge", WAIT, || {
        same_len(&writer) && same_len(&follower)
    })
    .await?;
    assert_eq!(writer.text(), follower.text());
    let text = writer.text();
    for piece in expected.split(',').filter(|p| !p.is_empty()) {
        assert!(
            text.contains(&format!("{piece},")),
            "{piece} is missing from {text:?}"
        );
    }
    // Everyone leaves: both rooms unload (compacting once more), then a node started now
    // loads the document from the snapshot and what is left of the log.
    drop((writer, follower));
    wait_until("both rooms to unload", WAIT, || {
        a.stats().open_rooms() == 0 && b.stats().open_rooms() == 0
    })
    .await?;
    let c = node(&nats, 5).await?;
    let fresh = Client::connect_synced(&c.room_url(room)).await?;
    assert_eq!(fresh.text(), text, "a node started later loads every edit");
    Ok(())
}
