//! Allocation proof: hostile frames (a length prefix declaring 4 GiB, truncated varUints, an empty
//! frame, an awareness count of 2^32) are refused with a typed error while the decoder allocates
//! next to nothing. Allocations are counted per thread by `allocation-counter`, which installs a
//! counting global allocator in this test binary only (the workspace forbids `unsafe`, so we do
//! not write one ourselves).

use allocation_counter::{measure, AllocationInfo};
use weft_protocol::{decode_frame, AwarenessUpdate, Limits, Message, ProtocolError};

/// "Allocates nothing large": the whole call may allocate at most this many bytes in total.
const TINY_BYTES: u64 = 1024;

/// Limits that trust every length, so only the check against the bytes present can save us.
const ROOMY: Limits = Limits {
    max_message: usize::MAX,
    max_awareness_state: usize::MAX,
    max_room_name: usize::MAX,
    max_frame_messages: usize::MAX,
};

/// Decodes `frame` under `limits`, returning the result and what the call allocated.
fn decode_counted(
    frame: &[u8],
    limits: &Limits,
) -> (Result<Vec<Message>, ProtocolError>, AllocationInfo) {
    let mut result = None;
    let info = measure(|| result = Some(decode_frame(frame, limits)));
    (result.expect("closure ran"), info)
}

/// Asserts `frame` is refused with exactly `expected` and allocates less than [`TINY_BYTES`].
#[track_caller]
fn assert_refused_cheaply(frame: &[u8], limits: &Limits, expected: ProtocolError) {
    let (result, info) = decode_counted(frame, limits);
    assert_eq!(result, Err(expected), "frame {frame:02x?}");
    assert!(
        info.bytes_total < TINY_BYTES,
        "frame {frame:02x?} allocated {} bytes in {} allocations",
        info.bytes_total,
        info.count_total
    );
    assert_eq!(info.bytes_current, 0, "frame {frame:02x?} leaked");
}

/// The counter works: decoding a real 64 KiB update is seen allocating at least its payload.
#[test]
fn counter_sees_real_allocations() {
    let frame = Message::Update(vec![7; 64 * 1024]).encode();
    let (result, info) = decode_counted(&frame, &Limits::DEFAULT);
    assert!(result.is_ok());
    assert!(info.bytes_total >= 64 * 1024, "{info:?}");
}

/// A sync update whose 5-byte length prefix declares 4 GiB is refused by the size limit.
#[test]
fn four_gib_length_prefix_hits_the_limit() {
    assert_refused_cheaply(
        &[0x00, 0x02, 0x80, 0x80, 0x80, 0x80, 0x10],
        &Limits::DEFAULT,
        ProtocolError::TooLarge {
            what: "update",
            len: 1 << 32,
            max: Limits::DEFAULT.max_message,
        },
    );
}

/// With no size limit at all, the same 4 GiB prefix is refused against the bytes present.
#[test]
fn four_gib_length_prefix_without_limits_hits_the_input_check() {
    for (frame, what) in [
        (
            &[0x00, 0x00, 0x80, 0x80, 0x80, 0x80, 0x10][..],
            "state vector",
        ),
        (&[0x00, 0x01, 0x80, 0x80, 0x80, 0x80, 0x10], "update"),
        (&[0x00, 0x02, 0x80, 0x80, 0x80, 0x80, 0x10], "update"),
        (&[0x01, 0x80, 0x80, 0x80, 0x80, 0x10], "awareness update"),
        (&[0x02, 0x00, 0x80, 0x80, 0x80, 0x80, 0x10], "auth reason"),
        (&[0x64, 0x80, 0x80, 0x80, 0x80, 0x10], "control message"),
    ] {
        for limits in [
            ROOMY,
            Limits {
                max_message: usize::MAX,
                ..Limits::DEFAULT
            },
        ] {
            let expected = if what == "control message" && limits != ROOMY {
                // Control messages are bounded by the awareness-state limit.
                ProtocolError::TooLarge {
                    what,
                    len: 1 << 32,
                    max: limits.max_awareness_state,
                }
            } else {
                ProtocolError::LengthExceedsInput {
                    what,
                    declared: 1 << 32,
                    available: 0,
                }
            };
            assert_refused_cheaply(frame, &limits, expected);
        }
    }
}

/// A length prefix of the largest u64 (10 bytes) is refused the same way.
#[test]
fn u64_max_length_prefix_is_refused() {
    let mut frame = vec![0x00, 0x02];
    frame.extend([0xff; 9]);
    frame.push(0x01);
    assert_refused_cheaply(
        &frame,
        &ROOMY,
        ProtocolError::LengthExceedsInput {
            what: "update",
            declared: u64::MAX,
            available: 0,
        },
    );
}

/// Truncated and overlong varUints are typed errors that allocate next to nothing.
#[test]
fn truncated_var_uints_are_refused() {
    let cases: [(&[u8], ProtocolError); 5] = [
        (
            &[0x80],
            ProtocolError::UnexpectedEnd {
                what: "message type",
            },
        ),
        (
            &[0x00, 0x02, 0x80, 0x80],
            ProtocolError::UnexpectedEnd { what: "update" },
        ),
        (
            &[0x00],
            ProtocolError::UnexpectedEnd {
                what: "sync message type",
            },
        ),
        (
            &[0x01, 0x04, 0x01, 0x80, 0x80, 0x80],
            ProtocolError::UnexpectedEnd {
                what: "awareness client id",
            },
        ),
        (
            &[0xff; 11],
            ProtocolError::VarUintOverflow {
                what: "message type",
            },
        ),
    ];
    for (frame, expected) in cases {
        assert_refused_cheaply(frame, &Limits::DEFAULT, expected.clone());
        assert_refused_cheaply(frame, &ROOMY, expected);
    }
}

/// An empty frame is refused without allocating at all.
#[test]
fn empty_frame_allocates_nothing() {
    let (result, info) = decode_counted(&[], &Limits::DEFAULT);
    assert_eq!(result, Err(ProtocolError::EmptyFrame));
    assert_eq!(info.count_total, 0);
}

/// An awareness update declaring 2^32 entries is refused before any entry is reserved.
#[test]
fn awareness_count_of_two_pow_32_is_refused() {
    // Message tag 1, payload length 5, then varUint(2^32) as the entry count.
    let frame = [0x01, 0x05, 0x80, 0x80, 0x80, 0x80, 0x10];
    for limits in [Limits::DEFAULT, ROOMY] {
        assert_refused_cheaply(
            &frame,
            &limits,
            ProtocolError::LengthExceedsInput {
                what: "awareness entries",
                declared: 1 << 32,
                available: 0,
            },
        );
    }
    // The payload parser on its own allocates nothing for it.
    let mut result = None;
    let info = measure(|| {
        result = Some(AwarenessUpdate::decode(
            &[0x80, 0x80, 0x80, 0x80, 0x10],
            &ROOMY,
        ))
    });
    assert!(matches!(
        result,
        Some(Err(ProtocolError::LengthExceedsInput { .. }))
    ));
    assert_eq!(info.count_total, 0);
}

/// An awareness count padded with enough garbage to pass the size check reserves memory in
/// proportion to the bytes actually received, never to the declared count.
#[test]
fn awareness_reservation_is_bounded_by_received_bytes() {
    let garbage = vec![0xffu8; 3000];
    let mut payload = Vec::new();
    weft_protocol::encoding::write_var_uint(&mut payload, 1000);
    payload.extend(&garbage);
    let mut frame = vec![0x01];
    weft_protocol::encoding::write_var_bytes(&mut frame, &payload);
    let (result, info) = decode_counted(&frame, &ROOMY);
    assert!(result.is_err());
    let per_entry = std::mem::size_of::<weft_protocol::AwarenessEntry>() as u64;
    // At most one entry slot per three bytes received (the smallest encoded entry), plus the
    // frame's message list.
    assert!(
        info.bytes_total <= (frame.len() as u64 / 3) * per_entry + TINY_BYTES,
        "{info:?}"
    );
}

/// A 1 MiB frame packed with one-byte query-awareness messages is refused at the message cap
/// instead of decoding a million messages.
#[test]
fn frames_packed_with_tiny_messages_hit_the_message_cap() {
    let frame = vec![0x03; 1024 * 1024];
    let (result, info) = decode_counted(&frame, &Limits::DEFAULT);
    assert_eq!(
        result,
        Err(ProtocolError::TooLarge {
            what: "messages in one frame",
            len: Limits::DEFAULT.max_frame_messages as u64 + 1,
            max: Limits::DEFAULT.max_frame_messages,
        })
    );
    assert!(
        info.bytes_total < 64 * 1024,
        "allocated {} bytes",
        info.bytes_total
    );
    let allowed = vec![0x03; Limits::DEFAULT.max_frame_messages];
    assert_eq!(
        decode_frame(&allowed, &Limits::DEFAULT).map(|m| m.len()),
        Ok(Limits::DEFAULT.max_frame_messages)
    );
}

/// An awareness update that declares many entries reserves only a bounded vector up front.
#[test]
fn awareness_entry_count_does_not_drive_preallocation() {
    // 100 000 declared entries, then one valid entry followed by garbage: refused early.
    let mut payload = vec![0xa0, 0x8d, 0x06];
    payload.extend([0x01, 0x01, 0x02, b'{', b'}']);
    payload.extend(vec![0xff; 300_000]);
    let (result, info) = {
        let mut result = None;
        let info = measure(|| result = Some(AwarenessUpdate::decode(&payload, &ROOMY)));
        (result.expect("closure ran"), info)
    };
    assert!(result.is_err());
    assert!(
        info.bytes_total < 64 * 1024,
        "allocated {} bytes",
        info.bytes_total
    );
}
