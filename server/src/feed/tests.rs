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
    let mark = feed.mark("a", flags::CREATED | flags::UPDATED);
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
async fn marks_left_behind_are_owed_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let feed = Feed::open(db.open_tree("feed").expect("tree")).expect("feed");
    feed.mark("kept", flags::CREATED | flags::UPDATED);
    feed.mark("gone", flags::CREATED | flags::UPDATED);
    feed.mark("gone", flags::DELETED);
    drop(feed);
    let feed = Feed::open(db.open_tree("feed").expect("tree")).expect("reopen");
    assert_eq!(feed.recover().expect("recover"), ["kept"]);
    let (owed, marks) = feed.take_owed("kept").expect("owed");
    assert_eq!(owed, flags::CREATED | flags::UPDATED);
    assert_eq!(marks.len(), 1);
    feed.write_pending().await.expect("write");
    let kinds: Vec<_> = all(&feed).iter().map(|r| r.event.kind()).collect();
    assert_eq!(kinds, ["document.created", "document.deleted"]);
    let left: Vec<_> = feed.log().marks().expect("marks");
    assert_eq!(
        left.len(),
        1,
        "only the mark of the document still to load stays"
    );
    assert_eq!(left[0].doc, "kept");
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
