//! Token revocations of [`SledStore`]: for each document, the time (Unix seconds) before which
//! its tokens are refused. They live in a sled tree of their own, `revocations` (key: the
//! document id, value: the time as u64 BE), apart from the documents: deleting a document
//! keeps them, so a document created again under the same id does not bring old tokens back.

use weft_protocol::RoomName;

use super::keys::{check_doc, decode_time};
use super::{SledStore, Store, StoreError};

/// The sled tree holding the revocations.
const TREE: &str = "revocations";

impl SledStore {
    /// Records durably that `doc`'s tokens issued before `before` are refused; an earlier
    /// time than one recorded changes nothing.
    pub(super) fn write_revocation(&self, doc: &RoomName, before: u64) -> Result<(), StoreError> {
        let doc = doc.as_str();
        check_doc(doc)?;
        self.health.check()?;
        let tree = self
            .db
            .open_tree(TREE)
            .map_err(|e| self.health.fail_on(&e))?;
        tree.fetch_and_update(doc.as_bytes(), |old| {
            let old = old.and_then(decode_time).unwrap_or(0);
            Some(before.max(old).to_be_bytes().to_vec())
        })
        .map_err(|e| self.health.fail_on(&e))?;
        self.flush()
    }

    /// Every recorded revocation as `(document, time)`; a record that cannot be decoded is
    /// skipped with an error logged.
    pub(super) fn read_revocations(&self) -> Result<Vec<(String, u64)>, StoreError> {
        super::keys::doc_times(&self.db, TREE, "revocation")
    }
}

#[cfg(test)]
mod tests {
    use weft_protocol::Limits;

    use super::*;

    /// Revocations survive reopening, only move forward, and outlive the document's deletion.
    #[test]
    fn revocations_are_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = RoomName::parse("notes", &Limits::DEFAULT).expect("name");
        {
            let store = SledStore::open(dir.path()).expect("open");
            assert_eq!(store.revocations().expect("read"), vec![]);
            store.revoke_tokens(&doc, 100).expect("revoke");
            store.revoke_tokens(&doc, 50).expect("revoke");
            store.delete(&doc).expect("delete");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.revocations().expect("read"),
            vec![("notes".to_owned(), 100)]
        );
    }
}
