//! The link between a room and the same document's rooms on other nodes, over core NATS: one
//! subject per document (`weft.aw.<hex>`), the sending node in a header so nobody hears itself,
//! the kind of message in another. Core NATS is at-most-once, which suits presence: every state
//! is renewed by its client, and a node that stops sending is forgotten by the others.

use std::sync::Arc;

use async_nats::header::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::debug;
use weft_protocol::RoomName;

use crate::cluster::connect::Nats;
use crate::cluster::names::{awareness_subject, NODE_HEADER};
use crate::store::{PeerLink, PeerMessage};

/// Header naming the kind of a peer message.
const KIND_HEADER: &str = "Weft-Kind";

/// Header naming the user a control message is for.
const TO_HEADER: &str = "Weft-To";

/// Messages from peers buffered for a room; beyond it they are dropped (presence renews).
const BUFFER: usize = 1024;

/// Opens `doc`'s link on `handle`; it ends when the room drops both ends.
pub(crate) fn link(nats: Arc<Nats>, handle: &tokio::runtime::Handle, doc: &RoomName) -> PeerLink {
    let (outgoing, out_rx) = mpsc::unbounded_channel();
    let (in_tx, incoming) = mpsc::channel(BUFFER);
    handle.spawn(run(nats, awareness_subject(doc.as_str()), out_rx, in_tx));
    PeerLink { outgoing, incoming }
}

async fn run(
    nats: Arc<Nats>,
    subject: String,
    mut out_rx: mpsc::UnboundedReceiver<PeerMessage>,
    in_tx: mpsc::Sender<(Arc<str>, PeerMessage)>,
) {
    let mut sub = match nats.client.subscribe(subject.clone()).await {
        Ok(sub) => Some(sub),
        Err(e) => {
            debug!(%subject, error = %e, "cannot hear peers; sending only");
            None
        }
    };
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(msg) => send(&nats, &subject, msg).await,
                None => return,
            },
            Some(msg) = async { match sub.as_mut() { Some(s) => s.next().await, None => None } } => {
                let Some(headers) = msg.headers.as_ref() else { continue };
                let Some(node) = headers.get(NODE_HEADER).map(|n| n.as_str().to_owned()) else {
                    continue;
                };
                if node == nats.node {
                    continue;
                }
                let Some(parsed) = parse(headers, &msg.payload) else { continue };
                let _ = in_tx.try_send((Arc::from(node), parsed));
            }
        }
    }
}

async fn send(nats: &Nats, subject: &str, msg: PeerMessage) {
    let (kind, payload) = match msg {
        PeerMessage::Awareness(update) => ("awareness", Bytes::from(update)),
        PeerMessage::Alive => ("alive", Bytes::new()),
        PeerMessage::Query => ("query", Bytes::new()),
        PeerMessage::Bye => ("bye", Bytes::new()),
        PeerMessage::Deleted => ("deleted", Bytes::new()),
        PeerMessage::Control { json, to } => {
            let mut headers = headers(nats, "control");
            if let Some(to) = &to {
                headers.insert(TO_HEADER, to.as_str());
            }
            publish(nats, subject, headers, Bytes::from(json)).await;
            return;
        }
    };
    publish(nats, subject, headers(nats, kind), payload).await;
}

fn headers(nats: &Nats, kind: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NODE_HEADER, nats.node.as_str());
    headers.insert(KIND_HEADER, kind);
    headers
}

async fn publish(nats: &Nats, subject: &str, headers: HeaderMap, payload: Bytes) {
    if let Err(e) = nats
        .client
        .publish_with_headers(subject.to_owned(), headers, payload)
        .await
    {
        debug!(%subject, error = %e, "a message to peers was not sent");
    }
}

fn parse(headers: &HeaderMap, payload: &[u8]) -> Option<PeerMessage> {
    let kind = headers.get(KIND_HEADER)?.as_str();
    Some(match kind {
        "deleted" => PeerMessage::Deleted,
        "control" => PeerMessage::Control {
            json: String::from_utf8(payload.to_vec()).ok()?,
            to: headers.get(TO_HEADER).map(|t| t.as_str().to_owned()),
        },
        "awareness" => PeerMessage::Awareness(payload.to_vec()),
        "alive" => PeerMessage::Alive,
        "query" => PeerMessage::Query,
        "bye" => PeerMessage::Bye,
        _ => return None,
    })
}
