//! The version history driven in-process, for `server/benches/history.rs` (feature
//! `bench-internals`): versions recorded into a real sled tree exactly as a room's recorder
//! records them, their texts rebuilt and diffs computed as the API does, and the capture a
//! room makes on its own task, so the bench times the server's code, not a copy.

use std::time::{Duration, Instant};

use weft_protocol::{Limits, RoomName};

use crate::room::history::replica::{CharRuns, Replica};
use crate::room::history::{Capture, Cursor, History};
use crate::store::history::HistoryStore;

/// A history of one document in a temporary directory.
pub struct HistoryBench {
    _dir: tempfile::TempDir,
    history: History,
    doc: RoomName,
    cursor: Cursor,
    replica: Option<Replica>,
    /// Who wrote the characters of the text read last.
    runs: Option<CharRuns>,
    queue: (
        tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
        tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    ),
    ids: Vec<u64>,
}

impl HistoryBench {
    /// An empty history, its piece length that of a new store (8 MiB segments / 128).
    ///
    /// # Panics
    /// When the temporary directory or the database cannot be made (a bench has no recovery).
    pub fn open() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let store = HistoryStore::open(&db, (8 << 20) / 128).expect("history tree");
        Self {
            _dir: dir,
            history: History::new(store),
            doc: RoomName::parse("bench", &Limits::DEFAULT).expect("name"),
            cursor: Cursor::default(),
            replica: Some(Replica::from_state(&[0, 0])),
            runs: None,
            queue: tokio::sync::mpsc::unbounded_channel(),
            ids: Vec::new(),
        }
    }

    /// What the room's task does with an update it stored: a copy into the recorder's queue
    /// (which the recorder then takes into its replica). Returns how long the room's part took.
    pub fn forward(&mut self, update: &[u8]) -> Duration {
        let started = Instant::now();
        let _ = self.queue.0.send(update.to_vec());
        let took = started.elapsed();
        while let Ok(u) = self.queue.1.try_recv() {
            if let Some(r) = self.replica.as_mut() {
                r.push(u);
                r.attribute_last("bench");
            }
        }
        took
    }

    /// The recorder's replica caught up and its text read (off the room's task). Returns the
    /// text and how long that took.
    ///
    /// # Panics
    /// Never once opened (the replica is always there between calls).
    pub fn replica_text(&mut self) -> (String, Duration) {
        let started = Instant::now();
        let (replica, text, runs) = self.replica.take().expect("replica").text();
        self.replica = Some(replica);
        self.runs = runs;
        (text, started.elapsed())
    }

    /// Records `text` as the next version (the recorder's blocking part: delta, compression,
    /// write); returns how long it took.
    ///
    /// # Panics
    /// When the store fails.
    pub fn record(&mut self, text: String) -> Duration {
        let started = Instant::now();
        let capture = Capture {
            at_ms: crate::store::now_ms(),
            name: None,
            authors: vec!["bench".into()],
            seq: self.ids.len() as u64 + 1,
            text,
            runs: self.runs.take(),
        };
        let meta = self
            .history
            .record(&self.doc, &mut self.cursor, capture)
            .expect("record");
        if let Some(meta) = meta {
            // The bench does not flush; the room's recorder confirms after its flush.
            self.history.confirm(&self.doc);
            self.ids.push(meta.id);
        }
        started.elapsed()
    }

    /// The ids recorded.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// Version `id`'s text, as `GET .../versions/{id}/text` rebuilds it.
    ///
    /// # Panics
    /// When the version is missing or corrupt.
    pub fn text(&self, id: u64) -> String {
        self.history.text(&self.doc, id).expect("text")
    }

    /// The number of chunks of version `id`'s diff against the one before, as
    /// `GET .../versions/{id}/diff` computes it.
    ///
    /// # Panics
    /// When the version is missing or corrupt.
    pub fn diff(&self, id: u64) -> usize {
        self.history.diff(&self.doc, id, None).expect("diff").len()
    }

    /// Bytes the history takes in the store (values only, as document sizes are counted).
    ///
    /// # Panics
    /// When the store fails.
    pub fn stored_bytes(&self) -> u64 {
        self.history.stored_bytes(&self.doc).expect("size")
    }
}
