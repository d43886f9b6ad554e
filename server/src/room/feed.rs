//! What the room tells the change feed ([`crate::feed`]): every batch that changed the document
//! writes (first) or rewrites its window's mark before the batch's flush, so the mark is
//! durable with the changes and a crash cannot lose their event; once the window of
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
    /// The flags the window's newest mark carries.
    marked: u8,
    /// Whether the document changed since its mark was last written.
    stale: bool,
    /// The marks of the window.
    marks: Vec<u64>,
    /// The first line when the window's first mark was written.
    title: String,
    /// When the window closes and the room reports.
    pub(super) due: Option<Instant>,
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
        self.feed.owed |= owed;
        self.feed.stale = true;
        if self.feed.due.is_none() {
            let debounce = Duration::from_millis(self.ctx.config.feed_debounce_ms);
            self.feed.due = Some(Instant::now() + debounce);
        }
    }

    /// Before a batch's flush: writes the window's mark with the document as it is now (a new
    /// mark when the window owes more than the last one says).
    pub(super) fn feed_mark(&mut self) {
        if !std::mem::take(&mut self.feed.stale) {
            return;
        }
        let first = self.feed.marks.is_empty();
        let id = match self.feed.marks.last() {
            Some(&id) if self.feed.marked == self.feed.owed => id,
            _ => {
                let id = self.ctx.feed.new_mark();
                self.feed.marks.push(id);
                id
            }
        };
        self.feed.marked = self.feed.owed;
        // The length is known at once; the title takes the whole text, so it is read once per
        // window (a crash reports the title the window started with).
        let (text_length, title) = if first {
            let (text, length) = self.text_and_length();
            (length, title_of(&text).unwrap_or_default())
        } else {
            (self.text_length(), std::mem::take(&mut self.feed.title))
        };
        let doc = self.name.as_str();
        self.ctx
            .feed
            .mark(id, doc, self.feed.owed, (text_length, &title));
        self.feed.title = title;
    }

    /// The window closed (or the room stops): hands over what the changes owe.
    pub(super) fn report_feed(&mut self) {
        self.feed.due = None;
        self.feed.stale = false;
        self.feed.marked = 0;
        self.feed.title.clear();
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
        self.feed.marked = 0;
        self.feed.stale = false;
        self.feed.due = None;
        let doc = self.name.as_str().to_owned();
        let id = self.ctx.feed.new_mark();
        self.ctx
            .feed
            .mark(id, &doc, flags::DELETED | created, (0, ""));
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

    /// The text and its length in UTF-16 units; empty when yrs cannot read it (an event then
    /// still goes out).
    fn text_and_length(&self) -> (String, u64) {
        contain(|| {
            let txn = self.doc.transact();
            txn.get_text("content")
                .map(|t| (t.get_string(&txn), u64::from(t.len(&txn))))
                .unwrap_or_default()
        })
        .unwrap_or_default()
    }

    /// The text's length in UTF-16 units (without reading the text).
    fn text_length(&self) -> u64 {
        contain(|| {
            let txn = self.doc.transact();
            txn.get_text("content")
                .map_or(0, |t| u64::from(t.len(&txn)))
        })
        .unwrap_or_default()
    }

    /// `document.updated` for the document as it is now.
    fn updated_event(&mut self, doc: String) -> Event {
        let (text, text_length) = self.text_and_length();
        Event::DocumentUpdated {
            doc,
            size: self.stored_bytes,
            text_length,
            authors: self.authors.take(Since::Feed),
            title: title_of(&text).unwrap_or_default(),
        }
    }
}
