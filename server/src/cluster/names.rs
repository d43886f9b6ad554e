//! Where a document's pieces live in NATS: subjects of its update log and its awareness, keys of
//! its records in the key-value bucket, names of its snapshot objects. Document ids are any
//! UTF-8 (dots, spaces, slashes), which NATS subjects and keys do not allow, so each id appears
//! as lowercase hex of its bytes.

use weft_protocol::{Limits, RoomName};

/// The stream holding every document's update log, one message per update.
pub(crate) const LOG_STREAM: &str = "WEFT_LOG";
/// The subjects of [`LOG_STREAM`].
pub(crate) const LOG_SUBJECTS: &str = "weft.log.>";
/// The key-value bucket of metadata, snapshot pointers, trash, revocations and refusals.
pub(crate) const DOCS_BUCKET: &str = "WEFT_DOCS";
/// The object store of compaction snapshots.
pub(crate) const SNAPSHOT_BUCKET: &str = "WEFT_SNAPSHOTS";
/// Header naming the node that published an update, so its followers skip their own.
pub(crate) const NODE_HEADER: &str = "Weft-Node";

/// `doc` as lowercase hex: a single subject token and a valid key.
pub(crate) fn hex(doc: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(doc.len() * 2);
    for b in doc.as_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The bytes `hex` spells (lowercase or uppercase, two digits a byte), if it is hex.
pub(crate) fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The document id `hex` stands for, if it is hex of a valid room name.
pub(crate) fn unhex(hex: &str) -> Option<RoomName> {
    let bytes = hex_bytes(hex)?;
    let limits = Limits {
        max_room_name: usize::MAX,
        ..Limits::DEFAULT
    };
    RoomName::parse(&String::from_utf8(bytes).ok()?, &limits).ok()
}

/// The subject of `doc`'s update log.
pub(crate) fn log_subject(doc: &str) -> String {
    format!("weft.log.{}", hex(doc))
}

/// The core NATS subject where nodes exchange `doc`'s awareness.
pub(crate) fn awareness_subject(doc: &str) -> String {
    format!("weft.aw.{}", hex(doc))
}

/// The core NATS subject where nodes announce token revocations.
pub(crate) const REVOKED_SUBJECT: &str = "weft.revoked";

/// Key of `doc`'s metadata record.
pub(crate) fn meta_key(doc: &str) -> String {
    format!("meta.{}", hex(doc))
}

/// Key of `doc`'s snapshot pointer (which object, covering which log sequence).
pub(crate) fn snap_key(doc: &str) -> String {
    format!("snap.{}", hex(doc))
}

/// Key marking `doc` as in the trash.
pub(crate) fn trash_key(doc: &str) -> String {
    format!("trash.{}", hex(doc))
}

/// Key of `doc`'s token revocation time.
pub(crate) fn revoke_key(doc: &str) -> String {
    format!("revoke.{}", hex(doc))
}

/// Key of a refused update hash.
pub(crate) fn refused_key(hash: &[u8; 32]) -> String {
    format!("refused.{}", crate::store::inflight::hex(hash))
}

/// Key of the cluster-wide reservation of awareness clock offsets.
pub(crate) const OFFSETS_KEY: &str = "awareness.offsets";

/// A fresh name for a snapshot object of `doc` covering the log up to `seq`. Unique per
/// write: two nodes compacting at the same position each write their own object, so the one
/// whose pointer update loses removes only its own (with one name for both, it removed the
/// winner's, and the document could no longer load).
pub(crate) fn snapshot_object(doc: &str, seq: u64) -> String {
    format!("{}.{seq}.{}", hex(doc), uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex() {
        for id in ["a", "notes 2026 plan.md", "ünï.cødé", "x\u{1F600}"] {
            let name = RoomName::parse(id, &Limits::DEFAULT).expect("valid");
            assert_eq!(unhex(&hex(id)).as_ref(), Some(&name), "{id}");
        }
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
        assert!(log_subject("a.b").ends_with("612e62"));
        assert_ne!(snapshot_object("a", 5), snapshot_object("a", 5));
        assert!(snapshot_object("a", 5).starts_with("61.5."));
    }
}
