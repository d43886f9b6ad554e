//! Who wrote each character of the text: runs of (author, length) over the recorder's replica,
//! kept up to date from the replica's text deltas as each stored update is applied with the
//! name of the one who wrote it. A version stores its runs, so a diff's inserted chunks name
//! the author of exactly those characters.
//!
//! Text present when a room loads has no known author (a run of `None`) until rewritten.

use std::sync::Arc;

use yrs::types::Delta;
use yrs::{Any, Out};

/// Author runs over a text, in UTF-16 units (the unit of yrs deltas in the rooms' documents).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Runs(Vec<(Option<Arc<str>>, u32)>);

/// Adds `len` units by `author` at the end of `runs`, merged with a last run of the same author.
fn push(runs: &mut Vec<(Option<Arc<str>>, u32)>, author: Option<Arc<str>>, len: u32) {
    if len == 0 {
        return;
    }
    match runs.last_mut() {
        Some((a, n)) if *a == author => *n += len,
        _ => runs.push((author, len)),
    }
}

/// UTF-16 units of an inserted value (an embed counts one).
fn units(value: &Out) -> u32 {
    match value {
        Out::Any(Any::String(s)) => u32::try_from(s.encode_utf16().count()).unwrap_or(u32::MAX),
        _ => 1,
    }
}

impl Runs {
    /// Applies one transaction's text delta, its inserts written by `author`.
    pub(crate) fn apply(&mut self, delta: &[Delta], author: Option<&Arc<str>>) {
        let mut out = Vec::with_capacity(self.0.len() + 2);
        let mut old = std::mem::take(&mut self.0).into_iter();
        let mut head: Option<(Option<Arc<str>>, u32)> = None;
        // Takes `n` units from the old runs, keeping them when `keep`.
        let mut take = |n: u32, keep: bool, out: &mut Vec<_>| {
            let mut left = n;
            while left > 0 {
                let Some((a, len)) = head.take().or_else(|| old.next()) else {
                    return;
                };
                let used = len.min(left);
                if keep {
                    push(out, a.clone(), used);
                }
                if used < len {
                    head = Some((a, len - used));
                }
                left -= used;
            }
        };
        for d in delta {
            match d {
                Delta::Retain(n, _) => take(*n, true, &mut out),
                Delta::Deleted(n) => take(*n, false, &mut out),
                Delta::Inserted(value, _) => push(&mut out, author.cloned(), units(value)),
            }
        }
        take(u32::MAX, true, &mut out);
        self.0 = out;
    }

    /// The runs over `text` in characters, with author names; `None` when they do not cover
    /// the text exactly (then nothing is attributed).
    pub(crate) fn in_chars(&self, text: &str) -> Option<Vec<(Option<String>, u64)>> {
        let mut chars = text.chars();
        let mut out: Vec<(Option<String>, u64)> = Vec::with_capacity(self.0.len());
        for (author, len) in &self.0 {
            let (mut units, mut n) = (0u32, 0u64);
            while units < *len {
                units += chars.next()?.len_utf16() as u32;
                n += 1;
            }
            if units != *len {
                return None;
            }
            out.push((author.as_deref().map(str::to_owned), n));
        }
        chars.next().is_none().then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use yrs::{GetString, Observable, Text, Transact};

    use super::*;
    use crate::room::new_doc;

    /// Runs follow inserts and deletes by several authors, emoji included, and cover the text.
    #[test]
    fn runs_follow_edits() {
        let doc = new_doc();
        let text = doc.get_or_insert_text("content");
        let runs = Arc::new(Mutex::new(Runs::default()));
        let author: Arc<Mutex<Option<Arc<str>>>> = Arc::default();
        let (r, a) = (runs.clone(), author.clone());
        text.observe("attribution", move |txn, e| {
            let who = a.lock().expect("lock").clone();
            r.lock().expect("lock").apply(e.delta(txn), who.as_ref());
        });
        let edit = |who: &str, f: &dyn Fn(&mut yrs::TransactionMut<'_>)| {
            *author.lock().expect("lock") = Some(Arc::from(who));
            f(&mut doc.transact_mut());
        };
        edit("ada", &|t| text.insert(t, 0, "hello 👋 world"));
        edit("bob", &|t| text.insert(t, 6, "big "));
        edit("cy", &|t| text.remove_range(t, 0, 2));
        let s = text.get_string(&doc.transact());
        assert_eq!(s, "llo big 👋 world");
        let got = runs.lock().expect("lock").in_chars(&s).expect("covers");
        let names: Vec<(Option<&str>, u64)> = got.iter().map(|(a, n)| (a.as_deref(), *n)).collect();
        assert_eq!(
            names,
            [(Some("ada"), 4), (Some("bob"), 4), (Some("ada"), 7)]
        );
    }
}
