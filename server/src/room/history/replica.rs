//! The recorder's replica of a room's document: fed a copy of every update the room stores (and
//! who wrote it), in order, so a version's text is read here, off the room's task, and each
//! character's author is known from the replica's text deltas (`attribution.rs`).

use std::sync::{Arc, Mutex};

use tracing::warn;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Observable, Transact, Update};

use super::attribution::Runs;
use crate::room::new_doc;
use crate::room::yrs_guards::contain;

/// Author runs in characters over a text (`None`: unknown author).
pub(crate) type CharRuns = Vec<(Option<String>, u64)>;

/// The text of a document (what a version records).
pub(crate) fn capture_text(doc: &yrs::Doc) -> String {
    let content = doc.get_or_insert_text("content");
    let txn = doc.transact();
    content.get_string(&txn)
}

/// Locks `m`, a poisoned lock included (runs are replaced whole, never left half-written).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The recorder's copy of the room's document, the updates it has yet to apply, and who wrote
/// each character.
pub(crate) struct Replica {
    doc: yrs::Doc,
    pending: Vec<(Vec<u8>, Option<Arc<str>>)>,
    runs: Arc<Mutex<Runs>>,
    /// The author of the update being applied, read by the text observer.
    author: Arc<Mutex<Option<Arc<str>>>>,
}

impl Replica {
    /// A replica of the document whose whole state is `state` (a Yjs v1 update), its text of
    /// unknown authorship.
    pub(crate) fn from_state(state: &[u8]) -> Self {
        let doc = new_doc();
        let runs: Arc<Mutex<Runs>> = Arc::default();
        let author: Arc<Mutex<Option<Arc<str>>>> = Arc::default();
        let (r, a) = (runs.clone(), author.clone());
        doc.get_or_insert_text("content")
            .observe("attribution", move |txn, e| {
                let who = lock(&a).clone();
                lock(&r).apply(e.delta(txn), who.as_ref());
            });
        let replica = Self {
            doc,
            pending: vec![(state.to_vec(), None)],
            runs,
            author,
        };
        replica.caught_up()
    }

    /// Queues an update the room stored.
    pub(crate) fn push(&mut self, update: Vec<u8>) {
        self.pending.push((update, None));
    }

    /// Updates queued and not applied yet.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Names the writer of the update queued last.
    pub(crate) fn attribute_last(&mut self, author: &str) {
        if let Some((_, who)) = self.pending.last_mut() {
            *who = Some(Arc::from(author));
        }
    }

    /// Applies every queued update (blocking work: run it off the async threads). An update
    /// the room took always applies here too; one that does not is logged and skipped.
    pub(crate) fn caught_up(mut self) -> Self {
        for (update, who) in std::mem::take(&mut self.pending) {
            *lock(&self.author) = who;
            let applied = contain(|| {
                let decoded = Update::decode_v1(&update).map_err(|e| e.to_string())?;
                self.doc
                    .transact_mut()
                    .apply_update(decoded)
                    .map_err(|e| e.to_string())
            });
            if !matches!(applied, Ok(Ok(()))) {
                warn!("the version replica could not apply an update the room stored");
            }
        }
        self
    }

    /// The replica's text once caught up, and who wrote its characters (`None` when the runs
    /// do not cover the text: nothing is attributed then).
    pub(crate) fn text(self) -> (Self, String, Option<CharRuns>) {
        let replica = self.caught_up();
        let text = capture_text(&replica.doc);
        let runs = lock(&replica.runs).in_chars(&text);
        (replica, text, runs)
    }
}
