//! The awareness update payload (y-protocols `awareness.js`): who is here, where their cursor is.
//!
//! Encoding: varUint(n), then n × (varUint(clientID), varUint(clock), varString(JSON state)).
//! A removed client carries the state `null`.

use crate::encoding::{write_var_string, write_var_uint, Decoder};
use crate::{Limits, ProtocolError};

/// The smallest encoded entry: one-byte client id, one-byte clock, empty string.
const MIN_ENTRY_BYTES: usize = 3;

/// Entries reserved up front; a real room has a few dozen peers at most.
const PREALLOCATED_ENTRIES: usize = 64;

/// One client's awareness state at a given clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    /// The Yjs client id that owns this state (32-bit in Yjs, 64-bit in yrs).
    pub client_id: u64,
    /// Monotonic per-client counter; an entry applies only when newer (or equal and `null`).
    pub clock: u64,
    /// The state as JSON text, verbatim; `null` means the client left.
    pub state: String,
}

impl AwarenessEntry {
    /// Whether this entry removes the client (its state is JSON `null`).
    pub fn is_removal(&self) -> bool {
        self.state == "null"
    }
}

/// A decoded awareness update: any number of client states.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwarenessUpdate {
    /// The entries in wire order.
    pub entries: Vec<AwarenessEntry>,
}

impl AwarenessUpdate {
    /// Decodes an awareness update payload (the bytes inside the message's varByteArray).
    ///
    /// Each state must be valid JSON: every JS peer `JSON.parse`s it, so relaying garbage would
    /// break other clients.
    ///
    /// # Errors
    /// Any [`ProtocolError`] for truncated input, oversize states, non-UTF-8 or non-JSON states,
    /// or bytes left over after the declared entries.
    pub fn decode(payload: &[u8], limits: &Limits) -> Result<Self, ProtocolError> {
        let mut d = Decoder::new(payload);
        let count = d.read_var_uint("awareness entry count")?;
        // Never reserve for more entries than the remaining bytes could possibly hold.
        let possible = d.remaining() / MIN_ENTRY_BYTES;
        if count > possible as u64 {
            return Err(ProtocolError::LengthExceedsInput {
                what: "awareness entries",
                declared: count,
                available: d.remaining(),
            });
        }
        // Entries are decoded to owned strings (far larger than their minimum wire size), so
        // reserve modestly and let a genuine large update grow the vector.
        let mut entries = Vec::with_capacity((count as usize).min(PREALLOCATED_ENTRIES));
        for _ in 0..count {
            let client_id = d.read_var_uint("awareness client id")?;
            let clock = d.read_var_uint("awareness clock")?;
            let state = d.read_var_string("awareness state", limits.max_awareness_state)?;
            if serde_json::from_str::<serde::de::IgnoredAny>(state).is_err() {
                return Err(ProtocolError::InvalidJson {
                    what: "awareness state",
                });
            }
            entries.push(AwarenessEntry {
                client_id,
                clock,
                state: state.to_owned(),
            });
        }
        if !d.is_empty() {
            return Err(ProtocolError::TrailingBytes {
                what: "awareness update",
                count: d.remaining(),
            });
        }
        Ok(Self { entries })
    }

    /// Encodes the payload (without the outer message tag and length).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            1 + self
                .entries
                .iter()
                .map(|e| 12 + e.state.len())
                .sum::<usize>(),
        );
        self.encode_into(&mut out);
        out
    }

    /// Appends the payload to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_var_uint(out, self.entries.len() as u64);
        for e in &self.entries {
            write_var_uint(out, e.client_id);
            write_var_uint(out, e.clock);
            write_var_string(out, &e.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md: an awareness update with no entries is the payload `00`.
    #[test]
    fn empty_update_is_one_zero_byte() {
        assert_eq!(AwarenessUpdate::default().encode(), [0x00]);
        assert_eq!(
            AwarenessUpdate::decode(&[0x00], &Limits::DEFAULT)
                .unwrap()
                .entries
                .len(),
            0
        );
    }

    /// A count far beyond what the payload holds is refused before reserving memory.
    #[test]
    fn huge_count_is_refused_without_allocating() {
        let payload = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let err = AwarenessUpdate::decode(&payload, &Limits::DEFAULT).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::LengthExceedsInput {
                what: "awareness entries",
                ..
            }
        ));
    }

    /// A state that is not JSON would break every JS peer's JSON.parse, so it is refused.
    #[test]
    fn non_json_state_is_refused() {
        let u = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client_id: 1,
                clock: 1,
                state: "{oops".into(),
            }],
        };
        let err = AwarenessUpdate::decode(&u.encode(), &Limits::DEFAULT).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::InvalidJson {
                what: "awareness state"
            }
        );
    }

    /// A state over the configured size is refused with the limit named.
    #[test]
    fn oversize_state_is_refused() {
        let limits = Limits {
            max_awareness_state: 8,
            ..Limits::DEFAULT
        };
        let u = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client_id: 1,
                clock: 1,
                state: "\"0123456789\"".into(),
            }],
        };
        let err = AwarenessUpdate::decode(&u.encode(), &limits).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::TooLarge {
                what: "awareness state",
                len: 12,
                max: 8
            }
        );
    }
}
