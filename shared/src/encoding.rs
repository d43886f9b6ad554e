//! lib0 primitive encoding: varUint, varByteArray and varString, as used by y-protocols.
//!
//! Reading goes through [`Decoder`], which checks every length prefix against the bytes actually
//! left *before* it slices or allocates, so a hostile prefix costs nothing.

use crate::ProtocolError;

/// A varUint never needs more than 10 bytes for a `u64` (7 payload bits per byte).
const MAX_VAR_UINT_BYTES: usize = 10;

/// Cursor over a received frame that reads lib0 primitives without trusting any length prefix.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Offset of the next unread byte, for error messages.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Reads one lib0 varUint (little-endian base-128).
    ///
    /// # Errors
    /// [`ProtocolError::UnexpectedEnd`] when the input stops inside the number,
    /// [`ProtocolError::VarUintOverflow`] when it does not fit in a `u64`.
    pub fn read_var_uint(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VAR_UINT_BYTES {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(ProtocolError::UnexpectedEnd { what });
            };
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            // The tenth byte may only carry the single top bit of a u64.
            if i == MAX_VAR_UINT_BYTES - 1 && bits > 1 {
                return Err(ProtocolError::VarUintOverflow { what });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtocolError::VarUintOverflow { what })
    }

    /// Reads a varByteArray, borrowing its bytes from the frame.
    ///
    /// # Errors
    /// [`ProtocolError::TooLarge`] when the declared length exceeds `max`, and
    /// [`ProtocolError::LengthExceedsInput`] when it exceeds the bytes left; both are checked
    /// before anything is sliced or allocated.
    pub fn read_var_bytes(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], ProtocolError> {
        let declared = self.read_var_uint(what)?;
        if declared > max as u64 {
            return Err(ProtocolError::TooLarge {
                what,
                len: declared,
                max,
            });
        }
        if declared > self.remaining() as u64 {
            return Err(ProtocolError::LengthExceedsInput {
                what,
                declared,
                available: self.remaining(),
            });
        }
        // Both checks above bound `declared` by a usize, so the cast cannot truncate.
        let len = declared as usize;
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    /// Reads a varString (varUint byte length, then UTF-8), borrowing it from the frame.
    ///
    /// # Errors
    /// As [`Decoder::read_var_bytes`], plus [`ProtocolError::InvalidUtf8`].
    pub fn read_var_string(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a str, ProtocolError> {
        let bytes = self.read_var_bytes(what, max)?;
        std::str::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8 { what })
    }

    /// Consumes and returns everything left.
    pub fn read_rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }
}

/// Appends `value` as a lib0 varUint.
pub fn write_var_uint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `bytes` as a lib0 varByteArray (length prefix, then the bytes).
pub fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends `s` as a lib0 varString (UTF-8 byte length, then the bytes).
pub fn write_var_string(out: &mut Vec<u8>, s: &str) {
    write_var_bytes(out, s.as_bytes());
}

/// Number of bytes [`write_var_uint`] uses for `value`, to size buffers exactly.
pub fn var_uint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_uint(&mut out, v);
        out
    }

    /// The worked examples in PROTOCOL.md: 0..127 is one byte, 128 = 80 01, 300 = AC 02.
    #[test]
    fn var_uint_matches_lib0_examples() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
        for v in [0, 1, 127, 128, 300, 1 << 32, u64::MAX] {
            assert_eq!(var_uint_len(v), enc(v).len(), "length of {v}");
            assert_eq!(Decoder::new(&enc(v)).read_var_uint("n").unwrap(), v);
        }
    }

    /// A varUint whose continuation bit runs off the end is an error, not a panic.
    #[test]
    fn truncated_var_uint_is_typed_error() {
        let err = Decoder::new(&[0x80, 0x80]).read_var_uint("n").unwrap_err();
        assert_eq!(err, ProtocolError::UnexpectedEnd { what: "n" });
    }

    /// Eleven continuation bytes, or a tenth byte with more than one bit, overflow a u64.
    #[test]
    fn overlong_var_uint_is_overflow() {
        let err = Decoder::new(&[0xff; 11]).read_var_uint("n").unwrap_err();
        assert_eq!(err, ProtocolError::VarUintOverflow { what: "n" });
        let mut ten = vec![0xff; 9];
        ten.push(0x02);
        assert_eq!(
            Decoder::new(&ten).read_var_uint("n").unwrap_err(),
            ProtocolError::VarUintOverflow { what: "n" }
        );
    }

    /// A length prefix larger than the input is refused before slicing.
    #[test]
    fn length_beyond_input_is_refused() {
        let err = Decoder::new(&[0x05, 1, 2])
            .read_var_bytes("payload", 100)
            .unwrap_err();
        assert_eq!(
            err,
            ProtocolError::LengthExceedsInput {
                what: "payload",
                declared: 5,
                available: 2
            }
        );
    }
}
