//! What the room tells the change feed ([`crate::feed`]): the first change of a window writes
//! a mark (durable with the change, so a crash cannot lose the event), and once the window of
//! `--feed-debounce-ms` has passed, or the room stops, the room hands over one
//! `document.created` and/or `document.updated` covering it, with the authors since the
//! previous event. A delete is handed over at once. Handing over never blocks the room.

use std::time::{Duration, Instant};

use yrs::{GetString, ReadTxn, Text, Transact};

use crate::feed::event::Event;
use crate::feed::log::flags;
use crate::room::authors::Since;
use crate::room::yrs_guards::contain;
use crate::room::{title_of, Room};

/// The room's account with the feed.
#[derive(Debug, Default)]
pub(super) struct FeedState {
    /// Events the changes since the last report owe ([`flags`]).
    owed: u8,
    /// The marks those changes wrote.
    marks: Vec<u64>,
    /// When the window closes and the room reports.
    pub(super) due: Option<Instant>,
}

impl FeedState {
    /// Starts with what the previous run owed this document (marks found at startup).
    pub(super) fn owed(owed: u8, marks: Vec<u64>) -> Self {
        Self {
            owed,
            marks,
            due: Some(Instant::now()),
        }
    }
}

/// Resolves at `due`; pends for ever without one (the run loop polls it only with one).
pub(super) async fn window_closed(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

impl Room {
    /// The document changed in a way that owes the events `owed` ([`flags`]): a new mark when
    /// that is more than the window already owes, and the window opens if it was closed.
    pub(super) fn feed_changed(&mut self, owed: u8) {
        if owed & !self.feed.owed != 0 {
            self.feed.owed |= owed;
            let id = self.ctx.feed.mark(self.name.as_str(), self.feed.owed);
            self.feed.marks.push(id);
        }
        if self.feed.due.is_none() {
            let debounce = Duration::from_millis(self.ctx.config.feed_debounce_ms);
            self.feed.due = Some(Instant::now() + debounce);
        }
    }

    /// The window closed (or the room stops): hands over what the changes owe.
    pub(super) fn report_feed(&mut self) {
        self.feed.due = None;
        let owed = std::mem::take(&mut self.feed.owed);
        let settles = self.settles();
        if owed == 0 && settles.is_empty() {
            return;
        }
        let doc = self.name.as_str().to_owned();
        let mut events = Vec::new();
        if self.exists && owed & flags::CREATED != 0 {
            events.push(Event::DocumentCreated { doc: doc.clone() });
        }
        if self.exists && owed & flags::UPDATED != 0 {
            events.push(self.updated_event(doc));
        }
        self.ctx.feed.report(events, settles);
    }

    /// The document was deleted: hands over its deletion (after its creation, if that was not
    /// reported yet) at once, under a mark of its own.
    pub(super) fn feed_deleted(&mut self) {
        let created = self.feed.owed & flags::CREATED;
        self.feed.owed = 0;
        self.feed.due = None;
        let doc = self.name.as_str().to_owned();
        let id = self.ctx.feed.mark(&doc, flags::DELETED | created);
        self.feed.marks.push(id);
        let mut events = Vec::new();
        if created != 0 {
            events.push(Event::DocumentCreated { doc: doc.clone() });
        }
        events.push(Event::DocumentDeleted { doc });
        self.authors.take(Since::Feed);
        let settles = self.settles();
        self.ctx.feed.report(events, settles);
    }

    /// The marks written since the last report, taken.
    fn settles(&mut self) -> Vec<(u64, String)> {
        let doc = self.name.as_str();
        self.feed
            .marks
            .drain(..)
            .map(|id| (id, doc.to_owned()))
            .collect()
    }

    /// `document.updated` for the document as it is now.
    fn updated_event(&mut self, doc: String) -> Event {
        // A document yrs cannot read is reported as empty rather than not at all.
        let (text, text_length) = contain(|| {
            let txn = self.doc.transact();
            txn.get_text("content")
                .map(|t| (t.get_string(&txn), u64::from(t.len(&txn))))
                .unwrap_or_default()
        })
        .unwrap_or_default();
        Event::DocumentUpdated {
            doc,
            size: self.stored_bytes,
            text_length,
            authors: self.authors.take(Since::Feed),
            title: title_of(&text).unwrap_or_default(),
        }
    }
}
