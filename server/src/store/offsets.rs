//! Awareness clock offsets of [`SledStore`]: how far the offsets the server adds to relayed
//! awareness clocks have been reserved (see `room::clocks`). One u64 (big-endian) under the key
//! `reserved` in a sled tree of its own, `awareness`, so a restarted process starts above every
//! offset an earlier one may have used.

use super::{SledStore, Store, StoreError};

/// The sled tree holding the reservation.
const TREE: &str = "awareness";

/// The key of the reservation in [`TREE`].
const KEY: &[u8] = b"reserved";

impl SledStore {
    /// Raises the reservation by `count` and flushes; returns where it was (0 if never set).
    pub(super) fn reserve_offsets(&self, count: u64) -> Result<u64, StoreError> {
        self.health.check()?;
        let tree = self
            .db
            .open_tree(TREE)
            .map_err(|e| self.health.fail_on(&e))?;
        let old = tree
            .fetch_and_update(KEY, |old| {
                let old = old.and_then(decode).unwrap_or(0);
                Some(old.saturating_add(count).to_be_bytes().to_vec())
            })
            .map_err(|e| self.health.fail_on(&e))?;
        self.flush()?;
        Ok(old.as_deref().and_then(decode).unwrap_or(0))
    }
}

/// A stored reservation: eight bytes, big-endian.
fn decode(value: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(value).ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reservations survive reopening and only grow.
    #[test]
    fn reservations_are_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open");
            assert_eq!(store.reserve_awareness_offsets(10).expect("reserve"), 0);
            assert_eq!(store.reserve_awareness_offsets(5).expect("reserve"), 10);
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.reserve_awareness_offsets(1).expect("reserve"), 15);
    }
}
