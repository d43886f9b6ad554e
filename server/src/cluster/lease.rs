//! The recorder lease of a document's version history: which node records its versions.
//!
//! Every node with the document open sees every change (other nodes' arrive through the log's
//! follower), so each would record the same versions. Only the holder of the lease records: a
//! record `r.{doc}` in the history bucket naming the node and when it last took or renewed the
//! lease. It changes only by compare-and-set, so of two nodes claiming at once one wins. A
//! lease not renewed for [`STALE_MS`] is taken over by the next node that claims it (its
//! holder died or stopped editing); an explicit request (a named version, a restore) takes it
//! at once; a node whose room closes gives it up by writing it stale.
//!
//! Staleness compares the holder's clock with the claimer's: nodes' clocks a few seconds apart
//! only shift a take-over by as much, and ids stay safe whatever the clocks say (versions are
//! created by compare-and-set, see `history.rs`).

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::names::hex;
use crate::store::StoreError;

/// Age after which a lease is taken over without being asked, in milliseconds.
pub(crate) const STALE_MS: u64 = 30_000;

/// Tries of a claim that keeps losing the compare-and-set to other claimers.
const TRIES: usize = 5;

/// A document's recorder lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    /// The node holding it (its id, fresh at each start).
    node: String,
    /// When it last took or renewed it, milliseconds since the Unix epoch (0: given up).
    ms: u64,
}

/// Key of `doc`'s lease.
fn key(doc: &str) -> String {
    format!("r.{}", hex(doc))
}

/// Whether node `me` may write the lease at `now`, `current` being what is stored (`None`:
/// nothing, or unreadable).
fn may_take(current: Option<&Lease>, me: &str, now: u64, force: bool) -> bool {
    match current {
        None => true,
        Some(l) => l.node == me || force || now.saturating_sub(l.ms) > STALE_MS,
    }
}

/// The lease of `doc` (`None` if absent or unreadable) and its revision (`None` if absent).
async fn read(kv: &kv::Store, doc: &str) -> Result<(Option<Lease>, Option<u64>), StoreError> {
    let entry = kv
        .entry(key(doc))
        .await
        .map_err(|e| StoreError::Unavailable(format!("reading a recorder lease: {e}").into()))?;
    Ok(match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            (serde_json::from_slice(&e.value).ok(), Some(e.revision))
        }
        _ => (None, None),
    })
}

/// Takes or renews `doc`'s lease for node `me` at `now`: `true` when `me` holds it now.
/// A live lease of another node is taken only with `force`.
pub(crate) async fn claim(
    kv: &kv::Store,
    doc: &str,
    me: &str,
    force: bool,
    now: u64,
) -> Result<bool, StoreError> {
    let mine = Lease {
        node: me.to_owned(),
        ms: now,
    };
    let value = Bytes::from(serde_json::to_vec(&mine).unwrap_or_default());
    for _ in 0..TRIES {
        let (current, revision) = read(kv, doc).await?;
        if !may_take(current.as_ref(), me, now, force) {
            return Ok(false);
        }
        let written = match revision {
            Some(rev) => kv
                .update(key(doc), value.clone(), rev)
                .await
                .err()
                .map(|e| {
                    let lost = matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision);
                    (lost, e.to_string())
                }),
            None => kv.create(key(doc), value.clone()).await.err().map(|e| {
                let lost = matches!(e.kind(), kv::CreateErrorKind::AlreadyExists);
                (lost, e.to_string())
            }),
        };
        match written {
            None => return Ok(true),
            // Another node wrote it meanwhile: look again.
            Some((true, _)) => continue,
            Some((false, e)) => {
                return Err(StoreError::Unavailable(
                    format!("writing a recorder lease: {e}").into(),
                ))
            }
        }
    }
    Ok(false)
}

/// Gives `doc`'s lease up if node `me` holds it: it is written stale, so the next claimer
/// takes it at once.
pub(crate) async fn release(kv: &kv::Store, doc: &str, me: &str) -> Result<(), StoreError> {
    let (current, revision) = read(kv, doc).await?;
    let (Some(current), Some(rev)) = (current, revision) else {
        return Ok(());
    };
    if current.node != me || current.ms == 0 {
        return Ok(());
    }
    let given_up = Lease {
        node: me.to_owned(),
        ms: 0,
    };
    let value = Bytes::from(serde_json::to_vec(&given_up).unwrap_or_default());
    // Losing the compare-and-set means another node took it meanwhile: nothing left to give.
    let _ = kv.update(key(doc), value, rev).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(node: &str, ms: u64) -> Lease {
        Lease {
            node: node.into(),
            ms,
        }
    }

    /// Free, own and stale leases are taken; a live lease of another node only by force; a
    /// given-up lease (time 0) by anyone.
    #[test]
    fn who_may_take_the_lease() {
        let now = 100_000;
        assert!(may_take(None, "a", now, false));
        assert!(may_take(Some(&lease("a", now)), "a", now, false));
        assert!(!may_take(Some(&lease("b", now - 1_000)), "a", now, false));
        assert!(!may_take(
            Some(&lease("b", now - STALE_MS)),
            "a",
            now,
            false
        ));
        assert!(may_take(
            Some(&lease("b", now - STALE_MS - 1)),
            "a",
            now,
            false
        ));
        assert!(may_take(Some(&lease("b", now)), "a", now, true));
        assert!(may_take(Some(&lease("b", 0)), "a", now, false));
        // A holder's clock ahead of ours keeps its lease live only that much longer.
        assert!(!may_take(Some(&lease("b", now + 5_000)), "a", now, false));
        assert_eq!(key("a"), "r.61");
    }
}
