//! A room's turn at recording its document's versions when several nodes share the history (a
//! cluster). Every node's room of the document sees every change and would record it; only the
//! holder of the document's recorder lease does (the store keeps the lease, see
//! `cluster/lease.rs`).
//!
//! - An automatic version is recorded when this node holds the lease or can take it (free,
//!   given up, or not renewed for 30 s). Otherwise it is *owed*: looked at again every
//!   [`TURN_EVERY`], dropped once the stored history covers its changes (the holder recorded
//!   them), recorded here once the lease comes free.
//! - A requested version (a named one, a restore) takes the lease at once: the request is
//!   answered from this node.
//! - The holder renews its lease while the document changes, and gives it up when its room
//!   closes, so another node's room takes over at once.
//!
//! With a history of one node every version is this node's to record and nothing here touches
//! the store.

use std::time::{Duration, Instant};

use tracing::warn;
use weft_protocol::RoomName;

use super::{Capture, History};

/// How often a room of a shared history looks at its lease and at what it owes.
pub(crate) const TURN_EVERY: Duration = Duration::from_secs(5);

/// How often the holder renews its lease while the document changes (well within the 30 s
/// after which other nodes take it over).
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// A room's part in deciding which node records its versions.
#[derive(Debug)]
pub(crate) struct Turn {
    /// Whether other nodes write the history too.
    shared: bool,
    /// When this node last took or renewed the lease, while it believes it holds it.
    held: Option<Instant>,
    /// Whether the document changed since then.
    active: bool,
    /// The automatic version declined while another node held the lease.
    owed: Option<Capture>,
}

impl Turn {
    /// The turn of a room recording into `history`.
    pub(crate) fn new(history: &History) -> Self {
        Self {
            shared: history.shared(),
            held: None,
            active: false,
            owed: None,
        }
    }

    /// Whether [`Turn::tick`] has anything to do.
    pub(crate) fn shared(&self) -> bool {
        self.shared
    }

    /// The document changed.
    pub(crate) fn saw_change(&mut self) {
        self.active = true;
    }

    /// Whether this node may record now: always with an unshared history, else when it holds
    /// or takes the lease (`forced`: also from another live node).
    pub(crate) async fn claim(
        &mut self,
        history: &History,
        name: &RoomName,
        forced: bool,
    ) -> Result<bool, String> {
        if !self.shared {
            return Ok(true);
        }
        let (h, doc) = (history.clone(), name.clone());
        let got = tokio::task::spawn_blocking(move || h.claim(&doc, forced))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.held = got.then(Instant::now);
        if got {
            self.active = false;
        }
        Ok(got)
    }

    /// Keeps `capture`, declined, for later; its authors join those of what was owed already.
    pub(crate) fn owe(&mut self, mut capture: Capture) {
        if let Some(before) = self.owed.take() {
            capture.authors.extend(before.authors);
            capture.authors.sort();
            capture.authors.dedup();
        }
        self.owed = Some(capture);
    }

    /// Every [`TURN_EVERY`]: renews the lease while the document changes, and hands back what
    /// is owed once it is this node's to record (the stored history does not cover it and the
    /// lease came free).
    pub(crate) async fn tick(&mut self, history: &History, name: &RoomName) -> Option<Capture> {
        if !self.shared {
            return None;
        }
        if self.active && self.held.is_some_and(|t| t.elapsed() >= RENEW_EVERY) {
            if let Err(e) = self.claim(history, name, false).await {
                warn!(room = %name, error = %e, "renewing the recorder lease failed");
            }
        }
        let seq = self.owed.as_ref()?.seq;
        let (h, doc) = (history.clone(), name.clone());
        let last = tokio::task::spawn_blocking(move || h.last(&doc)).await;
        if let Ok(Ok(Some(last))) = last {
            if last.seq >= seq {
                self.owed = None;
                return None;
            }
        }
        match self.claim(history, name, false).await {
            Ok(true) => self.owed.take(),
            _ => None,
        }
    }

    /// The room closes: gives the lease up if this node holds it.
    pub(crate) async fn release(&mut self, history: &History, name: &RoomName) {
        if self.held.take().is_none() {
            return;
        }
        let (h, doc) = (history.clone(), name.clone());
        match tokio::task::spawn_blocking(move || h.release(&doc)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(room = %name, error = %e, "giving up the recorder lease failed"),
            Err(e) => warn!(room = %name, error = %e, "giving up the recorder lease failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(seq: u64, authors: &[&str]) -> Capture {
        Capture {
            at_ms: seq,
            name: None,
            authors: authors.iter().map(|a| (*a).to_owned()).collect(),
            seq,
            text: String::new(),
            runs: None,
        }
    }

    /// What is owed keeps the newest capture with every author of the declined ones.
    #[test]
    fn owed_captures_merge_their_authors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let store = crate::store::history::HistoryStore::open(&db, 4096).expect("open");
        let mut turn = Turn::new(&History::new(store));
        assert!(!turn.shared(), "a sled history is one node's");
        turn.owe(capture(3, &["bob", "ada"]));
        turn.owe(capture(5, &["cy", "ada"]));
        let owed = turn.owed.expect("owed");
        assert_eq!(owed.seq, 5);
        assert_eq!(owed.authors, ["ada", "bob", "cy"]);
    }
}
