//! The trash of [`SledStore`]: documents moved there by a delete, with the time they were
//! moved. They live in a sled tree of their own, `trash` (key: the document id, value: the
//! time in Unix milliseconds as u64 BE), apart from the documents: moving a document to the
//! trash or back is one small write that leaves its content and history untouched, and a
//! purge removes the record only after the content is gone.
//!
//! Records are written through sled like the documents and made durable by the next
//! [`Store::flush`](super::Store::flush); callers that answer a client flush first.

use weft_protocol::RoomName;

use super::keys::{check_doc, decode_time};
use super::{SledStore, StoreError};

/// The sled tree holding the trash records.
const TREE: &str = "trash";

impl SledStore {
    /// The trash tree.
    fn trash_tree(&self) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(TREE).map_err(|e| self.health.fail_on(&e))
    }

    /// Records that `doc` is in the trash since `at_ms`; a document already there keeps
    /// its first time, so deleting twice does not postpone its purge.
    pub(super) fn write_trashed(&self, doc: &RoomName, at_ms: u64) -> Result<(), StoreError> {
        let doc = doc.as_str();
        check_doc(doc)?;
        self.health.check()?;
        let tree = self.trash_tree()?;
        let _ = tree
            .compare_and_swap(
                doc.as_bytes(),
                None::<&[u8]>,
                Some(&at_ms.to_be_bytes()[..]),
            )
            .map_err(|e| self.health.fail_on(&e))?;
        Ok(())
    }

    /// Removes `doc`'s trash record; `true` if there was one.
    pub(super) fn remove_trashed(&self, doc: &RoomName) -> Result<bool, StoreError> {
        self.health.check()?;
        let tree = self.trash_tree()?;
        let old = tree
            .remove(doc.as_str().as_bytes())
            .map_err(|e| self.health.fail_on(&e))?;
        Ok(old.is_some())
    }

    /// When `doc` was moved to the trash, or `None` if it is not there.
    pub(super) fn read_trashed(&self, doc: &RoomName) -> Result<Option<u64>, StoreError> {
        let tree = self.db.open_tree(TREE)?;
        Ok(tree
            .get(doc.as_str().as_bytes())?
            .as_deref()
            .and_then(decode_time))
    }

    /// Every trash record as `(document, time)`, sorted by id; a record that cannot be
    /// decoded is skipped with an error logged.
    pub(super) fn read_trash(&self) -> Result<Vec<(String, u64)>, StoreError> {
        super::keys::doc_times(&self.db, TREE, "trash")
    }
}

#[cfg(test)]
mod tests {
    use weft_protocol::Limits;

    use super::*;
    use crate::store::Store;

    /// Trash records survive reopening, keep their first time, and go on restore.
    #[test]
    fn trash_records_are_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = RoomName::parse("notes", &Limits::DEFAULT).expect("name");
        {
            let store = SledStore::open(dir.path()).expect("open");
            assert_eq!(store.trash().expect("read"), vec![]);
            store.move_to_trash(&doc, 100).expect("trash");
            store.move_to_trash(&doc, 200).expect("trash again");
            store.flush().expect("flush");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.trashed(&doc).expect("read"), Some(100));
        assert_eq!(
            store.trash().expect("read"),
            vec![("notes".to_owned(), 100)]
        );
        assert!(store.take_from_trash(&doc).expect("restore"));
        assert!(!store.take_from_trash(&doc).expect("restore again"));
        assert_eq!(store.trashed(&doc).expect("read"), None);
    }
}
