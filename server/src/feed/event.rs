//! The change feed's events: what happened to which document, and the record the log keeps of
//! each (its `seq` and `at` added). The JSON of a [`Record`] is what `GET /api/changes`, the
//! Server-Sent Events stream and every webhook POST carry, byte for byte.

use serde::{Deserialize, Serialize};

/// One change to a document, before the feed numbered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum Event {
    /// The document came into being (created through the API, or by the first write to it).
    #[serde(rename = "document.created")]
    DocumentCreated {
        /// The document id.
        doc: String,
    },
    /// The document's text changed; one event covers every change of one debounce window.
    #[serde(rename = "document.updated")]
    DocumentUpdated {
        /// The document id.
        doc: String,
        /// Bytes the document takes in the store (snapshot plus update log).
        size: u64,
        /// Length of the text in UTF-16 code units (as editors and Yjs count it).
        text_length: u64,
        /// Who wrote since the previous event of this document, in name order.
        authors: Vec<String>,
        /// The first non-empty line of the text (empty when there is none).
        title: String,
    },
    /// The document was deleted: moved to the trash (a purge from the trash later is not
    /// reported again).
    #[serde(rename = "document.deleted")]
    DocumentDeleted {
        /// The document id.
        doc: String,
    },
    /// The document was restored from the trash, with its content and history.
    #[serde(rename = "document.restored")]
    DocumentRestored {
        /// The document id.
        doc: String,
    },
    /// Version history recorded a version of the document.
    #[serde(rename = "version.created")]
    VersionCreated {
        /// The document id.
        doc: String,
        /// The version's number in the document's history.
        version: u64,
        /// Who wrote since the previous version, in name order.
        authors: Vec<String>,
    },
}

impl Event {
    /// The document the event is about.
    pub(crate) fn doc(&self) -> &str {
        match self {
            Event::DocumentCreated { doc }
            | Event::DocumentUpdated { doc, .. }
            | Event::DocumentDeleted { doc }
            | Event::DocumentRestored { doc }
            | Event::VersionCreated { doc, .. } => doc,
        }
    }

    /// The event's type, as `type` in its JSON and `event:` in the SSE stream.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Event::DocumentCreated { .. } => "document.created",
            Event::DocumentUpdated { .. } => "document.updated",
            Event::DocumentDeleted { .. } => "document.deleted",
            Event::DocumentRestored { .. } => "document.restored",
            Event::VersionCreated { .. } => "version.created",
        }
    }
}

/// An event as the feed recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Its place in the feed: global, strictly increasing, never reused.
    pub(crate) seq: u64,
    /// When it was recorded (RFC 3339, UTC, milliseconds).
    pub(crate) at: String,
    /// What happened.
    #[serde(flatten)]
    pub(crate) event: Event,
}

/// `ms` (Unix milliseconds) as RFC 3339 in UTC, e.g. `2026-12-05T10:57:23.120Z`.
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The proleptic Gregorian date of day `z` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_464_643_000), "2026-12-05T09:57:23.000Z");
    }

    #[test]
    fn records_are_flat_json() {
        let r = Record {
            seq: 7,
            at: rfc3339(0),
            event: Event::DocumentUpdated {
                doc: "d".into(),
                size: 10,
                text_length: 3,
                authors: vec!["al".into()],
                title: "abc".into(),
            },
        };
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["type"], "document.updated");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["title"], "abc");
        let back: Record = serde_json::from_value(json).expect("parse");
        assert_eq!(back, r);
    }
}
