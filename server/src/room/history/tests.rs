//! Recording, rebuilding, diffing and thinning versions on a real sled tree.

use weft_protocol::{Limits, RoomName};

use super::retention::doomed;
use super::*;

fn history() -> (tempfile::TempDir, History) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let store = HistoryStore::open(&db, 4096).expect("open");
    (dir, History::new(store))
}

fn capture(at_ms: u64, text: &str, author: &str) -> Capture {
    Capture {
        at_ms,
        name: None,
        authors: vec![author.into()],
        seq: at_ms,
        text: text.into(),
    }
}

/// Past the keyframe interval every version rebuilds exactly; unchanged unnamed captures are
/// not recorded; diffs name the single author of the versions they span.
#[test]
fn record_rebuild_and_diff() {
    let (_dir, h) = history();
    let doc = RoomName::parse("doc", &Limits::DEFAULT).expect("name");
    let mut cursor = Cursor::default();
    let mut texts = Vec::new();
    for i in 0..(KEYFRAME_EVERY * 2 + 3) {
        let text = format!(
            "{}line {i} é👋\n",
            texts.last().cloned().unwrap_or_default()
        );
        let author = if i % 2 == 0 { "ada" } else { "bob" };
        let meta = h.record(&doc, &mut cursor, capture(i + 1, &text, author));
        assert!(meta.expect("record").is_some());
        texts.push(text);
    }
    let same = capture(1000, texts.last().expect("text"), "ada");
    assert_eq!(h.record(&doc, &mut cursor, same).expect("record"), None);
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(&h.text(&doc, i as u64 + 1).expect("text"), text);
    }
    let chunks = h.diff(&doc, 3, None).expect("diff");
    assert!(chunks
        .iter()
        .any(|c| c.kind == Kind::Insert && c.author.as_deref() == Some("ada")));
    let wide = h.diff(&doc, 5, Some(1)).expect("diff");
    assert!(wide.iter().all(|c| c.author.is_none()));
    assert!(matches!(
        h.diff(&doc, 999, None),
        Err(HistoryError::NoVersion)
    ));
}

/// Thinning keeps the recent period, one per hour then one per day, every named version and
/// the newest; the versions left still rebuild exactly.
#[test]
fn retention_thins_and_rebases() {
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    let (_dir, h) = history();
    let doc = RoomName::parse("doc", &Limits::DEFAULT).expect("name");
    let now = 100 * DAY;
    let mut cursor = Cursor::default();
    let mut texts = Vec::new();
    // Three versions in each of two hours 33 days ago, three on each of two days 60 days ago
    // (one named), and a recent one.
    let mut times = Vec::new();
    for day in [33u64, 60] {
        for slot in [0, 1] {
            for k in 0..3 {
                let span = if day == 33 { HOUR } else { DAY };
                times.push(now - day * DAY + slot * span + k * 60_000);
            }
        }
    }
    times.sort_unstable();
    times.push(now - HOUR);
    for (i, at) in times.iter().enumerate() {
        let text = format!("{}v{i} ", texts.last().cloned().unwrap_or_default());
        let mut c = capture(*at, &text, "ada");
        if i == 1 {
            c.name = Some("keep me".into());
        }
        h.record(&doc, &mut cursor, c).expect("record");
        texts.push(text);
    }
    let metas = h.list(&doc).expect("list");
    let gone = doomed(&metas, now, 30);
    // Day-old pairs: 6 versions over 2 days, one named: 2 daily survivors + the named one.
    // Hour-old: 6 versions over 2 hours: 2 hourly survivors. The recent one stays.
    assert_eq!(gone.len(), 12 - 5, "{gone:?}");
    assert!(!gone.contains(&2), "named versions stay");
    assert_eq!(thin(&h, &doc, now, 30).expect("thin"), gone.len());
    let left = h.list(&doc).expect("list");
    assert_eq!(left.len(), 13 - gone.len());
    for m in &left {
        let text = h.text(&doc, m.id).expect("text");
        assert_eq!(text, texts[m.id as usize - 1], "version {}", m.id);
        let chunks = h.diff(&doc, m.id, None).expect("diff");
        let newer: String = chunks
            .iter()
            .filter(|c| c.kind != Kind::Delete)
            .map(|c| c.text.as_str())
            .collect();
        assert_eq!(newer, text);
    }
}
