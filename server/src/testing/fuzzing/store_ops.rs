//! The `store_replay` harness: store operations on a real [`SledStore`], two documents, each
//! load going through the room's own load path, with the store's invariants checked as it goes.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use arbitrary::Arbitrary;
use weft_protocol::{Limits, RoomName};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Transact, Update};

use crate::room;
use crate::store::{SledStore, Store};
use crate::testing::fuzzing::updates::{seed_updates, UpdateSource};
use crate::testing::fuzzing::{context, runtime, temp_dir};

/// One step of a store input; `doc` picks one of two documents.
#[derive(Debug, Arbitrary)]
pub(super) enum StoreOp {
    /// Append an update.
    Append { doc: bool, update: UpdateSource },
    /// Compact: the snapshot is the document as the room loads it, up to the last sequence.
    Compact { doc: bool },
    /// Quarantine one of the logged updates.
    Quarantine { doc: bool, which: u8 },
    /// Drop the store (it flushes) and open the directory again.
    Reopen,
    /// Flush.
    Flush,
    /// Delete the document.
    Delete { doc: bool },
    /// Load through the room's load path and check the result.
    Load { doc: bool },
}

/// A store in a temporary directory and the runtime its context needs.
pub(super) struct StoreHarness {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    store: Option<Arc<SledStore>>,
    pool: Vec<Vec<u8>>,
    /// (document, sequence) of every update quarantined, by an operation or by a load.
    quarantined: BTreeSet<(bool, u64)>,
}

/// The name of document `doc`.
/// The name of one of the store harness's two documents.
fn doc_name(doc: bool) -> RoomName {
    let name = if doc { "b" } else { "a" };
    RoomName::parse(name, &Limits::DEFAULT).expect("room name")
}

impl StoreHarness {
    /// A fresh store in a temporary directory.
    pub(super) fn new() -> Self {
        let dir = temp_dir();
        let store = SledStore::open(&dir.path().join("db")).expect("opening the store");
        Self {
            rt: runtime(),
            dir,
            store: Some(Arc::new(store)),
            pool: seed_updates(),
            quarantined: BTreeSet::new(),
        }
    }

    fn store(&self) -> Arc<SledStore> {
        self.store.clone().expect("store is open")
    }

    /// Runs `ops`, then loads and checks both documents.
    pub(super) fn run(&mut self, ops: Vec<StoreOp>) {
        for op in ops {
            self.op(op);
        }
        for doc in [false, true] {
            self.load(doc);
        }
    }

    fn op(&mut self, op: StoreOp) {
        let store = self.store();
        match op {
            StoreOp::Append { doc, update } => {
                let bytes = update.bytes(&self.pool);
                store.append(&doc_name(doc), &bytes).expect("append");
            }
            StoreOp::Compact { doc } => {
                let Some((text_doc, last_seq)) = self.load(doc) else {
                    return;
                };
                let snapshot = text_doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                store
                    .compact(&doc_name(doc), &snapshot, last_seq, None)
                    .expect("compact");
            }
            StoreOp::Quarantine { doc, which } => {
                let updates = store.load(&doc_name(doc)).expect("load").updates;
                if updates.is_empty() {
                    return;
                }
                let seq = updates[usize::from(which) % updates.len()].0;
                store
                    .quarantine(&doc_name(doc), seq, "fuzz")
                    .expect("quarantine");
                self.quarantined.insert((doc, seq));
            }
            StoreOp::Reopen => {
                let before = [self.text(false), self.text(true)];
                self.store = None;
                // The committer tasks of the load contexts hold the store until they see their
                // handles gone; let them finish so the store (and sled's lock) is released.
                for _ in 0..1000 {
                    if Arc::strong_count(&store) == 1 {
                        break;
                    }
                    self.rt.block_on(tokio::task::yield_now());
                }
                assert_eq!(Arc::strong_count(&store), 1, "the store is still in use");
                drop(store);
                let store = SledStore::open(&self.dir.path().join("db")).expect("reopen");
                self.store = Some(Arc::new(store));
                let after = [self.text(false), self.text(true)];
                assert_eq!(before, after, "a reopen changed a document");
            }
            StoreOp::Flush => store.flush().expect("flush"),
            StoreOp::Delete { doc } => {
                store.delete(&doc_name(doc)).expect("delete");
                self.quarantined.retain(|(d, _)| *d != doc);
            }
            StoreOp::Load { doc } => {
                self.load(doc);
            }
        }
    }

    fn text(&mut self, doc: bool) -> Option<String> {
        let (d, _) = self.load(doc)?;
        let txn = d.transact();
        Some(
            txn.get_text("content")
                .map(|t| t.get_string(&txn))
                .unwrap_or_default(),
        )
    }

    /// Loads `doc` through the room's load path and checks it; `None` when it is refused (a
    /// snapshot that does not load).
    fn load(&mut self, doc: bool) -> Option<(Doc, u64)> {
        let store = self.store();
        let ctx = context(&self.rt, store.clone(), self.dir.path());
        let name = doc_name(doc);
        let loaded = room::load_doc(&ctx, &name).ok();
        // What the load quarantined is out of the log for good.
        for q in store.quarantined(&doc_name(doc)).expect("quarantined") {
            self.quarantined.insert((doc, q.seq));
        }
        let log: Vec<u64> = store
            .load(&doc_name(doc))
            .expect("load")
            .updates
            .iter()
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &log {
            assert!(
                !self.quarantined.contains(&(doc, *seq)),
                "quarantined update {seq} of {} is in the log again",
                doc_name(doc)
            );
        }
        let loaded = loaded?;
        let state = catch_unwind(AssertUnwindSafe(|| {
            loaded
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default())
        }))
        .expect("a loaded document does not encode");
        assert!(
            Update::decode_v1(&state).is_ok(),
            "a loaded document's state does not decode"
        );
        let last = log.last().copied().unwrap_or(0);
        Some((loaded.doc, last))
    }
}
