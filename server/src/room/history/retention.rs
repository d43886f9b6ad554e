//! Retention: versions younger than `--history-keep-days` are all kept. Older unnamed versions
//! are thinned: for the next 7 days to the last version of each UTC hour, after that to the last
//! of each UTC day. Named versions and the newest version are never thinned.
//!
//! A kept version whose predecessor goes is rewritten first as a keyframe (its whole text) with
//! its delta, counts and authors taken against the version now before it, so every remaining
//! version still rebuilds and diffs exactly.

use std::collections::{BTreeSet, HashSet};

use weft_protocol::RoomName;

use super::{delta, History, HistoryError};
use crate::store::history::{VersionBody, VersionMeta};

/// Milliseconds in an hour.
const HOUR_MS: u64 = 3_600_000;
/// Milliseconds in a day.
const DAY_MS: u64 = 24 * HOUR_MS;
/// Days after the kept period during which one version per hour survives.
const HOURLY_DAYS: u64 = 7;

/// The ids of `metas` (oldest first) that retention removes at `now_ms`.
pub(crate) fn doomed(metas: &[VersionMeta], now_ms: u64, keep_days: u64) -> HashSet<u64> {
    let keep_ms = keep_days.saturating_mul(DAY_MS);
    let hourly_ms = keep_ms.saturating_add(HOURLY_DAYS * DAY_MS);
    let newest = metas.last().map(|m| m.id);
    let mut seen_buckets = BTreeSet::new();
    let mut out = HashSet::new();
    // Newest first: the first version met in a bucket is its last, the one kept.
    for m in metas.iter().rev() {
        let age = now_ms.saturating_sub(m.created_ms);
        if age <= keep_ms || m.name.is_some() || Some(m.id) == newest {
            continue;
        }
        let bucket = if age <= hourly_ms {
            (0u8, m.created_ms / HOUR_MS)
        } else {
            (1u8, m.created_ms / DAY_MS)
        };
        if !seen_buckets.insert(bucket) {
            out.insert(m.id);
        }
    }
    out
}

/// Applies retention to `doc`'s history at `now_ms`; returns how many versions went.
pub(crate) fn thin(
    history: &History,
    doc: &RoomName,
    now_ms: u64,
    keep_days: u64,
) -> Result<usize, HistoryError> {
    let metas = history.store.list(doc)?;
    let gone = doomed(&metas, now_ms, keep_days);
    if gone.is_empty() {
        return Ok(0);
    }
    let ids: Vec<u64> = metas.iter().map(|m| m.id).collect();
    let mut prev_kept: Option<&VersionMeta> = None;
    let mut absorbed: Vec<String> = Vec::new();
    for (i, m) in metas.iter().enumerate() {
        if gone.contains(&m.id) {
            absorbed.extend(m.authors.iter().cloned());
            continue;
        }
        let lost_predecessor = i > 0 && gone.contains(&ids[i - 1]);
        if lost_predecessor {
            rebase(history, doc, &ids, prev_kept, m, &absorbed)?;
        }
        absorbed.clear();
        prev_kept = Some(m);
    }
    for id in &gone {
        history.store.remove(doc, *id)?;
    }
    Ok(gone.len())
}

/// Rewrites `m` as a keyframe whose delta, counts and authors are against `prev` (the version
/// before it once the thinned ones are gone), the authors of those in `absorbed`.
fn rebase(
    history: &History,
    doc: &RoomName,
    ids: &[u64],
    prev: Option<&VersionMeta>,
    m: &VersionMeta,
    absorbed: &[String],
) -> Result<(), HistoryError> {
    let text = history.text_among(doc, m.id, ids)?;
    let old = match prev {
        Some(p) => history.text_among(doc, p.id, ids)?,
        None => String::new(),
    };
    let ops = delta::between(&old, &text);
    let (inserted, deleted) = delta::counts(&ops);
    let authors: BTreeSet<String> = absorbed.iter().chain(&m.authors).cloned().collect();
    let meta = VersionMeta {
        inserted,
        deleted,
        authors: authors.into_iter().collect(),
        ..m.clone()
    };
    let body = VersionBody {
        text: Some(text),
        ops,
    };
    history.store.put(doc, &meta, &body)?;
    Ok(())
}
