//! Where the harnesses' updates come from: real edits of three peers (the seeds), and
//! [`UpdateSource`], which an input uses to pick, mutate, merge or diff real updates (or give
//! raw bytes).

use std::panic::catch_unwind;

use arbitrary::Arbitrary;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, Update};

/// Where an update's bytes come from.
#[derive(Debug, Arbitrary)]
pub(super) enum UpdateSource {
    /// Bytes as given.
    Raw(Vec<u8>),
    /// A real update, unchanged.
    Real(u8),
    /// A real update with some bits flipped.
    BitFlip(u8, Vec<(u16, u8)>),
    /// The first bytes of a real update.
    Truncate(u8, u16),
    /// The head of one real update joined to the tail of another.
    Splice(u8, u8, u16, u16),
    /// A real update with some bytes overwritten.
    Overwrite(u8, u16, Vec<u8>),
    /// Two real updates merged by yrs.
    Merge(u8, u8),
    /// What one real update adds over the state of another, computed by yrs.
    Diff(u8, u8),
}

/// The real update `i` names in `pool` (wrapping), or an empty update when there is none.
fn pick(pool: &[Vec<u8>], i: u8) -> Vec<u8> {
    if pool.is_empty() {
        return vec![0, 0];
    }
    pool[usize::from(i) % pool.len()].clone()
}

impl UpdateSource {
    /// The bytes this source makes from the real updates in `pool`.
    pub(super) fn bytes(&self, pool: &[Vec<u8>]) -> Vec<u8> {
        match self {
            UpdateSource::Raw(b) => b.clone(),
            UpdateSource::Real(i) => pick(pool, *i),
            UpdateSource::BitFlip(i, flips) => {
                let mut b = pick(pool, *i);
                if !b.is_empty() {
                    for (at, bit) in flips.iter().take(8) {
                        let at = usize::from(*at) % b.len();
                        b[at] ^= 1 << (bit % 8);
                    }
                }
                b
            }
            UpdateSource::Truncate(i, keep) => {
                let mut b = pick(pool, *i);
                b.truncate(usize::from(*keep) % (b.len() + 1));
                b
            }
            UpdateSource::Splice(a, b, cut_a, cut_b) => {
                let (a, b) = (pick(pool, *a), pick(pool, *b));
                let head = &a[..usize::from(*cut_a) % (a.len() + 1)];
                let tail = &b[usize::from(*cut_b) % (b.len() + 1)..];
                [head, tail].concat()
            }
            UpdateSource::Overwrite(i, at, with) => {
                let mut b = pick(pool, *i);
                let start = usize::from(*at) % (b.len() + 1);
                for (k, byte) in with.iter().take(16).enumerate() {
                    match b.get_mut(start + k) {
                        Some(slot) => *slot = *byte,
                        None => b.push(*byte),
                    }
                }
                b
            }
            UpdateSource::Merge(a, b) => {
                let (a, b) = (pick(pool, *a), pick(pool, *b));
                catch_unwind(|| yrs::merge_updates_v1([a.as_slice(), b.as_slice()]))
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_else(|| [a, b].concat())
            }
            UpdateSource::Diff(a, b) => {
                let (a, b) = (pick(pool, *a), pick(pool, *b));
                catch_unwind(|| {
                    let sv = yrs::encode_state_vector_from_update_v1(&b).ok()?;
                    yrs::diff_updates_v1(&a, &sv).ok()
                })
                .ok()
                .flatten()
                .unwrap_or(a)
            }
        }
    }
}

/// Real updates: three clients typing, deleting and replacing text (emoji and accents
/// included), concurrently, as y-websocket peers would.
pub(super) fn seed_updates() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let peers: Vec<Doc> = (1..=3)
        .map(|id| {
            Doc::with_options(yrs::Options {
                client_id: yrs::block::ClientID::new(id),
                offset_kind: yrs::OffsetKind::Utf16,
                ..yrs::Options::default()
            })
        })
        .collect();
    let edits: &[(usize, u32, u32, &str)] = &[
        (0, 0, 0, "Hello, world"),
        (1, 0, 0, "👋 "),
        (2, 5, 0, "é"),
        (0, 3, 2, ""),
        (1, 0, 0, "line\nline two\n"),
        (2, 1, 1, "🎉"),
        (0, 2, 0, "∑ x²"),
        (1, 4, 3, "abc"),
    ];
    for (round, (who, at, delete, text)) in edits.iter().enumerate() {
        let doc = &peers[*who];
        let t = doc.get_or_insert_text("content");
        let update = {
            let mut txn = doc.transact_mut();
            let len = t.len(&txn);
            let at = (*at).min(len);
            let delete = (*delete).min(len - at);
            if delete > 0 {
                t.remove_range(&mut txn, at, delete);
            }
            if !text.is_empty() {
                t.insert(&mut txn, at, text);
            }
            txn.encode_update_v1()
        };
        out.push(update.clone());
        // Every other round the peers sync up, so later edits depend on earlier ones.
        if round % 2 == 1 {
            for other in &peers {
                let state = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                if let Ok(u) = Update::decode_v1(&state) {
                    let _ = other.transact_mut().apply_update(u);
                }
            }
        }
    }
    out.push(
        peers[0]
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    out
}

/// How many pool entries are seeds (never evicted).
pub(super) fn seed_updates_len() -> usize {
    static LEN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LEN.get_or_init(|| seed_updates().len())
}
