//! # `weft-under-test`: the `weft` binary, built by `cargo test` for the tests that run it
//!
//! The same entry point as `weft` ([`weft_server::cli::run`]), compiled as a target of this
//! package so that `cargo test --workspace` builds it with the library it has already compiled:
//! the tests need no second `cargo build` of the server while they run (which cost a minute of
//! silence and a second copy of the server's artifacts on disk).

fn main() -> anyhow::Result<()> {
    weft_server::cli::run()
}
