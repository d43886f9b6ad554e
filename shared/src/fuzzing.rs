//! The `decode_frame` fuzz harness, shared by the cargo-fuzz target (`shared/fuzz`) and the
//! regression tests that replay its corpus on stable. Compiled with the `fuzzing` feature only.

use crate::{decode_frame, Limits, Message};

/// Limits small enough that random inputs reach every size check.
const TINY: Limits = Limits {
    max_message: 64,
    max_awareness_state: 16,
    max_room_name: 8,
    max_frame_messages: 4,
};

/// Decodes `frame` with tiny and default limits. Never panics unless an invariant breaks:
/// whatever decodes must re-encode and re-decode to the same messages, with a byte-stable
/// encoding.
///
/// # Panics
/// When an invariant breaks (that is what the fuzzer looks for).
pub fn check_frame(frame: &[u8]) {
    let _ = decode_frame(frame, &TINY);
    let Ok(messages) = decode_frame(frame, &Limits::DEFAULT) else {
        return;
    };
    assert!(!messages.is_empty(), "Ok with no messages");

    // The whole frame: re-encoded messages decode to the same list.
    let reencoded: Vec<u8> = messages.iter().flat_map(Message::encode).collect();
    let again = decode_frame(&reencoded, &Limits::DEFAULT).expect("re-encoded frame decodes");
    assert_eq!(again, messages, "frame round trip");

    // Each message alone: one frame, one message, and encoding it again is byte-identical.
    for m in &messages {
        let bytes = m.encode();
        let decoded = decode_frame(&bytes, &Limits::DEFAULT).expect("re-encoded message decodes");
        assert_eq!(
            decoded.as_slice(),
            std::slice::from_ref(m),
            "message round trip"
        );
        assert_eq!(decoded[0].encode(), bytes, "encoding is canonical");
    }
}
