//! `weft` built with the `fault-injection` feature, under its own name so that building it never
//! replaces the normal binary: the same entry point, plus `WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING`
//! (see `weft_server`'s `testing::fault` module). Used by `tests/tests/crash.rs`; never shipped.

fn main() -> anyhow::Result<()> {
    weft_server::cli::run()
}
