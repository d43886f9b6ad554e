//! Size limits every decoder checks before it allocates.

/// Upper bounds applied while decoding untrusted bytes. A violation is
/// [`crate::ProtocolError::TooLarge`] naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame and largest single payload (update, state vector, awareness update).
    pub max_message: usize,
    /// Largest JSON state of one awareness entry; cursors and names need a few hundred bytes.
    pub max_awareness_state: usize,
    /// Largest room name in UTF-8 bytes, after percent-decoding.
    pub max_room_name: usize,
    /// Most messages one frame may pack. Stock clients send one per frame; without a cap a
    /// frame of one-byte messages would cost ~80 bytes of decoded form per input byte.
    pub max_frame_messages: usize,
}

impl Limits {
    /// Defaults that fit real documents with room to spare: 16 MiB messages (a large document's
    /// full state in one sync step 2), 64 KiB per awareness state, 256-byte room names, 64
    /// messages per frame.
    pub const DEFAULT: Limits = Limits {
        max_message: 16 * 1024 * 1024,
        max_awareness_state: 64 * 1024,
        max_room_name: 256,
        max_frame_messages: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
