//! Fuzzes `decode_frame`: it must never panic, and whatever it accepts must survive
//! encode → decode unchanged, with a canonical (byte-stable) encoding. The checks live in
//! `weft_protocol::fuzzing` so the regression tests replay the corpus through the same code.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| weft_protocol::fuzzing::check_frame(frame));
