//! Text deltas between versions, in characters (Unicode scalar values): planned with the
//! room's bounded-time diff (`room/diff.rs`, UTF-16 splices) and turned into keep / delete /
//! insert steps, applied to rebuild a version's text, and split into the equal / insert /
//! delete chunks the API returns.

use crate::room::diff::{self, Budget, Splice};
use crate::store::history::Op;

/// A delta that does not fit the text it is applied to (corrupt history).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored version delta does not fit the text it applies to")]
pub(crate) struct Misfit;

/// What a chunk of a diff does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// In both texts.
    Equal,
    /// Only in the newer text.
    Insert,
    /// Only in the older text.
    Delete,
}

/// The steps that turn `old` into `new` (exact; as minimal as a bounded-time plan makes it).
pub(crate) fn between(old: &str, new: &str) -> Vec<Op> {
    if old == new {
        return keep_all(old);
    }
    let splices = diff::plan(old, new, Budget::Blocking);
    from_splices(old, &splices).unwrap_or_else(|| {
        // The plan's splices are ordered and on character boundaries, so this is not expected;
        // replacing the whole text is still exact.
        let mut ops = Vec::new();
        push(&mut ops, Op::Delete(chars(old)));
        push(&mut ops, Op::Insert(new.to_owned()));
        ops
    })
}

/// `old` kept whole.
fn keep_all(old: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    push(&mut ops, Op::Keep(chars(old)));
    ops
}

/// Characters in `s`.
pub(crate) fn chars(s: &str) -> u64 {
    s.chars().count() as u64
}

/// Converts ordered UTF-16 splices over `old` into character steps; `None` when they are not
/// ordered or cut a character.
fn from_splices(old: &str, splices: &[Splice]) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    let mut rest = old.chars();
    // Position in the text as edited so far, in UTF-16 units.
    let mut at: u64 = 0;
    for s in splices {
        let mut kept = 0u64;
        while at < u64::from(s.at) {
            at += rest.next()?.len_utf16() as u64;
            kept += 1;
        }
        if at != u64::from(s.at) {
            return None;
        }
        push(&mut ops, Op::Keep(kept));
        let (mut removed, mut units) = (0u64, 0u64);
        while units < u64::from(s.delete) {
            units += rest.next()?.len_utf16() as u64;
            removed += 1;
        }
        if units != u64::from(s.delete) {
            return None;
        }
        push(&mut ops, Op::Delete(removed));
        push(&mut ops, Op::Insert(s.insert.clone()));
        at += s.insert.encode_utf16().count() as u64;
    }
    push(&mut ops, Op::Keep(rest.count() as u64));
    Some(ops)
}

/// Appends `op`, merging it into the last step of the same kind; empty steps are dropped.
fn push(ops: &mut Vec<Op>, op: Op) {
    match (ops.last_mut(), op) {
        (_, Op::Keep(0) | Op::Delete(0)) => {}
        (_, Op::Insert(s)) if s.is_empty() => {}
        (Some(Op::Keep(a)), Op::Keep(b)) | (Some(Op::Delete(a)), Op::Delete(b)) => *a += b,
        (Some(Op::Insert(a)), Op::Insert(b)) => a.push_str(&b),
        (_, op) => ops.push(op),
    }
}

/// Characters inserted and deleted by `ops`.
pub(crate) fn counts(ops: &[Op]) -> (u64, u64) {
    ops.iter().fold((0, 0), |(i, d), op| match op {
        Op::Keep(_) => (i, d),
        Op::Delete(n) => (i, d + n),
        Op::Insert(s) => (i + chars(s), d),
    })
}

/// Byte length of the first `n` characters of `s`, if it has that many.
fn byte_len(s: &str, n: u64) -> Option<usize> {
    let n = usize::try_from(n).ok()?;
    if n == 0 {
        return Some(0);
    }
    match s.char_indices().nth(n) {
        Some((at, _)) => Some(at),
        None if s.chars().count() == n => Some(s.len()),
        None => None,
    }
}

/// `old` with `ops` applied.
pub(crate) fn apply(old: &str, ops: &[Op]) -> Result<String, Misfit> {
    let mut out = String::with_capacity(old.len());
    let mut rest = old;
    for op in ops {
        match op {
            Op::Keep(n) => {
                let len = byte_len(rest, *n).ok_or(Misfit)?;
                out.push_str(&rest[..len]);
                rest = &rest[len..];
            }
            Op::Delete(n) => rest = &rest[byte_len(rest, *n).ok_or(Misfit)?..],
            Op::Insert(s) => out.push_str(s),
        }
    }
    if rest.is_empty() {
        Ok(out)
    } else {
        Err(Misfit)
    }
}

/// The chunks of `ops` over `old`: what stays, what is inserted, what is deleted, in order.
pub(crate) fn chunks(old: &str, ops: &[Op]) -> Result<Vec<(Kind, String)>, Misfit> {
    let mut out = Vec::with_capacity(ops.len());
    let mut rest = old;
    for op in ops {
        match op {
            Op::Keep(n) | Op::Delete(n) => {
                let len = byte_len(rest, *n).ok_or(Misfit)?;
                let kind = if matches!(op, Op::Keep(_)) {
                    Kind::Equal
                } else {
                    Kind::Delete
                };
                out.push((kind, rest[..len].to_owned()));
                rest = &rest[len..];
            }
            Op::Insert(s) => out.push((Kind::Insert, s.clone())),
        }
    }
    if rest.is_empty() {
        Ok(out)
    } else {
        Err(Misfit)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The newer text from chunks: inserts applied, deletes skipped.
    fn newer(chunks: &[(Kind, String)]) -> String {
        chunks
            .iter()
            .filter(|(k, _)| *k != Kind::Delete)
            .map(|(_, s)| s.as_str())
            .collect()
    }

    /// The older text from chunks: deletes kept, inserts skipped.
    fn older(chunks: &[(Kind, String)]) -> String {
        chunks
            .iter()
            .filter(|(k, _)| *k != Kind::Insert)
            .map(|(_, s)| s.as_str())
            .collect()
    }

    #[test]
    fn multibyte_edges() {
        for (old, new) in [
            ("", ""),
            ("", "👋"),
            ("a👋b", "a🎉b"),
            ("héllo wörld", "hello world"),
            ("🎉🎉🎉", "🎉🎉"),
            ("same", "same"),
        ] {
            let ops = between(old, new);
            assert_eq!(apply(old, &ops).as_deref(), Ok(new));
            let c = chunks(old, &ops).expect("fits");
            assert_eq!((older(&c), newer(&c)), (old.to_owned(), new.to_owned()));
        }
        assert_eq!(counts(&between("abc", "aXc")), (1, 1));
        assert_eq!(apply("abc", &[Op::Keep(4)]), Err(Misfit));
        assert_eq!(apply("abc", &[Op::Keep(2)]), Err(Misfit));
    }

    /// Strings from a small alphabet with multi-byte and astral characters and newlines, so
    /// random edits share a lot and cut near every kind of boundary.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop::sample::select(vec!["a", "b", "é", "👋", "\n", " ", "ab\n", "🎉x"]),
            0..60,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        /// Over any history of random texts, each delta rebuilds the next text exactly, and its
        /// chunks give the older text by skipping inserts and the newer by skipping deletes.
        #[test]
        fn deltas_are_exact(history in proptest::collection::vec(text(), 1..8)) {
            let mut prev = String::new();
            for next in &history {
                let ops = between(&prev, next);
                prop_assert_eq!(&apply(&prev, &ops).expect("fits"), next);
                let c = chunks(&prev, &ops).expect("fits");
                prop_assert_eq!(older(&c), prev.clone());
                prop_assert_eq!(&newer(&c), next);
                let (ins, del) = counts(&ops);
                prop_assert_eq!(chars(&prev) + ins - del, chars(next));
                prev = next.clone();
            }
        }
    }
}
