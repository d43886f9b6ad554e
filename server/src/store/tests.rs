//! Tests of the [`Store`] contract through [`SledStore`]: logs, snapshots, metadata, titles,
//! listing, quarantine and reopen. Opening a data directory is tested in `open.rs`, encodings in
//! `keys.rs`.

use std::sync::Arc;

use weft_protocol::{Limits, RoomName};

use super::keys::{doc_key, PROBE_KEY, TAG_META};
use super::sled_store::lock;
use super::{SledStore, Store, StoreError, StoredDoc};

/// A store in a fresh temporary directory (dropped after the store).
pub(super) fn open_temp() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("open store");
    (dir, store)
}

/// The room name `name`, which must be valid.
pub(super) fn room(name: &str) -> RoomName {
    RoomName::parse(name, &Limits::DEFAULT).expect("valid room name")
}

/// Appends get ascending sequence numbers from 1 and load returns them in order.
#[test]
fn append_then_load_in_order() {
    let (_dir, store) = open_temp();
    assert_eq!(store.load(&room("a")).expect("load"), StoredDoc::default());
    for i in 0..5u8 {
        assert_eq!(
            store.append(&room("a"), &[i; 3]).expect("append"),
            u64::from(i) + 1
        );
    }
    assert_eq!(store.append(&room("b"), b"other").expect("append"), 1);
    let doc = store.load(&room("a")).expect("load");
    assert_eq!(doc.snapshot, None);
    let expected: Vec<(u64, Vec<u8>)> = (0..5u8).map(|i| (u64::from(i) + 1, vec![i; 3])).collect();
    assert_eq!(doc.updates, expected);
    let meta = store.meta(&room("a")).expect("meta").expect("exists");
    assert_eq!(
        (meta.update_count, meta.size_bytes, meta.quarantined),
        (5, 15, 0)
    );
    assert!(meta.created_ms > 0 && meta.updated_ms >= meta.created_ms);
    assert_eq!(store.meta(&room("nope")).expect("meta"), None);
}

/// After flush and drop, a reopened store has the same content, metadata and next seq.
#[test]
fn reopen_keeps_everything_and_seq_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before;
    {
        let store = SledStore::open(dir.path()).expect("open");
        for i in 0..10u8 {
            store.append(&room("doc"), &[i]).expect("append");
        }
        store
            .compact(&room("doc"), b"SNAP", 4, Some("Notes"))
            .expect("compact");
        store.append(&room("doc"), b"eleven").expect("append");
        store.flush().expect("flush");
        before = store.meta(&room("doc")).expect("meta").expect("exists");
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.meta(&room("doc")).expect("meta").as_ref(),
        Some(&before)
    );
    assert_eq!(store.list().expect("list"), vec![before.clone()]);
    let doc = store.load(&room("doc")).expect("load");
    assert_eq!(doc.snapshot.as_deref(), Some(&b"SNAP"[..]));
    let seqs: Vec<u64> = doc.updates.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (5..=11).collect::<Vec<_>>());
    assert_eq!(store.append(&room("doc"), b"x").expect("append"), 12);
    assert_eq!(
        store
            .meta(&room("doc"))
            .expect("meta")
            .expect("exists")
            .update_count,
        12
    );
}

/// Metadata written lazily is repaired on open when only the log reached disk.
#[test]
fn stale_metadata_is_repaired_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        store.append(&room("doc"), b"one").expect("append");
        // Simulate a crash after the update keys but before the dirty metadata reached disk.
        let stale = store
            .docs
            .get(doc_key(TAG_META, "doc"))
            .expect("get")
            .expect("meta");
        store.append(&room("doc"), b"two").expect("append");
        store.append(&room("doc"), b"three").expect("append");
        store.flush().expect("flush");
        store
            .docs
            .insert(doc_key(TAG_META, "doc"), stale)
            .expect("insert");
        store.db.flush().expect("flush");
        lock(&store.dirty).clear();
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.append(&room("doc"), b"four").expect("append"), 4);
    store.load(&room("doc")).expect("load");
    let meta = store.meta(&room("doc")).expect("meta").expect("exists");
    assert_eq!((meta.update_count, meta.size_bytes), (4, 3 + 3 + 5 + 4));
}

/// Compaction drops covered updates, keeps later ones, and updates size and title.
#[test]
fn compaction_is_reflected_in_log_and_meta() {
    let (_dir, store) = open_temp();
    for _ in 0..6 {
        store.append(&room("d"), &[7; 10]).expect("append");
    }
    assert_eq!(
        store
            .meta(&room("d"))
            .expect("meta")
            .expect("exists")
            .size_bytes,
        60
    );
    store
        .compact(&room("d"), &[1; 25], 4, Some("Title"))
        .expect("compact");
    let doc = store.load(&room("d")).expect("load");
    assert_eq!(doc.snapshot, Some(vec![1; 25]));
    assert_eq!(doc.updates, vec![(5, vec![7; 10]), (6, vec![7; 10])]);
    let meta = store.meta(&room("d")).expect("meta").expect("exists");
    assert_eq!((meta.size_bytes, meta.update_count), (25 + 20, 6));
    assert_eq!(meta.title.as_deref(), Some("Title"));

    // A second compaction replaces the snapshot; `None` keeps the title.
    store.append(&room("d"), &[8; 10]).expect("append");
    store
        .compact(&room("d"), &[2; 5], 7, None)
        .expect("compact");
    let doc = store.load(&room("d")).expect("load");
    assert_eq!((doc.snapshot, doc.updates), (Some(vec![2; 5]), vec![]));
    let meta = store.meta(&room("d")).expect("meta").expect("exists");
    assert_eq!((meta.size_bytes, meta.update_count), (5, 7));
    assert_eq!(meta.title.as_deref(), Some("Title"));
    assert_eq!(store.append(&room("d"), b"z").expect("append"), 8);
}

/// A pinned title survives automatic titles and compaction, and a reopen.
#[test]
fn pinned_titles_stay() {
    let (dir, store) = open_temp();
    store.pin_title(&room("doc"), "Chosen").expect("pin");
    store.set_title(&room("doc"), "first line").expect("auto");
    store.append(&room("doc"), b"u").expect("append");
    store
        .compact(&room("doc"), b"snap", 1, Some("first line"))
        .expect("compact");
    assert_eq!(
        store
            .meta(&room("doc"))
            .expect("meta")
            .and_then(|m| m.title)
            .as_deref(),
        Some("Chosen")
    );
    store.flush().expect("flush");
    drop(store);
    let store = SledStore::open(dir.path()).expect("reopen");
    store.set_title(&room("doc"), "again").expect("auto");
    assert_eq!(
        store
            .meta(&room("doc"))
            .expect("meta")
            .and_then(|m| m.title)
            .as_deref(),
        Some("Chosen")
    );
}

/// list reports every live document with its title and omits deleted ones.
#[test]
fn list_reports_titles_and_skips_deleted() {
    let (dir, store) = open_temp();
    store.append(&room("alpha"), b"a").expect("append");
    store.append(&room("beta"), b"b").expect("append");
    store.append(&room("gamma"), b"c").expect("append");
    store.set_title(&room("beta"), "Beta doc").expect("title");
    store
        .set_title(&room("empty"), "Only a title")
        .expect("title");
    assert!(store.delete(&room("gamma")).expect("delete"));
    assert!(!store.delete(&room("gamma")).expect("delete again"));
    assert!(!store.delete(&room("never")).expect("delete unknown"));
    store.flush().expect("flush");

    let list = store.list().expect("list");
    let got: Vec<(&str, Option<&str>)> = list
        .iter()
        .map(|m| (m.id.as_str(), m.title.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("alpha", None),
            ("beta", Some("Beta doc")),
            ("empty", Some("Only a title"))
        ]
    );
    assert_eq!(store.doc_count(), 3);
    assert_eq!(
        store.load(&room("gamma")).expect("load"),
        StoredDoc::default()
    );
    assert_eq!(store.append(&room("gamma"), b"new").expect("append"), 1);
    assert_eq!(store.doc_count(), 4);
    store.flush().expect("flush");
    drop(store);
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.doc_count(), 4, "counted again at open");
}

/// list sees unflushed appends and does not depend on the cache to find documents.
#[test]
fn list_merges_cache_and_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path()).expect("open");
        store.append(&room("x"), b"12345").expect("append");
        store.append(&room("x"), b"678").expect("append");
        let listed = store.list().expect("list");
        assert_eq!((listed[0].update_count, listed[0].size_bytes), (2, 8));
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    let listed = store.list().expect("list");
    assert_eq!((listed[0].update_count, listed[0].size_bytes), (2, 8));
}

/// Quarantine moves an update out of the log, records reason and time, bumps the counter.
#[test]
fn quarantine_moves_an_update() {
    let (_dir, store) = open_temp();
    for u in [&b"good"[..], b"evil!", b"fine"] {
        store.append(&room("q"), u).expect("append");
    }
    store
        .quarantine(&room("q"), 2, "apply panicked")
        .expect("quarantine");
    store
        .quarantine(&room("q"), 99, "not there")
        .expect("missing seq is a no-op");
    let doc = store.load(&room("q")).expect("load");
    assert_eq!(
        doc.updates,
        vec![(1, b"good".to_vec()), (3, b"fine".to_vec())]
    );
    let quarantined = store.quarantined(&room("q")).expect("quarantined");
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].seq, 2);
    assert_eq!(quarantined[0].reason, "apply panicked");
    assert_eq!(quarantined[0].update, b"evil!");
    assert!(quarantined[0].at_ms > 0);
    let meta = store.meta(&room("q")).expect("meta").expect("exists");
    assert_eq!(
        (meta.quarantined, meta.size_bytes, meta.update_count),
        (1, 8, 3)
    );
    assert_eq!(store.append(&room("q"), b"next").expect("append"), 4);
    assert!(store.delete(&room("q")).expect("delete"));
    assert!(store
        .quarantined(&room("q"))
        .expect("quarantined")
        .is_empty());
}

/// Malformed metadata is reported by meta() and skipped (not fatal) by list().
#[test]
fn corrupt_metadata_is_reported() {
    let (_dir, store) = open_temp();
    store.append(&room("good"), b"1").expect("append");
    store
        .docs
        .insert(doc_key(TAG_META, "bad"), &b"\x01short"[..])
        .expect("insert");
    assert!(
        matches!(store.meta(&room("bad")), Err(StoreError::Corrupt { ref doc, .. }) if doc == "bad")
    );
    let ids: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec!["good".to_owned()]);
}

/// Big-endian keys keep log order past seq 255 and 65535, also for ranged compaction (the key
/// order itself is tested in `keys.rs`).
#[test]
fn big_endian_order_past_byte_boundaries() {
    let (_dir, store) = open_temp();
    let n = 66_000u64;
    for i in 1..=n {
        assert_eq!(
            store.append(&room("d"), &i.to_le_bytes()).expect("append"),
            i
        );
    }
    let doc = store.load(&room("d")).expect("load");
    assert_eq!(doc.updates.len(), 66_000);
    for (i, (seq, update)) in doc.updates.iter().enumerate() {
        let expected = i as u64 + 1;
        assert_eq!(
            (*seq, update.as_slice()),
            (expected, &expected.to_le_bytes()[..])
        );
    }
    store
        .compact(&room("d"), b"s", 65_536, None)
        .expect("compact");
    let doc = store.load(&room("d")).expect("load");
    let seqs: Vec<u64> = doc.updates.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (65_537..=n).collect::<Vec<_>>());
}

/// A snapshot large enough for sled's blob files survives reopen; flush fsyncs the blob.
#[test]
fn large_snapshot_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    {
        let store = SledStore::open(dir.path()).expect("open");
        store.append(&room("big"), b"u1").expect("append");
        store.compact(&room("big"), &big, 1, None).expect("compact");
        store.flush().expect("flush");
        assert!(
            lock(&store.sync).synced_blob > 0,
            "expected a blob file to be synced"
        );
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    let doc = store.load(&room("big")).expect("load");
    assert_eq!(doc.snapshot.as_deref(), Some(big.as_slice()));
    assert!(doc.updates.is_empty());
    assert_eq!(
        store
            .meta(&room("big"))
            .expect("meta")
            .expect("exists")
            .size_bytes,
        3_000_000
    );
}

/// The readiness probe succeeds on a healthy store and leaves no key behind.
#[test]
fn check_writable_leaves_nothing() {
    let (_dir, store) = open_temp();
    store.check_writable().expect("writable");
    assert!(!store.docs.contains_key(PROBE_KEY).expect("get"));
    assert!(store.list().expect("list").is_empty());
}

/// Appends from many threads to many documents get unique, gap-free sequence numbers.
#[test]
fn concurrent_appends_and_flushes() {
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    let doc = room(&format!("doc{}", (t + i) % 4));
                    store.append(&doc, &i.to_be_bytes()).expect("append");
                    if i % 50 == 0 {
                        store.flush().expect("flush");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    store.flush().expect("flush");
    let mut total = 0;
    for d in 0..4 {
        let doc = store.load(&room(&format!("doc{d}"))).expect("load");
        let seqs: Vec<u64> = doc.updates.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        total += seqs.len();
    }
    assert_eq!(total, 1600);
}
