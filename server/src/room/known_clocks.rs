//! The document's clock per client, kept beside it, so the guards against updates yrs would
//! apply out of order (`yrs_guards`) look up the clients an update touches instead of
//! building the whole state vector for every update: the state vector has an entry for every
//! client the document ever had, and building it cost 52 µs per update at 5,000 of them.
//!
//! The cache may lag the document (an edit made elsewhere: the server's own, a cluster peer's,
//! one yrs held back), never lead it: it advances only by what an update that integrated whole
//! inserted, and is dropped when the document is replaced. A lagging cache can only make a
//! guard refuse, so a refusal is checked again against the real state vector before it stands.

use yrs::{IdSet, ReadTxn, StateVector};

/// The cached clocks; empty until the first check fills them.
#[derive(Default)]
pub(crate) struct KnownClocks {
    clocks: Option<StateVector>,
}

impl KnownClocks {
    /// Forgets the clocks: the document was replaced (reloaded, given up), possibly by one
    /// that has less.
    pub(crate) fn reset(&mut self) {
        self.clocks = None;
    }

    /// Runs `check` against the cached clocks; when it refuses, or nothing is cached yet, runs
    /// it again against the document's state vector (read in `txn`), which becomes the cache.
    pub(crate) fn check<T: ReadTxn>(
        &mut self,
        txn: &T,
        check: impl Fn(&StateVector) -> Result<(), String>,
    ) -> Result<(), String> {
        if let Some(clocks) = &self.clocks {
            if check(clocks).is_ok() {
                return Ok(());
            }
        }
        let known = txn.state_vector();
        let result = check(&known);
        self.clocks = Some(known);
        result
    }

    /// Records what an update inserted, once yrs integrated all of it (nothing held back:
    /// otherwise the cache would lead the document, and is dropped instead).
    pub(crate) fn applied(&mut self, inserted: &IdSet, held_back: bool) {
        if held_back {
            self.clocks = None;
            return;
        }
        let Some(clocks) = &mut self.clocks else {
            return;
        };
        for (client, ranges) in inserted.iter() {
            if let Some(end) = ranges.iter().map(|r| r.end).max() {
                clocks.set_max(*client, end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, Options, Text, Transact, Update};

    fn doc(client: u64) -> Doc {
        Doc::with_options(Options {
            client_id: yrs::block::ClientID::new(client),
            ..Options::default()
        })
    }

    /// Two updates of one client, the second after the first.
    fn two_updates() -> (Vec<u8>, Vec<u8>) {
        let d = doc(7);
        let text = d.get_or_insert_text("content");
        let first = {
            let mut txn = d.transact_mut();
            text.insert(&mut txn, 0, "ab");
            txn.encode_update_v1()
        };
        let second = {
            let mut txn = d.transact_mut();
            text.insert(&mut txn, 2, "cd");
            txn.encode_update_v1()
        };
        (first, second)
    }

    /// Whether an update's insertions start where the known clocks end (the guard's rule).
    fn in_order(update: &Update, known: &StateVector) -> Result<(), String> {
        for (client, ranges) in update.insertions(true).iter() {
            if ranges.iter().any(|r| r.start > known.get(client)) {
                return Err("gap".into());
            }
        }
        Ok(())
    }

    /// A cache that lags (an edit applied without it) still admits the next update: the
    /// refusal is checked against the document; one that is truly out of order is refused.
    #[test]
    fn a_lagging_cache_never_refuses_what_the_document_admits() {
        let (first, second) = two_updates();
        let room = doc(1);
        let text = room.get_or_insert_text("content");
        let mut known = KnownClocks::default();
        let txn = room.transact();
        let empty = Update::decode_v1(&second).expect("decodes");
        assert!(known.check(&txn, |k| in_order(&empty, k)).is_err());
        drop(txn);
        // Applied behind the cache's back: it now lags the document.
        room.transact_mut()
            .apply_update(Update::decode_v1(&first).expect("decodes"))
            .expect("applies");
        let txn = room.transact();
        let next = Update::decode_v1(&second).expect("decodes");
        assert_eq!(known.check(&txn, |k| in_order(&next, k)), Ok(()));
        assert_eq!(text.get_string(&txn), "ab");
    }

    /// An update integrated whole advances the cache; one held back drops it.
    #[test]
    fn applied_updates_advance_the_cache() {
        let (first, second) = two_updates();
        let room = doc(1);
        let mut known = KnownClocks::default();
        known
            .check(&room.transact(), |_| Ok(()))
            .expect("fills the cache");
        let update = Update::decode_v1(&first).expect("decodes");
        known.applied(&update.insertions(true), false);
        let next = Update::decode_v1(&second).expect("decodes");
        let cached = known.clocks.as_ref().expect("cached");
        assert_eq!(in_order(&next, cached), Ok(()));
        known.applied(&next.insertions(true), true);
        assert!(
            known.clocks.is_none(),
            "a held-back update must drop the cache"
        );
    }
}
