//! Interop with the stock JS client: starts the real server in-process and runs the Node tests in
//! `tests/interop` (yjs + y-websocket, the packages browsers use) against it with `node --test`.
//!
//! The Node side prints a closing `N passed, N failed` line; this wrapper passes only when Node
//! exits successfully and that line reports at least one pass and no failure.
//!
//! Without `node` (20 or newer) on `PATH` or without `tests/interop/node_modules`, the test is
//! skipped with a message saying to run `npm ci` in `tests/interop`, except when the `CI`
//! environment variable is set (non-empty): there a missing prerequisite is a failure.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::AsyncReadExt;
use weft_tests::TestServer;

/// The Node test files run against an open server, relative to `tests/interop`.
const TEST_FILES: &[&str] = &["interop.test.mjs"];

/// The Node test files run against a server with an auth secret, given tokens in the
/// environment (`WEFT_AUTH_ROOM`, `WEFT_TOKEN_WRITE`, `WEFT_TOKEN_READ`).
const AUTH_TEST_FILES: &[&str] = &["auth.test.mjs"];

/// Reporters: `spec` for the details, ours for the closing `N passed, N failed` line (the same
/// flags as `npm test` in `tests/interop/package.json`).
const REPORTERS: &[&str] = &[
    "--test-reporter=spec",
    "--test-reporter-destination=stdout",
    "--test-reporter=./summary-reporter.mjs",
    "--test-reporter-destination=stdout",
];

/// The Node test file of the Hocuspocus providers against an open server, given
/// `WEFT_HOCUS_URL`, `WEFT_API_URL` and `WEFT_RESTART_DIR` (see [`hocuspocus_providers`]).
const HOCUS_TEST_FILES: &[&str] = &["hocuspocus.test.mjs"];

/// The Node test file of presence across reconnects and a restart, given `WEFT_RESTART_DIR`
/// (see [`stock_clients_presence_after_reconnects`]).
const PRESENCE_TEST_FILES: &[&str] = &["presence.test.mjs"];

/// The Node test file of the Hocuspocus providers against a server with an auth secret.
const HOCUS_AUTH_TEST_FILES: &[&str] = &["hocuspocus-auth.test.mjs"];

/// Packages that must be installed in `tests/interop/node_modules` (the 3.x Hocuspocus
/// provider under an npm alias, next to 4.x).
const PACKAGES: &[&str] = &[
    "yjs",
    "y-websocket",
    "ws",
    "@hocuspocus/provider",
    "hocuspocus-provider-v3",
];

/// The whole Node run must end within this (it takes a few seconds).
const NODE_TIMEOUT: Duration = Duration::from_secs(180);

/// Oldest Node major version whose test runner has what the run needs (custom reporters).
const MIN_NODE_MAJOR: u32 = 20;

/// Whether the Node tests can run: false (after saying why) when a prerequisite is missing
/// locally; under CI a missing prerequisite is a failure, not a skip.
async fn ready(dir: &Path) -> anyhow::Result<bool> {
    let Some(missing) = missing_prerequisite(dir).await else {
        return Ok(true);
    };
    if weft_tests::in_ci() {
        bail!(
            "the JS interop tests cannot run: {missing}. CI is set, so this is a failure, not a \
             skip: install Node {MIN_NODE_MAJOR}+ and run `npm ci` in tests/interop"
        );
    }
    weft_tests::report_skip(
        "the Node interop tests",
        &format!("{missing}; install Node {MIN_NODE_MAJOR}+ and run `npm ci` in tests/interop"),
    );
    Ok(false)
}

/// The stock y-websocket client syncs, merges concurrent edits, shares awareness and reconnects
/// against the real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_client_interop() -> anyhow::Result<()> {
    let dir = interop_dir();
    if !ready(&dir).await? {
        return Ok(());
    }

    let server = TestServer::start().await?;
    run_and_check(&dir, &server.ws_base(), TEST_FILES, &[]).await
}

/// The stock client passes its token as a URL parameter (`params: { token }`): a writer edits,
/// a read-only viewer syncs and shows its cursor but its edits are refused, and handshakes
/// without a valid token for the room are closed with 4401/4403, after which a stock provider
/// stops reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_yjs_client_with_tokens() -> anyhow::Result<()> {
    use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};

    let dir = interop_dir();
    if !ready(&dir).await? {
        return Ok(());
    }
    let secret: AuthSecret = "interop-secret-0123456789".parse()?;
    let for_server = secret.clone();
    let server = TestServer::start_with(move |c| c.auth_secret = Some(for_server)).await?;
    let room = "interop-auth";
    let token = |role| {
        mint(
            &secret,
            &Claims {
                scope: Scope::Doc(room.into()),
                role,
                exp: unix_now() + 600,
                sub: None,
            },
        )
    };
    let env = [
        ("WEFT_AUTH_ROOM", room.to_owned()),
        ("WEFT_TOKEN_WRITE", token(Access::Write)),
        ("WEFT_TOKEN_READ", token(Access::Read)),
    ];
    run_and_check(&dir, &server.ws_base(), AUTH_TEST_FILES, &env).await
}

/// The real Hocuspocus providers (3.4.4 and 4.x) next to y-websocket: converging edits,
/// awareness across protocols, two documents over one socket, `unsyncedChanges` back to 0 once
/// saved, API notices as stateless messages, and reconnecting after a restart with the text
/// kept. The Node side asks for the restart by writing `restart` in `WEFT_RESTART_DIR`; the
/// server is then stopped and started again on the same port and data directory, and
/// `restarted` is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hocuspocus_providers() -> anyhow::Result<()> {
    let dir = interop_dir();
    if !ready(&dir).await? {
        return Ok(());
    }
    let server = TestServer::start().await?;
    let signals = tempfile::tempdir()?;
    let env = [
        ("WEFT_HOCUS_URL", format!("ws://{}/hocuspocus", server.addr)),
        ("WEFT_API_URL", server.http_base()),
        ("WEFT_RESTART_DIR", signals.path().display().to_string()),
    ];
    let ws_base = server.ws_base();
    let restarter = tokio::spawn(restart_on_request(server, signals.path().to_owned()));
    let result = run_and_check(&dir, &ws_base, HOCUS_TEST_FILES, &env).await;
    restarter.abort();
    result
}

/// Stock y-websocket clients see each other again within 1 s of a reconnect: after one's socket
/// drops, and after a server restart (requested by the Node side as in
/// [`hocuspocus_providers`]), although each comes back with the awareness clock its peers hold
/// its removal at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_clients_presence_after_reconnects() -> anyhow::Result<()> {
    let dir = interop_dir();
    if !ready(&dir).await? {
        return Ok(());
    }
    let server = TestServer::start().await?;
    let signals = tempfile::tempdir()?;
    let env = [("WEFT_RESTART_DIR", signals.path().display().to_string())];
    let ws_base = server.ws_base();
    let restarter = tokio::spawn(restart_on_request(server, signals.path().to_owned()));
    let result = run_and_check(&dir, &ws_base, PRESENCE_TEST_FILES, &env).await;
    restarter.abort();
    result
}

/// Waits (up to [`NODE_TIMEOUT`]) for `restart` in `signals`, then restarts `server` on its
/// port and data directory and writes `restarted`; keeps the server running until aborted.
async fn restart_on_request(server: TestServer, signals: PathBuf) -> anyhow::Result<()> {
    let requested = weft_tests::wait_until("the restart request", NODE_TIMEOUT, || {
        signals.join("restart").exists()
    })
    .await;
    if requested.is_err() {
        // No restart asked for (a failing run): keep serving until the run ends.
        std::future::pending::<()>().await;
    }
    let addr = server.addr;
    let (data, guard) = server.stop().await?;
    let restarted = TestServer::start_on(addr, &data, |_| {}).await?;
    std::fs::write(signals.join("restarted"), b"")?;
    let _keep = (restarted, guard);
    std::future::pending::<()>().await;
    Ok(())
}

/// Hocuspocus providers with Weft tokens: `read-write` edits, `readonly` reads and its edits are
/// neither relayed nor saved, a token for another document is denied (`PermissionDenied`, then
/// 4403 on a socket with nothing else), and a malformed one closes with 4401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hocuspocus_providers_with_tokens() -> anyhow::Result<()> {
    use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};

    let dir = interop_dir();
    if !ready(&dir).await? {
        return Ok(());
    }
    let secret: AuthSecret = "interop-secret-0123456789".parse()?;
    let for_server = secret.clone();
    let server = TestServer::start_with(move |c| c.auth_secret = Some(for_server)).await?;
    let room = "hocus-auth";
    let token = |doc: &str, role| {
        mint(
            &secret,
            &Claims {
                scope: Scope::Doc(doc.into()),
                role,
                exp: unix_now() + 600,
                sub: None,
            },
        )
    };
    let env = [
        ("WEFT_HOCUS_URL", format!("ws://{}/hocuspocus", server.addr)),
        ("WEFT_AUTH_ROOM", room.to_owned()),
        ("WEFT_TOKEN_WRITE", token(room, Access::Write)),
        ("WEFT_TOKEN_READ", token(room, Access::Read)),
        ("WEFT_TOKEN_OTHER", token("another-doc", Access::Write)),
    ];
    run_and_check(&dir, &server.ws_base(), HOCUS_AUTH_TEST_FILES, &env).await
}

/// Runs `files` with `node --test` against `ws_base`, prints the output, and fails unless the
/// run ended well with at least one pass and no failure.
async fn run_and_check(
    dir: &Path,
    ws_base: &str,
    files: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<()> {
    let started = Instant::now();
    let run = run_node(dir, ws_base, files, env).await?;
    let elapsed = started.elapsed();
    println!("--- node --test stdout ---\n{}", run.stdout);
    println!("--- node --test stderr ---\n{}", run.stderr);
    let ended = run
        .status
        .map_or_else(|| "killed at the timeout".to_owned(), |s| s.to_string());
    println!("--- node --test: {ended} after {elapsed:.1?} ---");

    let Some(status) = run.status else {
        bail!("node --test did not finish within {NODE_TIMEOUT:?} (killed); output above");
    };
    let summary = summary_line(&run.stdout)
        .context("node --test printed no `N passed, N failed` line; output above")?;
    assert!(
        status.success() && summary.failed == 0 && summary.passed > 0,
        "JS interop tests failed: {status}, {} passed, {} failed; output above",
        summary.passed,
        summary.failed
    );
    Ok(())
}

/// `tests/interop`, next to this crate's manifest.
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// What is missing to run the Node tests, if anything.
async fn missing_prerequisite(dir: &Path) -> Option<String> {
    let version = match tokio::process::Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => return Some(format!("`node --version` failed ({})", out.status)),
        Err(e) => return Some(format!("`node` is not on PATH ({e})")),
    };
    let major = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_none_or(|m| m < MIN_NODE_MAJOR) {
        return Some(format!(
            "node {version} is older than {MIN_NODE_MAJOR} (or unrecognised)"
        ));
    }
    let modules = dir.join("node_modules");
    if !modules.is_dir() {
        return Some(format!("{} is absent", modules.display()));
    }
    if let Some(pkg) = PACKAGES
        .iter()
        .find(|p| !modules.join(p).join("package.json").is_file())
    {
        return Some(format!(
            "package `{pkg}` is not installed in {}",
            modules.display()
        ));
    }
    None
}

/// What the Node run left behind.
struct NodeRun {
    /// The exit status, or `None` when it was killed for taking longer than [`NODE_TIMEOUT`].
    status: Option<ExitStatus>,
    /// Everything written to stdout (the reporters' output).
    stdout: String,
    /// Everything written to stderr (uncaught errors, warnings).
    stderr: String,
}

/// Runs `node --test` on `files` in `dir` against `ws_base` with extra `env`, killing its whole
/// process group (the runner spawns one child per test file) on timeout or when this future is
/// dropped by a panic.
async fn run_node(
    dir: &Path,
    ws_base: &str,
    files: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<NodeRun> {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("--test")
        .args(REPORTERS)
        .args(files)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("WEFT_WS_URL", ws_base)
        // Colours would garble the captured output.
        .env("NO_COLOR", "1")
        .env_remove("FORCE_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().context("spawning `node --test`")?;
    let mut group = GroupKiller(child.id());

    let mut stdout = child.stdout.take().context("node stdout")?;
    let mut stderr = child.stderr.take().context("node stderr")?;
    let out_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    let err_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        buf
    });

    let status = match tokio::time::timeout(NODE_TIMEOUT, child.wait()).await {
        Ok(status) => {
            // The runner waits for its test-file processes before it exits: nothing left to kill.
            group.disarm();
            Some(status.context("waiting for node")?)
        }
        Err(_) => {
            group.kill();
            None
        }
    };
    let read = Duration::from_secs(10);
    let stdout = tokio::time::timeout(read, out_task)
        .await
        .unwrap_or(Ok(Vec::new()))?;
    let stderr = tokio::time::timeout(read, err_task)
        .await
        .unwrap_or(Ok(Vec::new()))?;
    Ok(NodeRun {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Sends SIGKILL to a process group, once, at the latest when dropped (unless disarmed).
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn disarm(&mut self) {
        self.0 = None;
    }

    fn kill(&mut self) {
        let Some(pgid) = self.0.take() else { return };
        if cfg!(unix) {
            // No libc binding in this crate: `kill -KILL -- -PGID` signals the whole group.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The counts of the closing `N passed, N failed` line.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    passed: u32,
    failed: u32,
}

/// Finds the last line of the exact form `N passed, N failed`.
fn summary_line(stdout: &str) -> Option<Summary> {
    stdout.lines().rev().find_map(|line| {
        let (passed, failed) = line.trim_end().split_once(" passed, ")?;
        let failed = failed.strip_suffix(" failed")?;
        Some(Summary {
            passed: passed.parse().ok()?,
            failed: failed.parse().ok()?,
        })
    })
}

/// The summary parser accepts only the exact closing line.
#[test]
fn summary_line_is_parsed_exactly() {
    let ok = "ℹ pass 4\nℹ fail 0\n4 passed, 0 failed\n";
    assert_eq!(
        summary_line(ok),
        Some(Summary {
            passed: 4,
            failed: 0
        })
    );
    assert_eq!(
        summary_line("3 passed, 1 failed"),
        Some(Summary {
            passed: 3,
            failed: 1
        })
    );
    assert_eq!(summary_line("ℹ pass 4\nℹ fail 0\n"), None);
    assert_eq!(summary_line("x 4 passed, 0 failed"), None);
    assert_eq!(summary_line("4 passed, 0 failed, 1 skipped"), None);
}
