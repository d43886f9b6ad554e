//! Tests of the [`Store`] contract through [`SledStore`]: logs, snapshots, metadata, titles,
//! listing, quarantine and reopen. Opening a data directory is tested in `open.rs`, encodings in
//! `keys.rs`.

use std::sync::Arc;

use weft_protocol::{Limits, RoomName};

use super::keys::{doc_key, seq_key, PROBE_KEY, TAG_META, TAG_SNAPSHOT, TAG_UPDATE};
use super::lock;
use super::{DocMeta, SledStore, Store, StoreError, StoredDoc};

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
    let untitled: Vec<DocMeta> = list
        .iter()
        .map(|m| DocMeta {
            title: None,
            ..m.clone()
        })
        .collect();
    assert_eq!(
        store.list_untitled().expect("list untitled"),
        untitled,
        "the same documents and metadata, titles left out"
    );
    drop(store);
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.list_untitled().expect("list untitled from disk"),
        untitled,
        "from disk too, where titles are skipped while decoding"
    );
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

/// How many files sled wrote under `dir/blobs` (pages too large for its log).
pub(super) fn blob_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("blobs")).map_or(0, |d| d.count())
}

/// `len` bytes that differ from position to position (a misplaced piece shows).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// Updates and snapshots of several MiB are stored in pieces: no blob file, and they load
/// back identical after a reopen, with the right sizes.
#[test]
fn large_values_are_stored_in_pieces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = pattern(3_000_000, 1);
    let update = pattern(2_500_000, 2);
    {
        let store = SledStore::open(dir.path()).expect("open");
        store.append(&room("big"), b"u1").expect("append");
        store
            .compact(&room("big"), &snapshot, 1, None)
            .expect("compact");
        assert_eq!(store.append(&room("big"), &update).expect("append"), 2);
        store.append(&room("big"), b"u3").expect("append");
        store.flush().expect("flush");
    }
    assert_eq!(
        blob_files(dir.path()),
        0,
        "a large value went to a blob file"
    );
    let store = SledStore::open(dir.path()).expect("reopen");
    let doc = store.load(&room("big")).expect("load");
    assert!(
        doc.snapshot.as_deref() == Some(snapshot.as_slice()),
        "snapshot differs"
    );
    assert_eq!(doc.updates.len(), 2);
    assert!(
        doc.updates[0] == (2, update.clone()),
        "large update differs"
    );
    assert_eq!(doc.updates[1], (3, b"u3".to_vec()));
    let meta = store.meta(&room("big")).expect("meta").expect("exists");
    assert_eq!(meta.size_bytes, 3_000_000 + 2_500_000 + 2);
}

/// Compaction removes a logged update's pieces and replaces the snapshot's; quarantine moves a
/// large update's pieces; delete removes every piece.
#[test]
fn pieces_are_compacted_quarantined_and_deleted() {
    let (dir, store) = open_temp();
    let snapshot = pattern(3_000_000, 1);
    let update = pattern(2_500_000, 2);
    store.append(&room("big"), b"u1").expect("append");
    store
        .compact(&room("big"), &snapshot, 1, None)
        .expect("compact");
    store.append(&room("big"), &update).expect("append");
    store.append(&room("big"), b"u3").expect("append");
    store
        .compact(&room("big"), &update, 2, None)
        .expect("compact");
    let doc = store.load(&room("big")).expect("load");
    assert!(doc.snapshot.as_deref() == Some(update.as_slice()));
    assert_eq!(doc.updates, vec![(3, b"u3".to_vec())]);
    assert_eq!(
        store
            .meta(&room("big"))
            .expect("meta")
            .expect("exists")
            .size_bytes,
        2_500_000 + 2
    );
    // A snapshot of the same size reuses the piece keys: the new pieces must win.
    let same_size = pattern(2_500_000, 9);
    store
        .compact(&room("big"), &same_size, 2, None)
        .expect("compact");
    let doc = store.load(&room("big")).expect("load");
    assert!(doc.snapshot.as_deref() == Some(same_size.as_slice()));
    store.append(&room("big"), &snapshot).expect("append");
    store
        .quarantine(&room("big"), 4, "test")
        .expect("quarantine");
    let quarantined = store.quarantined(&room("big")).expect("quarantined");
    assert!(quarantined.len() == 1 && quarantined[0].update == snapshot);
    assert_eq!(store.load(&room("big")).expect("load").updates.len(), 1);
    assert!(store.delete(&room("big")).expect("delete"));
    assert_eq!(store.docs.scan_prefix(b"").keys().count(), 0);
    store.flush().expect("flush");
    assert_eq!(blob_files(dir.path()), 0);
}

/// Values written whole by an older version, even above the blob threshold, still load; a
/// compaction rewrites the snapshot in pieces. Their blob files are fsynced by a flush.
#[test]
fn values_written_whole_still_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = pattern(3_000_000, 3);
    let update = pattern(300_000, 4);
    {
        let store = SledStore::open(dir.path()).expect("open");
        store.append(&room("old"), b"first").expect("append");
        store
            .docs
            .insert(doc_key(TAG_SNAPSHOT, "old"), snapshot.as_slice())
            .expect("insert");
        store
            .docs
            .insert(seq_key(TAG_UPDATE, "old", 2), update.as_slice())
            .expect("insert");
        store.flush().expect("flush");
        assert!(
            lock(&store.sync).synced_blob > 0,
            "expected the whole snapshot's blob file to be synced"
        );
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    let doc = store.load(&room("old")).expect("load");
    assert!(doc.snapshot.as_deref() == Some(snapshot.as_slice()));
    assert!(doc.updates == vec![(1, b"first".to_vec()), (2, update.clone())]);
    assert_eq!(store.append(&room("old"), b"third").expect("append"), 3);
    store
        .compact(&room("old"), &snapshot, 2, None)
        .expect("compact");
    assert!(!store
        .docs
        .contains_key(doc_key(TAG_SNAPSHOT, "old"))
        .expect("get"));
    let doc = store.load(&room("old")).expect("load");
    assert!(doc.snapshot.as_deref() == Some(snapshot.as_slice()));
    assert_eq!(doc.updates, vec![(3, b"third".to_vec())]);
}

/// Several MiB of large updates, flushed one by one, never make sled write a blob file: full
/// leaves of pieces stay below its threshold.
#[test]
fn mebibytes_of_large_updates_write_no_blob_files() {
    let (dir, store) = open_temp();
    for (i, len) in [1 << 20, 3 << 20, 700_000, 1 << 20, 2 << 20, 300_000]
        .into_iter()
        .enumerate()
    {
        store
            .append(&room("doc"), &pattern(len, i as u32))
            .expect("append");
        store.flush().expect("flush");
        assert_eq!(blob_files(dir.path()), 0, "blob file after update {i}");
    }
    assert_eq!(store.load(&room("doc")).expect("load").updates.len(), 6);
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

/// A failed store refuses every write at once, without touching sled, and keeps serving
/// reads of documents whose writes were all flushed.
#[test]
fn a_failed_store_refuses_writes_and_serves_reads() {
    let (_dir, store) = open_temp();
    store.append(&room("saved"), b"durable").expect("append");
    store.set_title(&room("saved"), "Saved").expect("title");
    store.flush().expect("flush");
    store.health().expect("healthy");
    store.health.fail("disk full (ENOSPC): test");

    let failed = |r: Result<(), StoreError>| {
        assert!(
            matches!(&r, Err(StoreError::Failed(why)) if why.contains("ENOSPC")),
            "{r:?}"
        );
    };
    failed(store.append(&room("saved"), b"more").map(drop));
    failed(store.compact(&room("saved"), b"s", 1, None));
    failed(store.quarantine(&room("saved"), 1, "why"));
    failed(store.set_title(&room("saved"), "t"));
    failed(store.pin_title(&room("saved"), "t"));
    failed(store.delete(&room("saved")).map(drop));
    failed(store.refuse(&[7; 32], "why"));
    failed(store.flush());
    failed(store.health());
    failed(store.check_writable());
    let err = store.flush().expect_err("failed");
    assert!(err.to_string().contains("writes are refused"), "{err}");

    let doc = store.load(&room("saved")).expect("reads still work");
    assert_eq!(doc.updates, vec![(1, b"durable".to_vec())]);
    let meta = store.meta(&room("saved")).expect("meta").expect("exists");
    assert_eq!(meta.title.as_deref(), Some("Saved"));
    assert_eq!(store.list().expect("list").len(), 1);
    assert!(store.refused().expect("refused").is_empty());
}

/// After a failed flush, a document with writes no flush covered is not loaded: sled still
/// holds them in memory, and serving them would present unsaved edits as the document.
#[test]
fn a_failed_store_does_not_load_unflushed_writes() {
    let (_dir, store) = open_temp();
    store.append(&room("flushed"), b"one").expect("append");
    store.append(&room("pending"), b"one").expect("append");
    store.flush().expect("flush");
    store
        .append(&room("pending"), b"two, never flushed")
        .expect("append");
    store.health.fail("flush timed out after 10 s");
    let err = store.load(&room("pending")).expect_err("unflushed");
    assert!(
        matches!(&err, StoreError::Failed(why) if why.contains("never reached the disk")),
        "{err}"
    );
    assert_eq!(
        store.load(&room("flushed")).expect("flushed doc").updates,
        vec![(1, b"one".to_vec())]
    );
    // Metadata stays readable (it may count the unsaved append).
    assert!(store.meta(&room("pending")).expect("meta").is_some());
}

/// A data directory removed under an open store is noticed: health fails, writes are refused,
/// and a flush reports it instead of succeeding into files that are gone.
#[test]
fn a_removed_data_directory_fails_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let store = SledStore::open(&data).expect("open");
    store.append(&room("doc"), b"saved").expect("append");
    store.check_writable().expect("writable");
    store.append(&room("doc"), b"unsaved").expect("append");
    std::fs::remove_dir_all(&data).expect("remove");
    let err = store.flush().expect_err("the flush must notice");
    assert!(err.to_string().contains("data directory removed"), "{err}");
    assert!(matches!(store.health(), Err(StoreError::Failed(_))));
    assert!(matches!(
        store.append(&room("doc"), b"x"),
        Err(StoreError::Failed(_))
    ));
}

/// Health notices a removed directory by itself, before any flush.
#[test]
fn health_notices_a_removed_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let store = SledStore::open(&data).expect("open");
    store.health().expect("healthy");
    std::fs::remove_dir_all(&data).expect("remove");
    let err = store.health().expect_err("removed");
    assert!(err.to_string().contains("removed"), "{err}");
    assert!(matches!(store.check_writable(), Err(StoreError::Failed(_))));
}

/// Titles are capped so a metadata record always fits one piece.
#[test]
fn long_titles_are_capped() {
    let (_dir, store) = open_temp();
    store
        .pin_title(&room("doc"), &"é".repeat(5000))
        .expect("title");
    let title = store
        .meta(&room("doc"))
        .expect("meta")
        .and_then(|m| m.title)
        .expect("title");
    assert_eq!(title.len(), 1024);
}
