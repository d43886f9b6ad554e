//! # weft-protocol
//!
//! The y-websocket wire protocol that Weft speaks, sans I/O: no sockets, no async runtime. The
//! server adapts it to WebSockets; tests, fuzzers and load generators use it directly.
//!
//! ## Layout
//! - [`encoding`]: lib0 varUint / varByteArray / varString, read through a [`Decoder`] that checks
//!   every length against the bytes present and the [`Limits`] before it allocates.
//! - `message`: [`Message`], [`decode_frame`] (one WebSocket frame → every message in it) and
//!   [`Message::encode`] (one message → one frame; stock clients read only the first message of a
//!   frame, so never pack several on the way out).
//! - `awareness`: [`AwarenessUpdate`], the cursor/presence payload, parsed so the server can track
//!   which client ids each connection owns.
//! - `control`: [`Control`], Weft's JSON side channel.
//! - [`hocuspocus`]: the Hocuspocus framing (`@hocuspocus/provider`): a document address before
//!   every message, so one socket carries several documents.
//! - `room`: [`RoomName`] validation.
//! - `close`: [`CloseCode`], the WebSocket close codes Weft sends, named.
//! - `error`: [`ProtocolError`]; decoding never panics.
//!
//! ## Messages (first varUint of a message)
//! | tag | meaning | payload |
//! |---|---|---|
//! | `0 0` | sync step 1 | varByteArray(state vector v1) |
//! | `0 1` | sync step 2 | varByteArray(update v1) |
//! | `0 2` | update | varByteArray(update v1) |
//! | `1` | awareness | varByteArray(varUint n, n × (varUint id, varUint clock, varString JSON)) |
//! | `2 0` | auth: permission denied | varString(reason) |
//! | `3` | query awareness | — |
//! | `100` | Weft control | varString(JSON, schema below) |
//!
//! ## Control channel (tag 100)
//! Stock Yjs clients log an error on unknown tags, so the server sends control messages only to a
//! connection that opted in by sending `hello` first. Each is one JSON object whose `type` picks
//! the shape; unknown types are ignored (decoded as [`Control::Unknown`]).
//!
//! | `type` | direction | fields |
//! |---|---|---|
//! | `hello` | client → server | `user?`: `{name, color?}` |
//! | `welcome` | server → client | `connection` (UUID), `role` (`read`/`write`), `room`, `users` |
//! | `joined` | server → client | `connection`, `user?`, `users` |
//! | `left` | server → client | `connection`, `users` |
//! | `typing` | both | `active`; from the server also `connection`, `user?` |
//! | `notice` | server → client | `level` (`info`/`warning`/`error`), `text` |
//! | `error` | server → client | `code` (stable), `message` |
//! | `saved` | server → client | `version`: updates durable so far |
//! | `title` | server → client | `title`: the document was renamed (through the API) |
//!
//! A control message's JSON is bounded by [`Limits::max_awareness_state`], like any other small
//! JSON the server relays.
//!
//! ## Limits
//! [`Limits`] bounds the whole frame and each payload (`max_message`), each awareness state and
//! control message (`max_awareness_state`), room names (`max_room_name`) and the number of
//! messages packed into one frame (`max_frame_messages`). A violation is
//! [`ProtocolError::TooLarge`] naming the field; a length larger than the bytes left is
//! [`ProtocolError::LengthExceedsInput`]. Both are caught before anything is allocated.
//!
//! Example: `{"type":"welcome","connection":"6f1c…","role":"write","room":"notes","users":2}`.

pub mod encoding;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hocuspocus;

mod awareness;
mod close;
mod control;
mod error;
mod limits;
mod message;
mod room;

pub use awareness::{AwarenessEntry, AwarenessUpdate};
pub use close::CloseCode;
pub use control::{
    Control, NoticeLevel, Role, UserInfo, MAX_USER_COLOR_CHARS, MAX_USER_NAME_CHARS,
};
pub use encoding::Decoder;
pub use error::ProtocolError;
pub use limits::Limits;
pub use message::{
    decode_frame, encode_sync, Message, AUTH_PERMISSION_DENIED, MESSAGE_AUTH, MESSAGE_AWARENESS,
    MESSAGE_CONTROL, MESSAGE_QUERY_AWARENESS, MESSAGE_SYNC, SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE,
};
pub use room::RoomName;
