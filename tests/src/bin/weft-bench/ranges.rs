//! Which clocks of which clients a Yjs v1 update carries, read from its encoding without
//! building it.
//!
//! A joiner of a 10 MB document only needs to know whether it has all of it. Decoding the
//! update with yrs allocates every string and counts its UTF-16 length char by char: in
//! `join-storm` that made the load generator's core, not the server, the bound on time to
//! synced (150 joiners × 10 MB on one core). The struct section of the v1 format names each
//! client's first clock and each struct's kind; string contents are skipped by their byte
//! length, and their UTF-16 length is counted over the bytes. Contents whose length needs a
//! full decode (lib0 `Any`, subdocuments) make [`Ranges::add`] fall back to yrs.

use std::collections::BTreeMap;
use std::ops::Range;

use anyhow::{bail, Context as _};
use yrs::updates::decoder::Decode;
use yrs::Update;

/// The clock ranges received so far, per client (sorted, merged where they touch).
#[derive(Debug, Default)]
pub(super) struct Ranges {
    clients: BTreeMap<u64, Vec<Range<u32>>>,
}

impl Ranges {
    /// Adds the clocks the v1 update `update` carries.
    pub(super) fn add(&mut self, update: &[u8]) -> anyhow::Result<()> {
        match struct_ranges(update) {
            Ok(Some(found)) => {
                for (client, range) in found {
                    self.insert(client, range);
                }
            }
            Ok(None) => {
                let decoded = Update::decode_v1(update).context("undecodable update")?;
                for (client, ranges) in decoded.insertions(true).iter() {
                    for r in ranges.iter() {
                        self.insert(client.get(), r.clone());
                    }
                }
            }
            Err(e) => return Err(e.context("undecodable update")),
        }
        Ok(())
    }

    /// Whether every clock of `client` below `clock` was received.
    pub(super) fn covers(&self, client: u64, clock: u32) -> bool {
        clock == 0
            || self
                .clients
                .get(&client)
                .and_then(|r| r.first())
                .is_some_and(|first| first.start == 0 && first.end >= clock)
    }

    /// What was received of `client`, for error messages.
    pub(super) fn of(&self, client: u64) -> &[Range<u32>] {
        self.clients.get(&client).map_or(&[], Vec::as_slice)
    }

    fn insert(&mut self, client: u64, range: Range<u32>) {
        if range.is_empty() {
            return;
        }
        let ranges = self.clients.entry(client).or_default();
        ranges.push(range);
        ranges.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<u32>> = Vec::with_capacity(ranges.len());
        for r in ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        *ranges = merged;
    }
}

/// A client id and a range of its clocks.
type ClientRange = (u64, Range<u32>);

/// The (client, clock range) of each run of structs in the update's struct section (skips
/// excluded), or `None` when a content kind needs a full decode to know its length.
fn struct_ranges(update: &[u8]) -> anyhow::Result<Option<Vec<ClientRange>>> {
    let mut r = Reader { buf: update, at: 0 };
    let mut found = Vec::new();
    for _ in 0..r.var()? {
        let structs = r.var()?;
        let client = r.var()?;
        let mut clock = clock_of(r.var()?)?;
        let mut start = clock;
        for _ in 0..structs {
            let info = r.byte()?;
            let Some(len) = struct_len(&mut r, info)? else {
                return Ok(None);
            };
            if info & 0x1f == 10 {
                // A skip: a gap in what this update carries.
                found.push((client, start..clock));
                start = clock + len;
            }
            clock = clock.checked_add(len).context("clock overflow")?;
        }
        found.push((client, start..clock));
    }
    Ok(Some(found))
}

/// The clock length of one struct whose info byte was `info`, reading past it; `None` for
/// contents this reader does not measure.
fn struct_len(r: &mut Reader<'_>, info: u8) -> anyhow::Result<Option<u32>> {
    match info & 0x1f {
        // GC and skip: a length.
        0 | 10 => return Ok(Some(clock_of(r.var()?)?)),
        _ => {}
    }
    if info & 0x80 != 0 {
        r.var()?; // origin client
        r.var()?; // origin clock
    }
    if info & 0x40 != 0 {
        r.var()?; // right origin client
        r.var()?; // right origin clock
    }
    if info & 0xc0 == 0 {
        if r.var()? == 1 {
            r.string()?; // root type name
        } else {
            r.var()?; // parent client
            r.var()?; // parent clock
        }
        if info & 0x20 != 0 {
            r.string()?; // key in a map
        }
    }
    let len = match info & 0x1f {
        1 => clock_of(r.var()?)?, // deleted
        2 => {
            let n = r.var()?;
            for _ in 0..n {
                r.string()?;
            }
            clock_of(n)?
        }
        3 => {
            r.string()?; // binary: a length-prefixed buffer, like a string
            1
        }
        4 => utf16_len(r.string()?)?,
        5 => {
            r.string()?; // embed (JSON)
            1
        }
        6 => {
            r.string()?; // format key
            r.string()?; // format value (JSON)
            1
        }
        7 => {
            // A nested type: XML elements and hooks carry a name.
            if matches!(r.var()?, 3 | 5) {
                r.string()?;
            }
            1
        }
        8 | 9 => return Ok(None),
        other => bail!("unknown content kind {other}"),
    };
    Ok(Some(len))
}

/// A clock or length, which the format bounds to 32 bits.
fn clock_of(v: u64) -> anyhow::Result<u32> {
    u32::try_from(v).context("clock past 32 bits")
}

/// The UTF-16 length of UTF-8 bytes: one unit per character, two for those of four bytes.
/// ASCII (checked a word at a time) is one unit per byte; otherwise std's character count,
/// also word-at-a-time, plus one per four-byte lead.
fn utf16_len(utf8: &[u8]) -> anyhow::Result<u32> {
    let units = if utf8.is_ascii() {
        utf8.len()
    } else {
        let s = std::str::from_utf8(utf8).context("string content is not UTF-8")?;
        s.chars().count() + utf8.iter().filter(|&&b| b >= 0xf0).count()
    };
    clock_of(units as u64)
}

/// lib0's encoding, read forward.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> anyhow::Result<u8> {
        let b = *self.buf.get(self.at).context("update ends early")?;
        self.at += 1;
        Ok(b)
    }

    /// A variable-length unsigned integer: 7 bits a byte, low first.
    fn var(&mut self) -> anyhow::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("variable-length integer too long")
    }

    /// A length-prefixed byte string.
    fn string(&mut self) -> anyhow::Result<&'a [u8]> {
        let len = usize::try_from(self.var()?).context("string too long")?;
        let end = self.at.checked_add(len).context("string too long")?;
        let s = self.buf.get(self.at..end).context("update ends early")?;
        self.at = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Array, Doc, Map, ReadTxn, StateVector, Text, Transact, XmlFragment};

    /// What yrs says an update inserts (its GC'd and deleted structs included).
    fn yrs_ranges(update: &[u8]) -> Ranges {
        let mut want = Ranges::default();
        let decoded = Update::decode_v1(update).expect("decodes");
        for (client, ranges) in decoded.insertions(true).iter() {
            for r in ranges.iter() {
                want.insert(client.get(), r.clone());
            }
        }
        want
    }

    fn read(update: &[u8]) -> Ranges {
        let mut got = Ranges::default();
        got.add(update).expect("reads");
        got
    }

    /// Text with characters of one to four bytes, a format, an XML element and a deletion are
    /// read without yrs; a map and an array (lib0 `Any` contents) fall back to it. Either way
    /// the ranges match what yrs decodes, whole and in increments.
    #[test]
    fn reads_what_yrs_decodes() {
        // Deleted text is kept as items (not collected), as yrs reports insertions of items.
        let doc = Doc::with_options(yrs::Options {
            skip_gc: true,
            ..yrs::Options::with_client_id(yrs::ClientID::new(41))
        });
        let text = doc.get_or_insert_text("content");
        let map = doc.get_or_insert_map("meta");
        let list = doc.get_or_insert_array("list");
        let xml = doc.get_or_insert_xml_fragment("xml");
        let mut got = Ranges::default();
        for step in 0..6 {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, "ascii é 中文 🙂 ");
            let bold = yrs::types::Attrs::from([("bold".into(), true.into())]);
            text.format(&mut txn, 0, 2, bold);
            xml.push_back(&mut txn, yrs::XmlElementPrelim::empty("p"));
            if step == 2 {
                text.remove_range(&mut txn, 1, 3);
            }
            let any = step >= 4;
            if any {
                map.insert(&mut txn, format!("k{step}"), "v");
                list.push_back(&mut txn, true);
            }
            let inc = txn.encode_update_v1();
            drop(txn);
            let read_alone = struct_ranges(&inc).expect("reads").is_some();
            assert_eq!(read_alone, !any, "step {step}");
            assert_eq!(read(&inc).of(41), yrs_ranges(&inc).of(41), "step {step}");
            got.add(&inc).expect("reads");
            if step == 3 {
                let whole = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                assert!(struct_ranges(&whole).expect("reads").is_some());
                assert_eq!(read(&whole).of(41), yrs_ranges(&whole).of(41));
            }
        }
        let clock = doc.transact().state_vector().get(&yrs::ClientID::new(41));
        assert!(got.covers(41, clock));
        assert!(!got.covers(41, clock + 1));
    }

    /// An update whose second half arrived first covers the text only once the first does.
    #[test]
    fn covers_only_without_gaps() {
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("content");
        let mut parts = Vec::new();
        for word in ["hello ", "world"] {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, word);
            parts.push(txn.encode_update_v1());
        }
        let mut got = Ranges::default();
        got.add(&parts[1]).expect("reads");
        assert!(!got.covers(7, 11));
        got.add(&parts[0]).expect("reads");
        assert!(got.covers(7, 11));
        assert!(!got.covers(7, 12));
        assert!(Ranges::default().add(&[0x01, 0x02]).is_err());
    }
}
