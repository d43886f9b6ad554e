//! Turning one text into another with few, small edits in bounded time, for `PUT text`: the
//! edits become one Yjs update, so text outside them keeps its identity and remote cursors
//! anchored there stay put.
//!
//! A character diff (`dissimilar`) is O(N·D) with no deadline: on a large rewrite it would run
//! for hours. So the plan narrows the work step by step: the common prefix and suffix are
//! trimmed (linear; most real edits are one span); a small middle gets the character diff; a
//! large one a line diff with a deadline (`similar`, which approximates past it), whose changed
//! hunks get the character diff while they are small and time remains; whatever is left is
//! replaced whole. Every plan turns the old text into the new one exactly; only how minimal it
//! is depends on the budget.
//!
//! Offsets are UTF-16 code units, the unit of the room's documents and of Yjs.

use std::time::{Duration, Instant};

use similar::{Algorithm, DiffTag, TextDiff};

/// One edit of a text: at `at` (UTF-16 units, in the text as the splices before this one left
/// it), remove `delete` units, then insert `insert` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Splice {
    /// Where, in UTF-16 units.
    pub(crate) at: u32,
    /// UTF-16 units removed.
    pub(crate) delete: u32,
    /// Text inserted.
    pub(crate) insert: String,
}

/// A rewrite planned away from the room: the text it was planned against and the splices that
/// turn it into the requested one. The room applies it only if its text is still `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rewrite {
    /// The text the splices were computed against.
    pub(crate) base: String,
    /// The edits, in order.
    pub(crate) splices: Vec<Splice>,
}

/// How much work a plan may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// On the room's own task, where every member waits for it: trim, a character diff of a
    /// tiny middle, else the middle replaced whole. Linear in the text.
    InRoom,
    /// On a blocking thread: character diffs of middles and hunks up to a few thousand
    /// characters, a line diff with a deadline in between.
    Blocking,
}

/// Most bytes (old plus new) the room's own task character-diffs: O(N·D) stays well under a
/// millisecond.
const IN_ROOM_CHAR_DIFF: usize = 1024;

/// Most bytes (old plus new) a blocking plan character-diffs at once: tens of milliseconds at
/// worst.
const CHAR_DIFF: usize = 8 * 1024;

/// How long a blocking plan spends on the line diff and on refining its hunks; past it the
/// line diff approximates and the remaining hunks are replaced whole.
const DEADLINE: Duration = Duration::from_millis(250);

/// The splices that turn `old` into `new`, within `budget`.
pub(crate) fn plan(old: &str, new: &str, budget: Budget) -> Vec<Splice> {
    let (prefix, suffix) = common_affixes(old, new);
    let (old_mid, new_mid) = (
        &old[prefix..old.len() - suffix],
        &new[prefix..new.len() - suffix],
    );
    let mut plan = Planner {
        at: utf16_len(&old[..prefix]),
        splices: Vec::new(),
    };
    let small = old_mid.len() + new_mid.len();
    match budget {
        _ if old_mid.is_empty() || new_mid.is_empty() => plan.replace(old_mid, new_mid),
        Budget::InRoom if small <= IN_ROOM_CHAR_DIFF => plan.char_diff(old_mid, new_mid),
        Budget::InRoom => plan.replace(old_mid, new_mid),
        Budget::Blocking if small <= CHAR_DIFF => plan.char_diff(old_mid, new_mid),
        Budget::Blocking => plan.line_diff(old_mid, new_mid, Instant::now() + DEADLINE),
    }
    plan.splices
}

/// Applies `splices` to `text` in order.
pub(crate) fn apply(text: &yrs::TextRef, txn: &mut yrs::TransactionMut<'_>, splices: &[Splice]) {
    use yrs::Text as _;
    for s in splices {
        if s.delete > 0 {
            text.remove_range(txn, s.at, s.delete);
        }
        if !s.insert.is_empty() {
            text.insert(txn, s.at, &s.insert);
        }
    }
}

/// Bytes of the longest common prefix and of the longest common suffix of what remains, both
/// ending on character boundaries.
fn common_affixes(old: &str, new: &str) -> (usize, usize) {
    let (a, b) = (old.as_bytes(), new.as_bytes());
    let mut prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    // Equal bytes before it: a boundary in one text is a boundary in the other.
    while !old.is_char_boundary(prefix) {
        prefix -= 1;
    }
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let mut suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    // Equal bytes after it: a character starting there in one text starts there in the other.
    while !old.is_char_boundary(old.len() - suffix) {
        suffix -= 1;
    }
    (prefix, suffix)
}

/// Builds the splices, tracking the position in the text as edited so far.
struct Planner {
    at: u32,
    splices: Vec<Splice>,
}

impl Planner {
    /// `s` stays as it is.
    fn keep(&mut self, s: &str) {
        self.at = self.at.saturating_add(utf16_len(s));
    }

    /// `old` (at the current position) becomes `new`; joined with the previous splice when it
    /// ends right here.
    fn replace(&mut self, old: &str, new: &str) {
        if old.is_empty() && new.is_empty() {
            return;
        }
        let delete = utf16_len(old);
        match self.splices.last_mut() {
            Some(last) if last.at.saturating_add(utf16_len(&last.insert)) == self.at => {
                last.delete = last.delete.saturating_add(delete);
                last.insert.push_str(new);
            }
            _ => self.splices.push(Splice {
                at: self.at,
                delete,
                insert: new.to_owned(),
            }),
        }
        self.keep(new);
    }

    /// A minimal character diff of `old` into `new`; for small texts only (O(N·D)).
    fn char_diff(&mut self, old: &str, new: &str) {
        for chunk in dissimilar::diff(old, new) {
            match chunk {
                dissimilar::Chunk::Equal(s) => self.keep(s),
                dissimilar::Chunk::Delete(s) => self.replace(s, ""),
                dissimilar::Chunk::Insert(s) => self.replace("", s),
            }
        }
    }

    /// A line diff of `old` into `new` that gives up at `deadline`; each changed hunk is
    /// character-diffed while it is small and time remains, else replaced whole.
    fn line_diff(&mut self, old: &str, new: &str, deadline: Instant) {
        let diff = TextDiff::configure()
            .algorithm(Algorithm::Myers)
            .deadline(deadline)
            .diff_lines(old, new);
        let (old_lines, new_lines) = (diff.old_slices(), diff.new_slices());
        for op in diff.ops() {
            let (tag, old_range, new_range) = op.as_tag_tuple();
            if tag == DiffTag::Equal {
                old_lines[old_range].iter().for_each(|line| self.keep(line));
                continue;
            }
            let (old_hunk, new_hunk) =
                (old_lines[old_range].concat(), new_lines[new_range].concat());
            let small = old_hunk.len() + new_hunk.len() <= CHAR_DIFF;
            if small && !old_hunk.is_empty() && !new_hunk.is_empty() && Instant::now() < deadline {
                self.char_diff(&old_hunk, &new_hunk);
            } else {
                self.replace(&old_hunk, &new_hunk);
            }
        }
    }
}

/// Length of `s` in UTF-16 code units.
pub(crate) fn utf16_len(s: &str) -> u32 {
    u32::try_from(s.encode_utf16().count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `splices` to `old` as a plain string (UTF-16 offsets), to check plans without
    /// yrs.
    fn applied(old: &str, splices: &[Splice]) -> String {
        let mut units: Vec<u16> = old.encode_utf16().collect();
        for s in splices {
            let (at, delete) = (s.at as usize, s.delete as usize);
            units.splice(at..at + delete, s.insert.encode_utf16());
        }
        String::from_utf16(&units).expect("valid UTF-16")
    }

    /// Every budget turns the old text into the new one, emoji and multi-byte characters
    /// included, at the edges of the changed spans too.
    #[test]
    fn every_plan_is_a_correct_replacement() {
        let cases = [
            ("", ""),
            ("", "👋"),
            ("👋", ""),
            ("a👋b", "a🎉b"),
            ("héllo wörld", "hello world"),
            ("🎉🎉🎉", "🎉🎉"),
            ("same", "same"),
            (
                "line 1\nline 2\nline 3\n",
                "line 1\nline two\nline 3\nline 4",
            ),
            ("ab\u{e9}", "ab\u{e8}"),
        ];
        for (old, new) in cases {
            for budget in [Budget::InRoom, Budget::Blocking] {
                let splices = plan(old, new, budget);
                assert_eq!(applied(old, &splices), new, "{old:?} -> {new:?} {budget:?}");
            }
        }
    }

    /// A large rewrite is planned fast, line by line, and still exact; an edit in the middle of
    /// a large text stays one small splice.
    #[test]
    fn large_rewrites_are_bounded_and_exact() {
        let line = |i: usize, salt: &str| format!("{salt} line {i} 👋 {}\n", "é".repeat(i % 7));
        let old: String = (0..20_000).map(|i| line(i, "old")).collect();
        let new: String = (0..20_000)
            .map(|i| line(i, if i % 3 == 0 { "new" } else { "old" }))
            .collect();
        let started = Instant::now();
        let splices = plan(&old, &new, Budget::Blocking);
        assert_eq!(applied(&old, &splices), new);
        assert!(started.elapsed() < Duration::from_secs(30), "unbounded");

        let edited = old.replacen("line 10000 ", "line ten thousand ", 1);
        let splices = plan(&old, &edited, Budget::InRoom);
        assert_eq!(splices.len(), 1, "{splices:?}");
        assert!(splices[0].insert.len() < 20, "{splices:?}");
        assert_eq!(applied(&old, &splices), edited);
        let whole = plan(&old, &new, Budget::InRoom);
        assert_eq!(applied(&old, &whole), new);
    }
}
