//! The version history driven in-process, for `server/benches/history.rs` (feature
//! `bench-internals`): versions recorded into a real sled tree exactly as a room's recorder
//! records them, their texts rebuilt and diffs computed as the API does, and the capture a
//! room makes on its own task, so the bench times the server's code, not a copy.

use std::time::{Duration, Instant};

use weft_protocol::{Limits, RoomName};

use crate::room::history::{Capture, Cursor, History};
use crate::room::versions::capture_text;
use crate::store::history::HistoryStore;

/// A history of one document in a temporary directory.
pub struct HistoryBench {
    _dir: tempfile::TempDir,
    history: History,
    doc: RoomName,
    cursor: Cursor,
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
            ids: Vec::new(),
        }
    }

    /// What a room does on its own task to record a version of `doc`: reads its text. Returns
    /// the text and how long that took.
    pub fn capture(doc: &yrs::Doc) -> (String, Duration) {
        let started = Instant::now();
        let text = capture_text(doc);
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
        };
        let meta = self
            .history
            .record(&self.doc, &mut self.cursor, capture)
            .expect("record");
        if let Some(meta) = meta {
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
