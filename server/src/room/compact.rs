//! Keeping the stored form small and described: compaction (the log merged into one snapshot,
//! atomically, once it is both long and as large as the snapshot) and the title listings show
//! (the first line, refreshed a little after edits). Both write through the `Store` directly:
//! they rewrite what the log holds rather than add to it.

use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, warn};
use weft_protocol::RoomName;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use crate::room::load::text_of;
use crate::room::registry::RoomContext;
use crate::room::yrs_guards::contain;
use crate::room::Room;

/// Most characters of a title given through the API; a longer one is refused.
pub(crate) const MAX_TITLE_CHARS: usize = 200;

/// Characters of the first line a title derived from the text keeps (well under
/// [`MAX_TITLE_CHARS`]).
const FIRST_LINE_TITLE_CHARS: usize = 80;

/// The first non-empty line of a document, trimmed to 80 characters, as its title; a Markdown
/// heading's title is its text without the `#`s (as the editor shows it).
pub(crate) fn title_of(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(|l| without_heading_marks(l.trim()))
        .find(|l| !l.is_empty())?;
    Some(line.chars().take(FIRST_LINE_TITLE_CHARS).collect())
}

/// `line` without a leading Markdown heading mark: one to six `#`s and the space after them.
fn without_heading_marks(line: &str) -> &str {
    let rest = line.trim_start_matches('#');
    let marks = line.len() - rest.len();
    if (1..=6).contains(&marks) && rest.starts_with(char::is_whitespace) {
        rest.trim_start()
    } else {
        line
    }
}

/// What writing a snapshot gave: its size and the title written with it, or why it failed
/// (`None`: yrs panicked encoding the document).
type Compacted = Result<(u64, Option<String>), Option<String>>;

/// Encodes `doc` and replaces the log of `name` up to `upto` with it; on a blocking thread.
fn write_snapshot(doc: &Doc, ctx: &RoomContext, name: &RoomName, upto: u64) -> Compacted {
    let encoded = contain(|| {
        let snapshot = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        (snapshot, title_of(&text_of(doc)))
    });
    let Ok((snapshot, title)) = encoded else {
        return Err(None);
    };
    match ctx.store.compact(name, &snapshot, upto, title.as_deref()) {
        Ok(()) => Ok((snapshot.len() as u64, title)),
        Err(e) => Err(Some(e.to_string())),
    }
}

impl Room {
    /// Whether the log is due for compaction. Compacting re-encodes the whole document: wait
    /// until the log is at least as large as the snapshot as well, so a big document is not
    /// rewritten for every few hundred keystrokes (the cost stays proportional to what was
    /// written).
    pub(super) fn compaction_due(&self) -> bool {
        self.log_len >= self.ctx.config.compact_every
            && self.log_bytes.saturating_mul(2) >= self.stored_bytes
    }

    /// Writes the document's first line to its metadata if it changed.
    pub(super) fn refresh_title(&mut self, now: Instant) {
        self.title_stale = false;
        self.title_checked = now;
        let title = contain(|| title_of(&self.text())).ok().flatten();
        if title.is_none() || title == self.title {
            return;
        }
        match self
            .ctx
            .store
            .set_title(&self.name, title.as_deref().unwrap_or_default())
        {
            Ok(()) => self.title = title,
            Err(e) => warn!(room = %self.name, error = %e, "could not update the title"),
        }
    }

    /// Merges the log into one snapshot, atomically. A deleted document is never compacted:
    /// the snapshot would write it back.
    pub(super) async fn compact(&mut self) {
        if self.log_len == 0 || self.deleted || self.failed.is_some() {
            return;
        }
        // A failed store refuses the snapshot at once; a wedged sled is best left alone.
        if let Some(reason) = self.store_failure() {
            debug!(room = %self.name, %reason, "store failed; not compacting");
            return;
        }
        let (doc, ctx, name, upto) = (
            self.doc.clone(),
            Arc::clone(&self.ctx),
            self.name.clone(),
            self.last_seq,
        );
        // Encoding and writing a large document takes long enough to stall every task sharing
        // this runtime thread; on a blocking thread only this room (which waits for it) pauses.
        let done =
            tokio::task::spawn_blocking(move || write_snapshot(&doc, &ctx, &name, upto)).await;
        match done {
            Ok(Ok((bytes, title))) => {
                debug!(room = %self.name, upto, bytes, "compacted");
                self.log_len = 0;
                self.log_bytes = 0;
                self.stored_bytes = bytes;
                if title.is_some() {
                    self.title = title;
                    self.title_stale = false;
                }
            }
            Ok(Err(None)) => {
                error!(room = %self.name, "yrs panicked while compacting; keeping the log");
                self.reload();
            }
            Ok(Err(Some(e))) => {
                error!(room = %self.name, error = %e, "compaction failed; log kept")
            }
            Err(e) => error!(room = %self.name, error = %e, "compaction task failed; log kept"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::title_of;

    /// The title is the first non-empty line, trimmed, without heading marks and cut to 80
    /// characters.
    #[test]
    fn titles() {
        assert_eq!(title_of(""), None);
        assert_eq!(
            title_of("\n  \n  Hello world  \nmore"),
            Some("Hello world".into())
        );
        assert_eq!(title_of(&"é".repeat(100)).unwrap().chars().count(), 80);
        assert_eq!(
            title_of("## Plan for today\nmore"),
            Some("Plan for today".into())
        );
        assert_eq!(title_of("#hashtag"), Some("#hashtag".into()));
        assert_eq!(title_of("####### seven"), Some("####### seven".into()));
        assert_eq!(title_of("# \nNext"), Some("#".into()));
    }
}
