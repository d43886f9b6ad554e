//! Caps glibc's malloc arenas for the `weft` process.
//!
//! glibc gives each thread that allocates an arena of its own, up to eight per core, and keeps
//! what each arena once held. The store's I/O threads, its flush thread and the search index's
//! threads each allocate, so a server that had typed into a few documents sat at 140–210 MiB,
//! two thirds of it idle arenas (`docs/performance.md`); with two arenas the same runs ended at
//! 30–68 MiB. glibc reads the cap only from the environment at start (setting it from inside
//! needs `mallopt`, unsafe code, which this workspace forbids), so the binary starts itself
//! again, once, with `MALLOC_ARENA_MAX` set: same process id, same arguments.

/// The arena count the server runs with when the environment names none.
pub(crate) const ARENAS: &str = "2";

/// Replaces this process by the same binary with `MALLOC_ARENA_MAX` set to [`ARENAS`], unless
/// the variable is set already (an operator's value wins, and the restarted process finds it
/// set and carries on). Returns only when it does not restart: the variable was set, the
/// platform is not glibc, or the exec failed (then the default arenas stay, with a warning).
pub(crate) fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;

        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        let error = command.args(args).env("MALLOC_ARENA_MAX", ARENAS).exec();
        eprintln!(
            "weft: could not restart with MALLOC_ARENA_MAX={ARENAS} ({error}); running with \
             glibc's default malloc arenas, which hold more memory"
        );
    }
}
