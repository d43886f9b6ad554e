//! The typed errors of decoding and validation; each names what was wrong.

use thiserror::Error;

/// Why a frame, message or room name was refused. Every decoding failure is one of these;
/// decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The frame held no bytes at all.
    #[error("empty frame")]
    EmptyFrame,
    /// The input ended in the middle of `what`.
    #[error("frame ends inside {what}")]
    UnexpectedEnd {
        /// The field being read.
        what: &'static str,
    },
    /// A varUint ran past 64 bits.
    #[error("varUint for {what} overflows 64 bits")]
    VarUintOverflow {
        /// The field being read.
        what: &'static str,
    },
    /// A length prefix declared more bytes than the frame holds.
    #[error("{what} declares {declared} bytes but only {available} remain")]
    LengthExceedsInput {
        /// The field being read.
        what: &'static str,
        /// The length the prefix declared.
        declared: u64,
        /// The bytes actually left in the frame.
        available: usize,
    },
    /// A length or count exceeded the configured [`crate::Limits`].
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// The field or quantity being checked.
        what: &'static str,
        /// The size found.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A string field was not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// A JSON field did not parse as JSON.
    #[error("{what} is not valid JSON")]
    InvalidJson {
        /// The field being read.
        what: &'static str,
    },
    /// Bytes were left after a payload that must be consumed exactly.
    #[error("{count} unexpected bytes after {what}")]
    TrailingBytes {
        /// The payload that should have ended.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// The top-level message tag is not one this protocol knows.
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    /// The sync sub-type is not step 1, step 2 or update.
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    /// The auth sub-type is not permission-denied.
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
    /// A Hocuspocus `Authenticated` message named a scope other than `read-write` or
    /// `readonly`.
    #[error("unknown Hocuspocus auth scope")]
    InvalidAuthScope,
    /// A Weft control message was not valid JSON of the documented schema.
    #[error("invalid control message: {0}")]
    InvalidControl(String),
    /// A room name broke the naming rules.
    #[error("invalid room name: {0}")]
    InvalidRoomName(&'static str),
}
