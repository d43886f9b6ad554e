//! The forwarding of a document's frames: the room's y-websocket frames reach the socket with
//! the document's address in front, and frames a provider would misread never do.

use bytes::Bytes;
use tokio::sync::mpsc;
use weft_protocol::hocuspocus::{self, Body};
use weft_protocol::{Limits, Message};

use super::document::member_outbox;
use super::ping;
use crate::config::Config;
use crate::outbox::{Data, Outbox};

/// Sync, awareness and the Hocuspocus-only bodies arrive under the address, in order; a
/// y-websocket permission-denied (`02 00`, a token request to a provider) and a control
/// message are dropped.
#[tokio::test]
async fn room_frames_arrive_under_the_address() {
    let (tx, mut rx) = mpsc::channel(16);
    let socket = Outbox::detached(tx);
    let config = Config::for_tests(std::env::temp_dir());
    let (member, _forwarder) = member_outbox(&config, "doc\0s1", socket);
    let frames = [
        Message::SyncStep1(vec![0]).encode(),
        Message::PermissionDenied("read only".into()).encode(),
        Message::Control(weft_protocol::Control::Saved { version: 1 }).encode(),
        Body::SyncStatus(true).encode(),
        Message::Awareness(Default::default()).encode(),
    ];
    for f in frames {
        assert!(member.send(Bytes::from(f)));
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let data = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("a forwarded frame within 5 s")
            .expect("the socket queue is open");
        let Data::Binary(frame) = data else {
            panic!("text forwarded")
        };
        let env = hocuspocus::decode(&frame, &Limits::DEFAULT).expect("a Hocuspocus message");
        assert_eq!(env.address, "doc\0s1");
        got.push(env.body);
    }
    assert_eq!(
        got,
        vec![
            Body::Sync {
                message: Message::SyncStep1(vec![0]),
                reply: false
            },
            Body::SyncStatus(true),
            Body::Awareness(Default::default()),
        ]
    );
    assert!(rx.try_recv().is_err(), "nothing else forwarded");
    assert_eq!(
        member.queued.now.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A 4.x provider's socket is pinged with a lone `09` every interval, not at once.
#[tokio::test]
async fn pings_every_interval() {
    let (tx, mut rx) = mpsc::channel(16);
    let every = std::time::Duration::from_millis(200);
    let task = ping(Outbox::detached(tx), every);
    assert!(rx.try_recv().is_err(), "no ping before the first interval");
    for _ in 0..2 {
        let data = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("a ping within 5 s")
            .expect("the queue is open");
        let Data::Binary(frame) = data else {
            panic!("a text ping")
        };
        assert_eq!(frame.as_ref(), hocuspocus::PING);
    }
    task.abort();
}
