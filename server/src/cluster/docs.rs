//! A document's stored form in the cluster: loading it (snapshot, then the log after it),
//! compaction (a new snapshot, written by one node at a time, then the log purged), deletion.
//!
//! The log is purged only up to the snapshot *before* the new one: a node following the
//! document may still be reading updates the newest snapshot covers, and must find them.

use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tracing::{debug, warn};
use weft_protocol::RoomName;

use crate::cluster::connect::Nats;
use crate::cluster::cursor::LogCursor;
use crate::cluster::names::{log_subject, meta_key, snap_key, snapshot_object};
use crate::store::StoredDoc;

/// Longest wait for the next message of a log being read to its end.
const READ_STALL: Duration = Duration::from_secs(5);

/// Which snapshot object holds a document and the log sequence it covers (JSON, in the bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapPointer {
    /// Stream sequence of the last update the snapshot includes.
    pub(crate) seq: u64,
    /// Name of the object in the snapshot store.
    pub(crate) object: String,
    /// Its size.
    pub(crate) bytes: u64,
}

/// The snapshot pointer of `doc` and its revision.
async fn pointer(nats: &Nats, doc: &str) -> Result<Option<(SnapPointer, u64)>, String> {
    let entry = nats
        .docs
        .entry(snap_key(doc))
        .await
        .map_err(|e| format!("reading the snapshot pointer failed: {e}"))?;
    Ok(entry
        .filter(|e| !e.value.is_empty())
        .and_then(|e| Some((serde_json::from_slice(&e.value).ok()?, e.revision))))
}

/// Loads `doc`: its snapshot with every logged update after it merged in, and the sequence of
/// the last. Merging first makes the order of the log irrelevant (a retried publish may land
/// after a later one). A snapshot object removed by a compaction racing this load makes it
/// read the new pointer once more.
pub(crate) async fn load(nats: &Nats, doc: &RoomName) -> Result<StoredDoc, String> {
    for _ in 0..3 {
        let pointer = pointer(nats, doc.as_str()).await?;
        let snapshot = match &pointer {
            Some((p, _)) => match read_object(nats, &p.object).await {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    debug!(room = %doc, error = %e, "snapshot object gone; reading the pointer again");
                    continue;
                }
            },
            None => None,
        };
        let from = pointer.as_ref().map_or(0, |(p, _)| p.seq);
        let tail = read_log(nats, doc.as_str(), from).await?;
        return Ok(merged(doc, snapshot, from, tail));
    }
    Err(format!(
        "the snapshot of {doc:?} kept changing while it was read"
    ))
}

/// Everything read, as the store's form: one snapshot holding it all.
fn merged(
    doc: &RoomName,
    snapshot: Option<Vec<u8>>,
    from: u64,
    tail: Vec<(u64, Bytes)>,
) -> StoredDoc {
    let covers = tail.last().map_or(from, |(seq, _)| *seq);
    if tail.is_empty() {
        return StoredDoc {
            snapshot,
            updates: Vec::new(),
            covers,
        };
    }
    let parts: Vec<&[u8]> = snapshot
        .iter()
        .map(Vec::as_slice)
        .chain(tail.iter().map(|(_, u)| u.as_ref()))
        .collect();
    match yrs::merge_updates_v1(parts) {
        Ok(all) => StoredDoc {
            snapshot: Some(all),
            updates: Vec::new(),
            covers,
        },
        Err(e) => {
            warn!(room = %doc, error = %e, "log does not merge; loading its updates one by one");
            StoredDoc {
                snapshot,
                updates: tail.into_iter().map(|(s, u)| (s, u.to_vec())).collect(),
                covers: from,
            }
        }
    }
}

/// Reads a whole snapshot object.
async fn read_object(nats: &Nats, name: &str) -> Result<Vec<u8>, String> {
    let mut object = nats
        .snapshots
        .get(name)
        .await
        .map_err(|e| format!("reading snapshot {name} failed: {e}"))?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("reading snapshot {name} failed: {e}"))?;
    Ok(bytes)
}

/// The sequence of the last update logged for `doc`, 0 if none.
pub(crate) async fn last_seq(nats: &Nats, doc: &str) -> Result<u64, String> {
    match nats
        .log
        .get_last_raw_message_by_subject(&log_subject(doc))
        .await
    {
        Ok(msg) => Ok(msg.sequence),
        Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(0),
        Err(e) => Err(format!("reading the log failed: {e}")),
    }
}

/// The updates of `doc` logged after sequence `from`, up to the last one there now.
async fn read_log(nats: &Nats, doc: &str, from: u64) -> Result<Vec<(u64, Bytes)>, String> {
    let last = last_seq(nats, doc).await?;
    let mut out = Vec::new();
    if last <= from {
        return Ok(out);
    }
    let mut cursor = LogCursor::open(nats, doc, from + 1).await?;
    while out.last().is_none_or(|(seq, _)| *seq < last) {
        let (seq, msg) = match tokio::time::timeout(READ_STALL, cursor.next()).await {
            Ok(Ok(next)) => next,
            Ok(Err(e)) => return Err(format!("reading the log failed: {e}")),
            Err(_) => return Err(format!("reading the log stalled for {READ_STALL:?}")),
        };
        out.push((seq, msg.payload.clone()));
    }
    Ok(out)
}

/// Stores `snapshot` as covering `doc`'s log up to `upto`, unless a snapshot at least as new is
/// there: the pointer moves by compare-and-set, so of two nodes compacting at once one wins and
/// the other removes its object. Returns whether this snapshot became the document's.
pub(crate) async fn compact(
    nats: &Nats,
    doc: &str,
    snapshot: &[u8],
    upto: u64,
) -> Result<bool, String> {
    let current = pointer(nats, doc).await?;
    if current.as_ref().is_some_and(|(p, _)| p.seq >= upto) {
        return Ok(false);
    }
    let object = snapshot_object(doc, upto);
    nats.snapshots
        .put(object.as_str(), &mut &snapshot[..])
        .await
        .map_err(|e| format!("writing the snapshot failed: {e}"))?;
    let pointer = SnapPointer {
        seq: upto,
        object: object.clone(),
        bytes: snapshot.len() as u64,
    };
    let value = Bytes::from(serde_json::to_vec(&pointer).unwrap_or_default());
    let moved = match &current {
        Some((_, rev)) => nats.docs.update(snap_key(doc), value, *rev).await.is_ok(),
        None => nats.docs.create(snap_key(doc), value).await.is_ok(),
    };
    if !moved {
        let _ = nats.snapshots.delete(object.as_str()).await;
        return Ok(false);
    }
    if let Some((previous, _)) = current {
        purge_upto(nats, doc, previous.seq).await?;
        if previous.object != object {
            let _ = nats.snapshots.delete(previous.object.as_str()).await;
        }
    }
    Ok(true)
}

/// Removes `doc`'s logged updates up to and including `seq`.
async fn purge_upto(nats: &Nats, doc: &str, seq: u64) -> Result<(), String> {
    nats.log
        .purge()
        .filter(log_subject(doc))
        .sequence(seq + 1)
        .await
        .map(|_| ())
        .map_err(|e| format!("purging the log failed: {e}"))
}

/// Removes everything of `doc`: log, snapshot, metadata. Whether anything existed.
pub(crate) async fn delete(nats: &Nats, doc: &str) -> Result<bool, String> {
    let pointer = pointer(nats, doc).await?;
    let logged = last_seq(nats, doc).await? > 0;
    let meta = nats
        .docs
        .get(meta_key(doc))
        .await
        .map_err(|e| format!("reading metadata failed: {e}"))?
        .is_some_and(|v| !v.is_empty());
    nats.log
        .purge()
        .filter(log_subject(doc))
        .await
        .map_err(|e| format!("purging the log failed: {e}"))?;
    for key in [snap_key(doc), meta_key(doc)] {
        nats.docs
            .purge(key)
            .await
            .map_err(|e| format!("removing metadata failed: {e}"))?;
    }
    if let Some((p, _)) = &pointer {
        let _ = nats.snapshots.delete(p.object.as_str()).await;
    }
    Ok(pointer.is_some() || logged || meta)
}
