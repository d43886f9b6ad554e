//! Fuzzes the Hocuspocus decoder (`weft_protocol::hocuspocus::decode`): it must never panic,
//! and whatever it accepts must re-encode byte for byte and decode again unchanged. The checks
//! live in `weft_protocol::fuzzing::check_hocuspocus` so the corpus replay runs the same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| weft_protocol::fuzzing::check_hocuspocus(frame));
