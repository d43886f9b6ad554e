//! `weft` built with the `fault-injection` feature, under its own name so that building it never
//! replaces the normal binary: the same `main`, plus `WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING`
//! (see `weft_server`'s `fault` module). Used by `tests/tests/crash.rs`; never shipped.

#[path = "../main.rs"]
mod weft_main;

fn main() -> anyhow::Result<()> {
    weft_main::main()
}
