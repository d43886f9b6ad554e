//! The feed's own guarantees, on a real sled tree: seqs strictly increasing and kept across a
//! reopen, marks settled with their events, owed events recovered, coalescing, pruning; and a
//! cluster's feed appending each event once, in order, and mirroring what its log numbered.

use super::*;
use crate::feed::event::Record;

fn updated(doc: &str, text_length: u64, author: &str) -> Event {
    Event::DocumentUpdated {
        doc: doc.into(),
        size: text_length,
        text_length,
        authors: vec![author.into()],
        title: String::new(),
    }
}

fn all(feed: &Feed) -> Vec<Record> {
    feed.log()
        .read((0, u64::MAX), 1000, None, 1000)
        .expect("read")
        .0
}

#[tokio::test]
async fn seqs_increase_across_reopen_and_marks_settle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let feed = Feed::open(db.open_tree("feed").expect("tree")).expect("feed");
    let mark = feed.new_mark();
    feed.mark(mark, "a", flags::CREATED | flags::UPDATED, (1, "a"));
    feed.report(
        vec![
            Event::DocumentCreated { doc: "a".into() },
            updated("a", 1, "al"),
        ],
        vec![(mark, "a".into())],
    );
    // Coalesced into the update still queued: one event, newest state, both authors.
    feed.report(vec![updated("a", 5, "bo")], Vec::new());
    feed.record(Event::VersionCreated {
        doc: "a".into(),
        version: 1,
        authors: vec!["al".into()],
    });
    assert_eq!(feed.write_pending().await.expect("write"), Some(3));
    let events = all(&feed);
    assert_eq!(events.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        events[1].event,
        Event::DocumentUpdated {
            doc: "a".into(),
            size: 5,
            text_length: 5,
            authors: vec!["al".into(), "bo".into()],
            title: String::new(),
        }
    );
    assert!(
        feed.log().marks().expect("marks").is_empty(),
        "mark not settled"
    );
    drop(feed);
    let feed = Feed::open(db.open_tree("feed").expect("tree")).expect("reopen");
    assert_eq!(*feed.head().borrow(), 3);
    feed.record(Event::DocumentDeleted { doc: "a".into() });
    assert_eq!(feed.write_pending().await.expect("write"), Some(4));
}

#[tokio::test]
async fn marks_left_behind_are_recorded_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let feed = Feed::open(db.open_tree("feed").expect("tree")).expect("feed");
    let both = flags::CREATED | flags::UPDATED;
    let kept = feed.new_mark();
    feed.mark(kept, "kept", both, (3, "Tit"));
    // Rewritten before a later flush: the newest length counts.
    feed.mark(kept, "kept", both, (7, "Title"));
    let gone = feed.new_mark();
    feed.mark(gone, "gone", both, (2, "go"));
    let deleted = feed.new_mark();
    feed.mark(deleted, "gone", flags::DELETED, (0, ""));
    drop(feed);
    let feed = Feed::open(db.open_tree("feed").expect("tree")).expect("reopen");
    let size = |doc: &str| (doc == "kept").then_some(40);
    assert_eq!(feed.recover(size).expect("recover"), 3);
    feed.write_pending().await.expect("write");
    let events: Vec<Event> = all(&feed).into_iter().map(|r| r.event).collect();
    assert_eq!(
        events,
        [
            Event::DocumentCreated { doc: "gone".into() },
            Event::DocumentDeleted { doc: "gone".into() },
            Event::DocumentCreated { doc: "kept".into() },
            Event::DocumentUpdated {
                doc: "kept".into(),
                size: 40,
                text_length: 7,
                authors: Vec::new(),
                title: "Title".into(),
            },
        ]
    );
    assert!(feed.log().marks().expect("marks").is_empty());
}

#[tokio::test]
async fn a_version_mark_left_behind_is_announced_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let feed = Feed::open(db.open_tree("feed").expect("tree")).expect("feed");
    let authors = vec!["ada".to_owned(), "bo".to_owned()];
    feed.owe_version("doc", 7, &authors);
    drop(feed);
    let feed = Feed::open(db.open_tree("feed").expect("tree")).expect("reopen");
    assert_eq!(feed.recover(|_| Some(1)).expect("recover"), 1);
    feed.write_pending().await.expect("write");
    let events: Vec<Event> = all(&feed).into_iter().map(|r| r.event).collect();
    assert_eq!(
        events,
        [Event::VersionCreated {
            doc: "doc".into(),
            version: 7,
            authors,
        }]
    );
    assert!(feed.log().marks().expect("marks").is_empty());
}

#[tokio::test]
async fn pruning_keeps_the_newest_and_remembers_what_it_removed() {
    let feed = Feed::in_memory();
    for i in 0..5 {
        feed.record(Event::DocumentDeleted {
            doc: format!("d{i}"),
        });
    }
    feed.write_pending().await.expect("write");
    assert_eq!(feed.log().pruned().expect("pruned"), 0);
    let removed = feed.log().prune("9999-01-01T00:00:00.000Z").expect("prune");
    assert_eq!(removed, 4, "the newest event stays");
    assert_eq!(feed.log().pruned().expect("pruned"), 4);
    assert_eq!(feed.log().oldest().expect("oldest"), Some(5));
}

/// A shared log in memory for the writer's side of a cluster's feed: numbers appends from 1,
/// stores a repeated id once (as JetStream's duplicate window does), and can lose the
/// acknowledgement of an append that did land.
#[derive(Default)]
struct MemoryLog {
    state: Mutex<(Vec<shared::Outgoing>, bool)>,
}

impl SharedLog for MemoryLog {
    fn append(
        &self,
        out: shared::Outgoing,
    ) -> futures_util::future::BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            let mut s = lock(&self.state);
            if let Some(i) = s.0.iter().position(|o| o.id == out.id) {
                return Ok(i as u64 + 1);
            }
            s.0.push(out);
            if std::mem::take(&mut s.1) {
                return Err("acknowledgement lost".into());
            }
            Ok(s.0.len() as u64)
        })
    }

    fn queue(
        &self,
        _: String,
        _: Duration,
    ) -> futures_util::future::BoxFuture<'_, Result<Box<dyn shared::SharedQueue>, String>> {
        Box::pin(async { Err("no queues here".to_owned()) })
    }

    fn rewind(
        &self,
        _: String,
        _: u64,
        _: Duration,
    ) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("no queues here".to_owned()) })
    }
}

#[tokio::test]
async fn a_cluster_feed_appends_once_in_order_and_mirrors_what_the_log_numbered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let log = Arc::new(MemoryLog::default());
    let tree = |name: &str| db.open_tree(name).expect("tree");
    let feed = Feed::open_shared(tree("feed"), tree("mirror"), log.clone()).expect("feed");
    let mark = feed.new_mark();
    feed.mark(mark, "a", flags::CREATED | flags::UPDATED, (1, "a"));
    feed.report(
        vec![
            Event::DocumentCreated { doc: "a".into() },
            updated("a", 1, "al"),
        ],
        vec![(mark, "a".into())],
    );
    feed.record(Event::DocumentDeleted { doc: "b".into() });
    // The first append lands but its acknowledgement is lost: everything stays queued.
    lock(&log.state).1 = true;
    assert!(feed.write_pending().await.is_err());
    assert_eq!(
        feed.marks.marks().expect("marks").len(),
        1,
        "not settled yet"
    );
    assert_eq!(feed.write_pending().await.expect("retry"), None);
    let stored: Vec<Event> = lock(&log.state).0.iter().map(|o| o.event.clone()).collect();
    assert_eq!(
        stored,
        [
            Event::DocumentCreated { doc: "a".into() },
            updated("a", 1, "al"),
            Event::DocumentDeleted { doc: "b".into() },
        ],
        "each event once, in order"
    );
    assert!(feed.marks.marks().expect("marks").is_empty(), "settled");
    assert!(all(&feed).is_empty(), "readers see the mirror only");
    // The mirror records what the log numbered, and readers see it under those seqs.
    let records: Vec<Record> = lock(&log.state)
        .0
        .iter()
        .enumerate()
        .map(|(i, o)| Record {
            seq: i as u64 + 1,
            at: o.at.clone(),
            event: o.event.clone(),
        })
        .collect();
    feed.mirrored(&records).expect("mirror");
    assert_eq!(*feed.head().borrow(), 3);
    assert_eq!(all(&feed), records);
    assert_eq!(feed.mirror_next().expect("next"), 4);
    // Events the log dropped before the mirror saw them count as pruned.
    feed.mirror_missed(10).expect("missed");
    assert_eq!(feed.mirror_next().expect("next"), 10);
    assert_eq!(feed.log().pruned().expect("pruned"), 9);
}
