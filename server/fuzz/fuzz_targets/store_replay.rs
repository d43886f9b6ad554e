//! Fuzzes the store: appends of raw and mutated real updates, compactions, quarantines,
//! reopens and deletes on a real sled store, each load going through the room's load path. See
//! `weft_server::fuzzing::store_replay` for the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weft_server::fuzzing::store_replay(data));
