//! The fuzz harnesses of `decode_frame` and the Hocuspocus decoder, shared by the cargo-fuzz
//! targets (`shared/fuzz`) and the regression tests that replay their corpora on stable.
//! Compiled with the `fuzzing` feature (and in this crate's own tests).

use crate::{decode_frame, hocuspocus, Limits, Message};

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

/// Decodes `frame` as a Hocuspocus message with tiny and default limits. Never panics unless an
/// invariant breaks: whatever decodes must re-encode byte for byte (the codec is canonical for
/// every message a decoder accepts) and decode again to the same message.
///
/// # Panics
/// When an invariant breaks.
pub fn check_hocuspocus(frame: &[u8]) {
    let _ = hocuspocus::decode(frame, &TINY);
    let Ok(envelope) = hocuspocus::decode(frame, &Limits::DEFAULT) else {
        return;
    };
    let _ = envelope.document_name();
    let bytes = hocuspocus::encode(&envelope.address, &envelope.body);
    let again = hocuspocus::decode(&bytes, &Limits::DEFAULT).expect("re-encoded message decodes");
    assert_eq!(again, envelope, "message round trip");
    assert_eq!(
        hocuspocus::encode(&again.address, &again.body),
        bytes,
        "encoding is canonical"
    );
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every committed seed of the `decode_hocuspocus` target passes the harness, and most of
    /// them decode (the seeds are real provider messages, plus a few hostile ones).
    #[test]
    fn hocuspocus_corpus_replays() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_hocuspocus");
        let mut seeds = 0;
        let mut decoded = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus directory exists") {
            let bytes = std::fs::read(entry.expect("a directory entry").path()).expect("a seed");
            super::check_hocuspocus(&bytes);
            seeds += 1;
            if crate::hocuspocus::decode(&bytes, &crate::Limits::DEFAULT).is_ok() {
                decoded += 1;
            }
        }
        assert!(seeds >= 8, "only {seeds} seeds in {}", dir.display());
        assert!(
            decoded * 2 > seeds,
            "only {decoded} of {seeds} seeds decode"
        );
    }
}
