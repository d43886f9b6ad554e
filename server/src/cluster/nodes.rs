//! The nodes of a cluster, for the dashboard: each node announces its name and load on a core
//! NATS subject every two seconds and keeps what the others announced; one not heard from for
//! ten seconds is dropped from the list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::cluster::connect::Nats;
use crate::store::NodeStatus;

/// Where nodes announce themselves.
const SUBJECT: &str = "weft.nodes";
/// How often a node announces itself.
const EVERY: Duration = Duration::from_secs(2);
/// How long a node stays listed without an announcement.
const FORGET: Duration = Duration::from_secs(10);

/// This node's status and the others' as last heard.
#[derive(Default)]
pub(crate) struct Directory {
    mine: Mutex<Option<NodeStatus>>,
    others: Mutex<HashMap<String, (NodeStatus, Instant)>>,
}

impl Directory {
    /// Notes this node's status; returns every node, this one first, the others by name.
    pub(crate) fn update(&self, mine: NodeStatus) -> Vec<NodeStatus> {
        *lock(&self.mine) = Some(mine.clone());
        let now = Instant::now();
        let mut others: Vec<NodeStatus> = lock(&self.others)
            .values()
            .filter(|(_, heard)| now.duration_since(*heard) < FORGET)
            .map(|(s, heard)| NodeStatus {
                seen_secs_ago: now.duration_since(*heard).as_secs(),
                this: false,
                ..s.clone()
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        let mut all = vec![NodeStatus {
            this: true,
            seen_secs_ago: 0,
            ..mine
        }];
        all.extend(others);
        all
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Announces this node and listens to the others until the directory is dropped.
pub(crate) async fn run(nats: Arc<Nats>, dir: Arc<Directory>) {
    let Ok(mut sub) = nats.client.subscribe(SUBJECT).await else {
        return;
    };
    let mut every = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if Arc::strong_count(&dir) == 1 {
                    return;
                }
                let mine = lock(&dir.mine).clone();
                if let Some(mine) = mine {
                    if let Ok(json) = serde_json::to_vec(&(&nats.node, mine)) {
                        let _ = nats.client.publish(SUBJECT, Bytes::from(json)).await;
                    }
                }
            }
            Some(msg) = sub.next() => {
                let Ok((node, status)) = serde_json::from_slice::<(String, NodeStatus)>(&msg.payload) else {
                    continue;
                };
                if node != nats.node {
                    let mut others = lock(&dir.others);
                    others.retain(|_, (_, heard)| heard.elapsed() < FORGET);
                    others.insert(node, (status, Instant::now()));
                }
            }
        }
    }
}
