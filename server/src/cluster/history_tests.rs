//! The cluster's version history against a real NATS server (skipped, saying so, when
//! `nats-server` is not installed): two nodes' histories over one bucket, ids taken by
//! compare-and-set, bodies in the bucket and in the object store, rewrites and removals, a
//! document's deletion, and the recorder lease passing between the nodes. Also two nodes
//! compacting a document at the same position (`docs::compact`), which shares this harness.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_protocol::RoomName;

use super::connect::{self, Nats};
use super::history::{stored_body_place, NatsHistory};
use super::lease;
use super::runtime::NatsRuntime;
use crate::config::NatsArgs;
use crate::store::history::{HistoryBackend, VersionBody, VersionMeta};
use crate::store::now_ms;

/// A `nats-server` child with JetStream, killed when dropped.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a NATS server, or `None` (reported) when the binary is missing.
fn nats_server() -> Option<Server> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(bin) = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|bin| bin.is_file())
    else {
        eprintln!("SKIPPED cluster history against NATS: nats-server not found");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning nats-server");
    Some(Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    })
}

/// A node connected to `url` (retried while the server starts).
fn node(url: &str, name: &'static str) -> (Arc<NatsRuntime>, Arc<Nats>) {
    let rt = Arc::new(NatsRuntime::start().expect("runtime"));
    let args = NatsArgs {
        urls: vec![url.to_owned()],
        ..Default::default()
    };
    let start = Instant::now();
    loop {
        let args = args.clone();
        let connected = rt.call(Duration::from_secs(20), async move {
            connect::connect(&args, name).await
        });
        match connected {
            Ok(Ok(nats)) => return (rt, Arc::new(nats)),
            other => {
                let why = other.map(|r| r.map(|_| ()).map_err(|e| e.to_string()));
                assert!(start.elapsed() < Duration::from_secs(20), "{why:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn meta(id: u64, name: Option<&str>) -> VersionMeta {
    VersionMeta {
        id,
        created_ms: 1000 * id,
        name: name.map(str::to_owned),
        authors: vec!["ada".into()],
        inserted: id,
        deleted: 0,
        size: id,
        seq: id,
    }
}

fn text_body(text: String) -> VersionBody {
    VersionBody {
        text: Some(text),
        ops: Vec::new(),
        runs: Vec::new(),
    }
}

/// Text that deflate cannot shrink much: a keyframe too large for the bucket.
fn big_text() -> String {
    (0..200_000u32)
        .map(|i| char::from_u32(0x4e00 + (i.wrapping_mul(2_654_435_761) % 20_000)).unwrap_or('x'))
        .collect()
}

fn ids(h: &NatsHistory, doc: &RoomName) -> Vec<u64> {
    h.list(doc).expect("list").iter().map(|m| m.id).collect()
}

/// Two nodes' histories over one NATS server, and two documents.
struct Two {
    rt_a: Arc<NatsRuntime>,
    a: Arc<Nats>,
    ha: NatsHistory,
    hb: NatsHistory,
    doc: RoomName,
    other: RoomName,
}

impl Two {
    /// Runs `f` with node A's connection on its runtime.
    fn on_a<T: Send + 'static, F>(&self, f: impl FnOnce(Arc<Nats>) -> F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        self.rt_a
            .call(Duration::from_secs(10), f(self.a.clone()))
            .expect("call")
    }

    /// The object holding version `id`'s body, if it is in the object store.
    fn place(&self, id: u64) -> Option<String> {
        let doc = self.doc.to_string();
        self.on_a(move |n| async move { stored_body_place(&n, &doc, id).await })
    }
}

#[test]
fn two_nodes_share_versions_and_a_lease() {
    let Some(server) = nats_server() else {
        return;
    };
    let ((rt_a, a), (rt_b, b)) = (node(&server.url, "a"), node(&server.url, "b"));
    let two = Two {
        ha: NatsHistory::new(rt_a.clone(), a.clone()),
        hb: NatsHistory::new(rt_b, b),
        rt_a,
        a,
        doc: RoomName::parse("doc.one", &Default::default()).expect("name"),
        other: RoomName::parse("doc", &Default::default()).expect("name"),
    };
    versions_and_bodies(&two);
    lease_passes(&two);
    let Two { ha, hb, doc, .. } = &two;
    assert!(hb.delete_doc(doc).expect("delete"));
    assert!(ha.list(doc).expect("list").is_empty());
    assert!(!ha.delete_doc(doc).expect("delete"));
    assert!(hb.claim(doc, false).expect("claim"), "the lease went too");
    assert_eq!(ids(hb, &two.other), [1], "other documents keep theirs");
}

/// Ids taken by compare-and-set, bodies in the bucket and the object store, a rewrite (as
/// retention does) that removes the replaced object, a removal.
fn versions_and_bodies(two: &Two) {
    let Two { ha, hb, doc, .. } = two;
    assert!(ha.list(doc).expect("list").is_empty());
    assert_eq!(ha.last(doc).expect("last"), None);
    let small = text_body("hello".into());
    assert!(ha.create(doc, &meta(1, None), &small).expect("create"));
    let not_mine = text_body("not mine".into());
    let taken = !hb.create(doc, &meta(1, None), &not_mine).expect("create");
    assert!(taken, "an id another node wrote is taken");
    assert_eq!(hb.body(doc, 1).expect("body"), Some(small.clone()));
    let big = text_body(big_text());
    assert!(hb.create(doc, &meta(2, None), &big).expect("create"));
    assert!(ha
        .create(&two.other, &meta(1, None), &small)
        .expect("create"));
    assert_eq!(ha.body(doc, 2).expect("body"), Some(big));
    assert_eq!(ids(ha, doc), [1, 2]);
    assert_eq!(hb.last(doc).expect("last"), Some(meta(2, None)));

    let object = two.place(2).expect("a keyframe this big is an object");
    hb.put(doc, &meta(2, Some("named")), &small).expect("put");
    assert_eq!(two.place(2), None, "a small body stays in the bucket");
    let named = Some(meta(2, Some("named")));
    assert_eq!(ha.meta(doc, 2).expect("meta"), named);
    assert_eq!(ha.body(doc, 2).expect("body"), Some(small));
    let gone = two.on_a(move |n| async move {
        let info = n.history.bodies.info(object.as_str()).await;
        info.map_or(true, |i| i.deleted)
    });
    assert!(gone, "the replaced object was removed");
    hb.remove(doc, 1).expect("remove");
    assert_eq!(ids(ha, doc), [2]);
    assert_eq!(ha.body(doc, 1).expect("body"), None);
}

/// The lease: free, renewed, refused while live, taken by a request, given up only by its
/// holder, taken over once stale.
fn lease_passes(two: &Two) {
    let Two { ha, hb, doc, .. } = two;
    assert!(ha.claim(doc, false).expect("claim"), "a free lease");
    assert!(ha.claim(doc, false).expect("claim"), "renewed");
    assert!(!hb.claim(doc, false).expect("claim"), "held by a live node");
    assert!(hb.claim(doc, true).expect("claim"), "a request takes it");
    assert!(!ha.claim(doc, false).expect("claim"));
    ha.release(doc).expect("release");
    assert!(!ha.claim(doc, false).expect("claim"), "not A's to give up");
    let later = now_ms() + lease::STALE_MS + 1;
    let d = doc.to_string();
    let stale = two
        .on_a(move |n| async move { lease::claim(&n.history.kv, &d, &n.node, false, later).await })
        .expect("claim");
    assert!(stale, "a lease not renewed for 30 s is taken over");
    hb.release(doc).expect("release");
    assert!(!hb.claim(doc, false).expect("claim"), "B lost it meanwhile");
}

/// Two nodes compact the same document at the same log position at once (as two nodes whose
/// rooms unload together do): one pointer update wins, and the document still loads, with
/// what the snapshot holds.
#[test]
fn two_nodes_compacting_at_the_same_position_leave_a_loadable_document() {
    use super::docs;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, ReadTxn, Text, Transact};
    let Some(server) = nats_server() else {
        return;
    };
    let (rt_a, a) = node(&server.url, "a");
    let (_rt_b, b) = node(&server.url, "b");
    let doc = RoomName::parse("raced", &weft_protocol::Limits::DEFAULT).expect("valid");
    for round in 1..=5u64 {
        let ydoc = yrs::Doc::new();
        let text = ydoc.get_or_insert_text("content");
        text.insert(&mut ydoc.transact_mut(), 0, &"x".repeat(round as usize));
        let snapshot = ydoc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let (na, nb, name) = (a.clone(), b.clone(), doc.as_str().to_owned());
        let won = rt_a
            .call(Duration::from_secs(20), async move {
                let (x, y) = tokio::join!(
                    docs::compact(&na, &name, &snapshot, round * 10),
                    docs::compact(&nb, &name, &snapshot, round * 10)
                );
                (x, y)
            })
            .expect("call");
        let winners = [&won.0, &won.1]
            .iter()
            .filter(|r| matches!(r, Ok(true)))
            .count();
        assert_eq!(winners, 1, "round {round}: {won:?}");
        let (na, loaded_doc) = (a.clone(), doc.clone());
        let loaded = rt_a
            .call(Duration::from_secs(20), async move {
                docs::load(&na, &loaded_doc).await
            })
            .expect("call")
            .unwrap_or_else(|e| panic!("round {round}: the document no longer loads: {e}"));
        let snapshot = loaded.snapshot.expect("a snapshot");
        let update = yrs::Update::decode_v1(&snapshot).expect("decodes");
        let check = yrs::Doc::new();
        check.transact_mut().apply_update(update).expect("applies");
        let text = check.get_or_insert_text("content");
        assert_eq!(text.get_string(&check.transact()).len(), round as usize);
    }
}
