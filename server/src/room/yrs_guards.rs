//! Every guard the room keeps against a behaviour of yrs 0.28, in one place. Each one exists
//! only because of that behaviour; each names what pins it (a unit test here, or an input under
//! `server/fuzz/regressions/room_messages/`, replayed in a child process by
//! `testing::fuzzing::tests::replay_corpora_in_child_processes`) and when it can go. Before
//! removing one, check its pin against the new yrs with the guard taken out.
//!
//! 1. **Panics on remote data** ([`contain`]). yrs panics (rather than erring) on some inputs
//!    it cannot handle; the room runs every yrs call that touches remote bytes or the document
//!    under `catch_unwind`, then rebuilds the document from the store and closes the sender.
//!    No input in the corpora panics yrs 0.28 any more, so this is defence in depth. Can go when
//!    yrs documents that decoding, applying and encoding never panic. (What `catch_unwind`
//!    cannot catch, an abort or a segfault, is contained by `store::inflight` instead.)
//! 2. **A declared count reserves memory before any entry is read** ([`count_fits`], in
//!    [`decode_update`] and [`decode_state_vector`]). Five bytes declaring 268 million clients
//!    cost 0.4 s and 0.5 GiB. Pinned by `oom-update-declares-huge-client-count` and
//!    `oversized_counts_are_refused_before_decoding`. Can go when yrs caps its reservation by
//!    the bytes left: decoding that input alone must stay under a millisecond.
//! 3. **Overlapping client sections free a block still in use** ([`clocks_listed_once`]). An
//!    update listing a client's clocks twice makes `BlockStore::push` free a block the document
//!    still links (a use after free: wrong text, then crashes of the room or of any yrs peer it
//!    broadcast to). Also refused: clocks past `u32::MAX` (yrs wraps them) and client ids wider
//!    than 53 bits (yrs keeps the low 53, so two ids become one client). Pinned by
//!    `update-lists-a-clients-clocks-twice`, `sequence-splice-lists-clocks-twice-1` and `-2`,
//!    `an_update_listing_clocks_twice_is_refused`, and `every_kind_of_struct_passes_the_clock_walk`
//!    (the walk reads what yrs reads). Can go when yrs refuses overlapping sections itself:
//!    the yrs-only reproduction in `server/fuzz/README.md` must fail to decode (not print "aa"),
//!    and `update-lists-a-clients-clocks-twice` must pass with the guard removed, under valgrind.
//! 4. **Text that skips clocks is integrated out of order** ([`out_of_order`]). yrs puts it
//!    behind a skip where Yjs would hold it back, then leaves it out of every encoding: joiners
//!    and restarts lose text the room shows. Pinned by `an_update_that_skips_clocks_is_refused`
//!    and the first fuzz run's `crash-*` inputs (they need history: `room_sequence` in the replay
//!    test reproduced them). Can go when yrs holds such an update back as pending.
//! 5. **Deletions of the room's own future clocks stay pending** ([`out_of_order`]). yrs applies
//!    them to every replay of the room's next server-side edit but never to the edit itself.
//!    Pinned by `deleting_the_servers_future_text_is_refused`. Can go when yrs applies pending
//!    deletions after a local transaction as it does after a remote one (see 6).
//! 6. **Pending updates are retried only after a remote update** ([`release_pending`]). An
//!    update waiting for what a server-side edit then supplies stays pending in the room, while
//!    every replay of the store (where the edit is remote) integrates it. Pinned by
//!    `a_server_edit_releases_updates_waiting_for_it`. Can go when yrs retries pending structs
//!    and deletions when a local transaction commits.
//! 7. **An item inside an item nobody has is re-parented when encoded** ([`parents_known`]).
//!    yrs holds it back but trims it against clocks it has, then encodes the rest with the
//!    previous clock as origin and no parent, so joiners and restarts put it into the text.
//!    Pinned by `sequence-item-inside-a-missing-item` and
//!    `an_item_inside_a_missing_item_is_refused` ("xontent" against "x"). Can go when yrs keeps
//!    the parent of a held-back item (or drops the item) in its encoding.
//! 8. **yrs counts text offsets in bytes by default** ([`new_doc`]); Yjs counts UTF-16 code
//!    units, so every room document is made with `OffsetKind::Utf16` (pinned by
//!    `replace_is_a_minimal_utf16_diff`). A default, not a defect: it stays while clients are Yjs.
//!
//! The guards run on every live write (a member's or the inbox's) before yrs applies it, and
//! guards 3, 4, 5 and 7 on every stored update at load (updates stored before a guard existed
//! are quarantined instead of replayed); a snapshot is yrs' own encoding and is only decoded.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use yrs::block::{
    ItemContent, BLOCK_GC_REF_NUMBER, BLOCK_ITEM_DOC_REF_NUMBER, BLOCK_SKIP_REF_NUMBER, HAS_ORIGIN,
    HAS_PARENT_SUB, HAS_RIGHT_ORIGIN,
};
use yrs::encoding::read::{Cursor, Error as ReadError, Read};
use yrs::updates::decoder::{Decode, Decoder, DecoderV1};
use yrs::{Doc, IdSet, OffsetKind, Options, ReadTxn, StateVector, TransactionMut, Update, ID};

use crate::room::known_clocks::KnownClocks;

/// Bits of a client id Yjs uses; yrs keeps only these.
const CLIENT_BITS: u32 = 53;

/// yrs panicked; the panic was caught, and what it was working on may be half-modified.
#[derive(Debug)]
pub(super) struct Panicked;

/// Runs `f`, which calls into yrs, containing a panic (guard 1). The caller decides what to
/// distrust afterwards: the room rebuilds its document from the store.
pub(super) fn contain<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Panicked)
}

/// A new document with the options every room uses: UTF-16 offsets, as Yjs counts them
/// (guard 8).
pub(crate) fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// After a local edit, integrates what was pending and the edit supplied (guard 6). yrs
/// retries pending structs and deletions only when it applies a remote update, never after a
/// local edit. Every replay of the store applies this edit as a remote update, so retry here
/// too, or this document would differ from what the store and its own encoded state give a
/// later joiner or a restart.
pub(super) fn release_pending(txn: &mut TransactionMut<'_>) {
    let store = txn.store();
    if store.pending_update().is_some() || store.pending_ds().is_some() {
        let _ = txn.apply_update(Update::new());
    }
}

/// Decodes a v1 update from a client, the API or the store (guards 2 and 3).
pub(super) fn decode_update(bytes: &[u8]) -> Result<Update, String> {
    decode_update_with_parents(bytes).map(|(update, _)| update)
}

/// [`decode_update`], plus the parent items the update's items name (for [`parents_known`]),
/// collected by the same walk of its sections.
pub(super) fn decode_update_with_parents(bytes: &[u8]) -> Result<(Update, Vec<ID>), String> {
    count_fits(bytes, "update")?;
    let parents = clocks_listed_once(bytes)?;
    let update = Update::decode_v1(bytes).map_err(|e| e.to_string())?;
    Ok((update, parents))
}

/// Decodes a v1 state vector from a client's sync step 1 or the API (guard 2).
pub(super) fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, String> {
    count_fits(bytes, "state vector")?;
    StateVector::decode_v1(bytes).map_err(|e| e.to_string())
}

/// Refuses bytes whose leading count (the clients of an update, the entries of a state vector)
/// cannot fit in them (guard 2). yrs reserves a hash table of that many entries before reading
/// any, and fills its control bytes: five bytes declaring 268 million clients cost 0.4 s and
/// 0.5 GiB.
fn count_fits(bytes: &[u8], what: &'static str) -> Result<(), String> {
    let mut decoder = weft_protocol::Decoder::new(bytes);
    let declared = decoder.read_var_uint(what).map_err(|e| e.to_string())?;
    // Every entry takes at least two bytes: a client id and a clock.
    let room = decoder.remaining() as u64 / 2;
    if declared > room {
        return Err(format!(
            "the {what} declares {declared} clients in {} bytes",
            bytes.len()
        ));
    }
    Ok(())
}

/// Refuses an update that lists clocks of one client more than once (guard 3): a client's
/// section repeated, or a later section of the same client starting inside an earlier one. No
/// encoder writes that (Yjs and yrs write each client once, its clocks consecutive), but yrs
/// 0.28 decodes it into overlapping blocks, trims them against the document and never against
/// each other, and then takes the second copy for one that fills a gap: `BlockStore::push`
/// overwrites the first copy's block, which it frees while the document still links it. After
/// that use after free the room, its encoded state and a restart disagree about the text (once
/// or twice), and a later edit or read crashes the process: the room's, or that of any yrs peer
/// the update was broadcast to (the fuzz harness's replicas segfaulted). Also refused: a section
/// whose clocks run past `u32::MAX` (yrs wraps them around onto earlier clocks) and a client id
/// wider than the 53 bits Yjs uses (yrs keeps the low 53 bits, so two such ids are one client).
///
/// The sections are walked with yrs' own decoder, reading exactly what `Update::decode_v1` reads.
/// Returns the ids of the items the update's items name as their parent (items of nested types;
/// root types are named), which [`parents_known`] checks once the document is at hand.
pub(super) fn clocks_listed_once(bytes: &[u8]) -> Result<Vec<ID>, String> {
    let mut d = DecoderV1::new(Cursor::new(bytes));
    let sections: u32 = d.read_var().map_err(malformed)?;
    // Per client, the end of the clocks its earlier sections listed.
    let mut listed: HashMap<u64, u64> = HashMap::new();
    let mut parents = Vec::new();
    for _ in 0..sections {
        let (client, start, end) = section(&mut d, &mut parents)?;
        let before = listed.entry(client).or_insert(0);
        if u64::from(start) < *before && end > u64::from(start) {
            return Err(format!(
                "the update lists clocks {start}..{end} of client {client} twice"
            ));
        }
        *before = (*before).max(end);
    }
    Ok(parents)
}

/// A decoding error, as the room reports it.
fn malformed(e: ReadError) -> String {
    e.to_string()
}

/// Reads one client section of an update: its client, its first clock and the end of its
/// clocks; refuses a client id wider than [`CLIENT_BITS`] and clocks past `u32::MAX`.
fn section(d: &mut DecoderV1<'_>, parents: &mut Vec<ID>) -> Result<(u64, u32, u64), String> {
    let structs: u32 = d.read_var().map_err(malformed)?;
    let client: u64 = d.read_var().map_err(malformed)?;
    if client >> CLIENT_BITS != 0 {
        return Err(format!(
            "the update names client {client}, wider than {CLIENT_BITS} bits"
        ));
    }
    let start: u32 = d.read_var().map_err(malformed)?;
    let mut end = u64::from(start);
    for _ in 0..structs {
        end += u64::from(struct_len(d, parents).map_err(malformed)?);
    }
    if end > u64::from(u32::MAX) {
        return Err(format!(
            "the update's clocks of client {client} run past {}",
            u32::MAX
        ));
    }
    Ok((client, start, end))
}

/// The clocks one struct takes (0 for an empty item, which yrs drops); an item whose parent
/// is another item (not a root type) adds that item's id to `parents`.
fn struct_len(d: &mut DecoderV1<'_>, parents: &mut Vec<ID>) -> Result<u32, ReadError> {
    let info = d.read_info()?;
    match info {
        BLOCK_SKIP_REF_NUMBER => d.read_var(),
        BLOCK_GC_REF_NUMBER => d.read_len(),
        _ => {
            if info & HAS_ORIGIN != 0 {
                d.read_left_id()?;
            }
            if info & HAS_RIGHT_ORIGIN != 0 {
                d.read_right_id()?;
            }
            if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                if d.read_parent_info()? {
                    d.read_string()?;
                } else {
                    parents.push(d.read_left_id()?);
                }
                if info & HAS_PARENT_SUB != 0 {
                    d.read_string()?;
                }
            }
            if info & 0b1111 == BLOCK_ITEM_DOC_REF_NUMBER {
                // A subdocument's options, read without building the document yrs would.
                d.read_string()?;
                d.read_any()?;
                return Ok(1);
            }
            Ok(ItemContent::decode(d, info)?.len_utf16())
        }
    }
}

/// Refuses an update with an item whose parent is an item that neither the document nor the
/// update has (guard 7). yrs 0.28 holds such an item back, but trims it against clocks of its
/// client the document already has, and then encodes the trimmed rest with the previous clock
/// as its origin and without its parent: a joiner or a restart (the store's snapshot is that
/// encoding) puts it into the text of the origin's parent, where the room shows nothing. Weft's
/// document is one root text, so a nested parent that is nowhere is a mutated or hostile update.
fn parents_known(parents: &[ID], inserted: &IdSet, known: &StateVector) -> Result<(), String> {
    for parent in parents {
        if parent.clock >= known.get(&parent.client) && !inserted.contains(parent) {
            return Err(format!(
                "the update inserts into item {}#{}, which the document does not have",
                parent.client, parent.clock
            ));
        }
    }
    Ok(())
}

/// Refuses an update that yrs would apply in a way its own encoding cannot reproduce, so that
/// the document in memory, its encoded state (what a joiner gets) and a replay of the store
/// (what a restart gets) always hold the same text:
/// - text that leaves a gap in a client's clocks (guard 4): yrs 0.28 integrates it out of
///   order behind a skip, where Yjs would hold it back, and then leaves it out of every
///   encoding;
/// - deletions of clocks of the room's own client id that the room has not written yet
///   (guard 5): nobody else can know them, and yrs would hold them back and apply them to every
///   replay of the room's later server-side edits but never to the edits themselves.
///
/// `inserted` is the update's insertions (deleted ones included); `known` the document's
/// clocks, or a cache of them that may lag (see `known_clocks`).
fn out_of_order(
    txn: &TransactionMut<'_>,
    update: &Update,
    inserted: &IdSet,
    known: &StateVector,
) -> Result<(), String> {
    let own = txn.doc().client_id();
    let written = txn.store().get_local_state();
    if let Some(ranges) = update.delete_set().get(&own) {
        if ranges.iter().any(|(r, ())| r.end > written) {
            return Err(format!(
                "the update deletes text the server has not written yet (client {own})"
            ));
        }
    }
    for (client, ranges) in inserted.iter() {
        let mut covered = known.get(client);
        for r in ranges.iter() {
            if r.start > covered {
                return Err(format!(
                    "the update skips clocks {covered}..{} of client {client}",
                    r.start
                ));
            }
            covered = covered.max(r.end);
        }
    }
    Ok(())
}

/// Whether yrs holds back part of what was applied in `txn` (items or deletions waiting for
/// ones the document does not have yet).
fn held_back(txn: &TransactionMut<'_>) -> bool {
    let store = txn.store();
    store.pending_update().is_some() || store.pending_ds().is_some()
}

/// Applies `update` (whose items name `parents`) in `txn` once both guards above admit it
/// against the document's clocks as `known` caches them, and tells `known` what it inserted.
/// Returns whether yrs holds part of it back, or why it was refused or failed.
pub(super) fn apply_guarded(
    txn: &mut TransactionMut<'_>,
    update: Update,
    parents: &[ID],
    known: &mut KnownClocks,
) -> Result<bool, String> {
    let inserted = update.insertions(true);
    known.check(&*txn, |clocks| {
        out_of_order(txn, &update, &inserted, clocks)?;
        parents_known(parents, &inserted, clocks)
    })?;
    txn.apply_update(update).map_err(|e| e.to_string())?;
    let pending = held_back(txn);
    known.applied(&inserted, pending);
    Ok(pending)
}

#[cfg(test)]
mod tests;
