//! The change feed: every change to a document becomes an event with a global, strictly
//! increasing, durable `seq`, kept in the store's database for `--feed-keep-days`, read by
//! `GET /api/changes` (JSON or Server-Sent Events) and delivered to webhooks.
//!
//! # Never losing an acknowledged change
//! A room reports its text changes once per `--feed-debounce-ms`, so an event is written well
//! after the change it describes was acknowledged. What bridges the gap is a *mark*: with the
//! first change of a window the room writes a small key (`m` + id + doc, see [`log`]) into the
//! feed's tree, in the same sled database and before the same flush as the change itself, so
//! the mark is durable whenever the change is; the room rewrites it with the text's length
//! before each flush of the window. The event's batch removes the mark. A mark found at startup
//! means the process died between the two: the feed records what it owes from the mark and the
//! document's metadata, without loading the document (see [`Feed::recover`]). Delivery is at
//! least once: a crash between writing an event and its flush can repeat one.
//!
//! # Order
//! One writer task numbers and writes events in the order rooms handed them over; a room hands
//! over a document's events in the order of its changes. Readers see an event only once it is
//! durable ([`Feed::head`]), so a seq anybody saw is never reused after a crash.
//!
//! # Files
//! `event.rs` (the events and their JSON), `log.rs` (the sled tree), `mod.rs` (the queue rooms
//! hand events to, the writer, recovery and pruning), `shared.rs` (a cluster's feed: one log
//! for every node, which this node appends to and mirrors; `writer.rs` appends to it).

pub(crate) mod event;
pub(crate) mod log;
pub(crate) mod shared;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};

use crate::config::Durability;
use crate::feed::event::{rfc3339, Event, Record};
use crate::feed::log::{flags, EventLog};
use crate::feed::shared::SharedLog;
use crate::shutdown::Shutdown;
use crate::store::log::DurableLog;
use crate::store::{now_ms, StoreError};

/// How long the writer waits before retrying after the store refused a write or a flush.
const RETRY: Duration = Duration::from_millis(500);

/// What a document's marks owe, gathered at startup: their flags, the newest text length and
/// title, and the marks to settle.
type OwedBy = (u8, (u64, String), Vec<(u64, String)>);

/// The change feed of one server.
pub(crate) struct Feed {
    /// The events readers read: this node's own, or in a cluster the mirror of the shared log.
    log: EventLog,
    /// Where marks are kept: the node's own tree (the same as `log` on a single node).
    marks: EventLog,
    /// In a cluster, the log every node appends to (the writer appends there, not to `log`).
    shared: Option<Arc<dyn SharedLog>>,
    /// Prefix of this run's append ids in the shared log.
    origin: String,
    queue: Mutex<Queue>,
    wake: Notify,
    /// The seq of the newest durable event (0: none yet).
    head: watch::Sender<u64>,
    /// The seq the next event gets; locked while a batch is written, so batches never interleave.
    next: tokio::sync::Mutex<u64>,
    next_mark: AtomicU64,
}

/// Events handed over and not written yet, in order.
#[derive(Default)]
struct Queue {
    items: Vec<Pending>,
    /// Where each document's last `document.updated` waits in `items`, while it may still be
    /// merged with a newer one (nothing about that document was queued after it).
    updated: HashMap<String, usize>,
}

/// An event to write (none: only marks to settle), and the marks it settles.
struct Pending {
    event: Option<Event>,
    settles: Vec<(u64, String)>,
    /// Its id in the shared log, from its first try on (so a retry is stored once).
    id: Option<String>,
}

impl Feed {
    /// The feed kept in `tree` (a tree of the store's database).
    ///
    /// # Errors
    /// When the tree cannot be read.
    pub(crate) fn open(tree: sled::Tree) -> Result<Arc<Self>, StoreError> {
        let log = EventLog::new(tree);
        Self::with(log.clone(), log, None)
    }

    /// A cluster node's feed: marks in `marks` (a tree of the node's database), events
    /// appended to `shared` and mirrored from it into `mirror` (another tree), which readers
    /// read.
    ///
    /// # Errors
    /// When the trees cannot be read.
    pub(crate) fn open_shared(
        marks: sled::Tree,
        mirror: sled::Tree,
        shared: Arc<dyn SharedLog>,
    ) -> Result<Arc<Self>, StoreError> {
        Self::with(EventLog::new(mirror), EventLog::new(marks), Some(shared))
    }

    fn with(
        log: EventLog,
        marks: EventLog,
        shared: Option<Arc<dyn SharedLog>>,
    ) -> Result<Arc<Self>, StoreError> {
        let next = log.next_seq()?;
        let next_mark = marks.marks()?.iter().map(|m| m.id + 1).max().unwrap_or(1);
        Ok(Arc::new(Self {
            log,
            marks,
            shared,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            queue: Mutex::default(),
            wake: Notify::new(),
            head: watch::channel(next - 1).0,
            next: tokio::sync::Mutex::new(next),
            next_mark: AtomicU64::new(next_mark),
        }))
    }

    /// A feed on a throwaway in-memory database, for rooms driven by tests and harnesses.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn in_memory() -> Arc<Self> {
        let tree = sled::Config::new()
            .temporary(true)
            .open()
            .and_then(|db| db.open_tree("feed"));
        match tree.map_err(StoreError::from).and_then(Self::open) {
            Ok(feed) => feed,
            Err(e) => panic!("in-memory sled failed: {e}"),
        }
    }

    /// The durable record.
    pub(crate) fn log(&self) -> &EventLog {
        &self.log
    }

    /// The seq of the newest durable event, and its changes.
    pub(crate) fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Records `event` (after the events already handed over), with no mark behind it.
    #[cfg(test)]
    pub(crate) fn record(&self, event: Event) {
        self.report(vec![event], Vec::new());
    }

    /// Writes a mark saying version `version` of `doc`, by `authors`, owes `version.created`:
    /// written before the flush that makes the version durable, so a crash between that flush
    /// and the event's cannot lose the event. Returns the mark's id for [`Feed::version_created`].
    pub(crate) fn owe_version(&self, doc: &str, version: u64, authors: &[String]) -> u64 {
        let id = self.new_mark();
        if let Err(e) = self.marks.mark_version(id, doc, version, authors) {
            error!(doc, error = %e, "could not write a change-feed mark");
        }
        id
    }

    /// Hands over `version.created` for a durable version, settling its mark `mark`.
    pub(crate) fn version_created(&self, mark: u64, doc: &str, version: u64, authors: Vec<String>) {
        let event = Event::VersionCreated {
            doc: doc.into(),
            version,
            authors,
        };
        self.report(vec![event], vec![(mark, doc.into())]);
    }

    /// A new mark's id.
    pub(crate) fn new_mark(&self) -> u64 {
        self.next_mark.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes (or rewrites) mark `id`: `doc` owes the events `owed` ([`flags`]) for changes
    /// about to be acknowledged, its text now `(text_length, title)`; the id goes back with the
    /// events to [`Feed::report`]. The mark rides on the store's next flush, with the changes.
    /// A store that refuses it is failing, and the changes with it.
    pub(crate) fn mark(&self, id: u64, doc: &str, owed: u8, text: (u64, &str)) {
        if let Err(e) = self.marks.mark(id, doc, owed, text) {
            error!(doc, error = %e, "could not write a change-feed mark");
        }
    }

    /// Hands over a document's `events`, in order, settling the marks `settles` (ids of
    /// `doc`'s marks) once they are written. Never blocks: a `document.updated` still waiting
    /// to be written takes in a newer one of the same document instead of queueing another.
    pub(crate) fn report(&self, events: Vec<Event>, settles: Vec<(u64, String)>) {
        let mut q = lock(&self.queue);
        let mut settles = Some(settles);
        let n = events.len();
        for (i, event) in events.into_iter().enumerate() {
            let doc = event.doc().to_owned();
            let settles = if i + 1 == n {
                settles.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            if let Event::DocumentUpdated { .. } = event {
                if let Some(&at) = q.updated.get(&doc) {
                    merge(&mut q.items[at], event, settles);
                    continue;
                }
                let at = q.items.len();
                q.updated.insert(doc, at);
            } else {
                q.updated.remove(&doc);
            }
            q.items.push(Pending {
                event: Some(event),
                settles,
                id: None,
            });
        }
        if let Some(settles) = settles.filter(|s| !s.is_empty()) {
            // No event (the changes owe nothing any more): the marks still go.
            q.items.push(Pending {
                event: None,
                settles,
                id: None,
            });
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Records what the marks left by the previous run owe, before any room loads, in the
    /// order of the marks: a deletion as it was, a creation and the document's last state as
    /// `document.updated` (its text length and title from the newest mark, its size from
    /// `meta`, which answers `None` for a document that no longer exists). Their authors are
    /// not known any more: the list is empty.
    ///
    /// # Errors
    /// When the marks cannot be read.
    pub(crate) fn recover(&self, size: impl Fn(&str) -> Option<u64>) -> Result<usize, StoreError> {
        let marks = self.marks.marks()?;
        let mut owed: HashMap<String, OwedBy> = HashMap::new();
        let mut order = Vec::new();
        for mark in &marks {
            if let Some((version, authors)) = &mark.version {
                let (doc, version, authors) = (mark.doc.clone(), *version, authors.clone());
                self.version_created(mark.id, &doc, version, authors);
                continue;
            }
            let entry = owed.entry(mark.doc.clone()).or_insert_with(|| {
                order.push(mark.doc.clone());
                Default::default()
            });
            entry.0 |= mark.flags;
            entry.1 = (mark.text_length, mark.title.clone());
            entry.2.push((mark.id, mark.doc.clone()));
            if mark.flags & flags::DELETED != 0 {
                let (flags, _, settles) = owed.remove(&mark.doc).unwrap_or_default();
                self.report(recovered(&mark.doc, flags, None), settles);
            }
        }
        for doc in order {
            if let Some((flags, (text_length, title), settles)) = owed.remove(&doc) {
                let state = size(&doc).map(|size| (size, text_length, title));
                self.report(recovered(&doc, flags, state), settles);
            }
        }
        if !marks.is_empty() {
            info!(
                marks = marks.len(),
                "change feed: recording changes the last run acknowledged but did not record"
            );
        }
        Ok(marks.len())
    }

    /// Writes whatever was handed over, numbering it; returns the seq of the last event
    /// written (not durable until the store's next flush), or `None` when there was nothing.
    ///
    /// # Errors
    /// When the store refuses the batch (the events stay queued).
    pub(crate) async fn write_pending(&self) -> Result<Option<u64>, StoreError> {
        if let Some(shared) = &self.shared {
            return self.append_shared(shared.as_ref()).await;
        }
        let mut next = self.next.lock().await;
        let items = std::mem::take(&mut *lock(&self.queue)).items;
        if items.is_empty() {
            return Ok(None);
        }
        let at = rfc3339(now_ms());
        let mut records = Vec::with_capacity(items.len());
        let mut settles = Vec::new();
        for p in &items {
            settles.extend(p.settles.iter().cloned());
            if let Some(event) = &p.event {
                records.push(Record {
                    seq: *next + records.len() as u64,
                    at: at.clone(),
                    event: event.clone(),
                });
            }
        }
        if let Err(e) = self.log.append(*next, &records, &settles) {
            self.requeue(items);
            return Err(e);
        }
        *next += records.len() as u64;
        Ok(Some(*next - 1))
    }

    /// The writer: writes what rooms hand over, makes it durable, then announces it. Ends at
    /// shutdown; what rooms hand over while they close is written by the server's last call to
    /// [`Feed::write_pending`] before its final flush.
    pub(crate) async fn run(self: Arc<Self>, log: Arc<dyn DurableLog>, shutdown: Shutdown) {
        let mut unflushed: Option<u64> = None;
        loop {
            if unflushed.is_none() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = shutdown.triggered() => return,
                }
            }
            let failed = match self.write_pending().await {
                Ok(written) => {
                    unflushed = written.or(unflushed);
                    match unflushed {
                        // A failed store never flushes again, so the wait ends with the server.
                        Some(last) => tokio::select! {
                            announced = self.announce(&log, last) => announced.err(),
                            () = shutdown.triggered() => return,
                        },
                        None => None,
                    }
                }
                Err(e) => Some(format!("writing events failed: {e}")),
            };
            match failed {
                None => unflushed = None,
                Some(error) => {
                    warn!(%error, "change feed: retrying");
                    // A failed store fails every retry: the loop must still let shutdown through.
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.triggered() => return,
                    }
                }
            }
        }
    }

    /// Puts `items` back in front of anything handed over meanwhile, in order.
    fn requeue(&self, items: Vec<Pending>) {
        let mut q = lock(&self.queue);
        let newer = std::mem::take(&mut q.items);
        q.updated.clear();
        q.items = items;
        q.items.extend(newer);
    }

    /// Makes everything up to `last` durable, then lets readers see it.
    ///
    /// The events ride on the store's next flush (a room's, or the periodic one within
    /// `--relaxed-flush-ms`) rather than forcing one each: what they say is already durable in
    /// the rooms' marks, which a restart turns into the same events. A flush per handover made
    /// a server of 100 busy rooms fsync 230 times a second in relaxed mode instead of 20.
    async fn announce(&self, log: &Arc<dyn DurableLog>, last: u64) -> Result<(), String> {
        log.durable(Durability::Relaxed)
            .await
            .map_err(|e| format!("flushing events failed: {e}"))?;
        self.head.send_replace(last);
        Ok(())
    }

    /// Removes events older than `keep`, every so often, until shutdown.
    pub(crate) async fn prune(self: Arc<Self>, keep: Duration, shutdown: Shutdown) {
        let every = (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.triggered() => return,
            }
            let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
            let cutoff = rfc3339(now_ms().saturating_sub(keep_ms));
            let feed = self.clone();
            match tokio::task::spawn_blocking(move || feed.log.prune(&cutoff)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => info!(removed = n, "change feed: pruned old events"),
                Ok(Err(e)) => warn!(error = %e, "change feed: pruning failed"),
                Err(e) => warn!(error = %e, "change feed: pruning task failed"),
            }
        }
    }
}

/// The events marks with `owed` flags stand for: its creation, its state (`(size,
/// text_length, title)`, if it still exists) and its deletion, as the flags say.
fn recovered(doc: &str, owed: u8, state: Option<(u64, u64, String)>) -> Vec<Event> {
    let mut events = Vec::new();
    if owed & flags::CREATED != 0 {
        events.push(Event::DocumentCreated { doc: doc.into() });
    }
    if let (true, Some((size, text_length, title))) = (owed & flags::UPDATED != 0, state) {
        events.push(Event::DocumentUpdated {
            doc: doc.into(),
            size,
            text_length,
            authors: Vec::new(),
            title,
        });
    }
    if owed & flags::DELETED != 0 {
        events.push(Event::DocumentDeleted { doc: doc.into() });
    }
    events
}

/// Folds a newer `document.updated` of the same document into `into`: the newest state, the
/// authors of both.
fn merge(into: &mut Pending, newer: Event, settles: Vec<(u64, String)>) {
    if let (
        Some(Event::DocumentUpdated { authors: old, .. }),
        Event::DocumentUpdated {
            doc,
            size,
            text_length,
            mut authors,
            title,
        },
    ) = (&into.event, newer)
    {
        authors.extend(old.iter().cloned());
        authors.sort();
        authors.dedup();
        into.event = Some(Event::DocumentUpdated {
            doc,
            size,
            text_length,
            authors,
            title,
        });
    }
    into.settles.extend(settles);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a push, a take or a swap: a panic cannot leave it half done.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
