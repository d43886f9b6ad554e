//! The feed's own guarantees, on a real sled tree: seqs strictly increasing and kept across a
//! reopen, marks settled with their events, owed events recovered, coalescing, pruning.

use super::*;

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
