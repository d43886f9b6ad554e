//! Fuzzes a room: one long-lived document, several simulated connections, the input decoded
//! into their messages (sync, real edits, raw and mutated real updates, awareness, control,
//! join/leave) and API writes, fed through the room's own command handling. See
//! `weft_server::fuzzing::room_messages` for the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_server::fuzzing::room_messages(data));
