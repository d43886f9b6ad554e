//! The `weft` binary: everything is in [`weft_server::cli::run`].

fn main() -> anyhow::Result<()> {
    weft_server::cli::run()
}
