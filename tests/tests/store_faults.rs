//! Storage faults nobody planned for, end to end with the real `weft` binary: a disk that fills
//! up, a data directory removed under a running server, and updates and snapshots far larger
//! than a storage page.
//!
//! What must hold: no write, readiness probe or shutdown waits on storage without bound; a write
//! the store could not save is refused (never acknowledged); `/readyz` fails once the store has
//! failed while reads keep answering; SIGTERM then ends the process with a non-zero status within
//! seconds; and every acknowledged edit is there after a restart.
//!
//! The full disk is a small tmpfs mounted for the test (the tests run as root in CI). Without
//! the right to mount, the process runs under `prlimit --fsize` instead (its files cannot grow
//! past the limit, so writes fail as on a full disk); when neither works the test says so and
//! passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use weft_protocol::Control;
use weft_tests::{weft_binary, Client, Outcome, WeftProcess, WAIT};

/// How long a stopping server may take once its store has failed: no flush is waited on for
/// longer than the store's flush deadline (10 s), and a failed store is not waited on at all.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// Size of the small disk: a few of the large updates below fill it.
const DISK_BYTES: u64 = 4 << 20;

/// One large edit: above sled's 2 MiB blob threshold, so before values were stored in pieces it
/// went to a blob file of its own (the write whose failure wedged sled's log).
const LARGE_EDIT: usize = 3 << 20;

/// Edits before the large ones on the small disk, acknowledged before it fills up.
const SMALL_EDIT: usize = 256 << 10;

/// `len` bytes of text, different for each `tag`, in lines.
fn text_block(tag: usize, len: usize) -> String {
    let mut out = String::with_capacity(len + 64);
    let mut line = 0usize;
    while out.len() < len {
        out.push_str(&format!(
            "edit {tag:03} line {line:07} lorem ipsum dolor sit amet\n"
        ));
        line += 1;
    }
    out.truncate(len);
    out
}

/// A GET that must answer within `timeout`: its status and body.
async fn get(url: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .with_context(|| format!("GET {url} did not answer within {timeout:?}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

/// Polls `/readyz` until it answers 503; returns its body. Every probe must answer within the
/// bound: a probe that hangs fails the test.
async fn wait_unready(weft: &WeftProcess) -> anyhow::Result<String> {
    let url = format!("{}/readyz", weft.http_base());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(&url, WAIT).await?;
        if status == 503 {
            return Ok(body);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "/readyz still answered {status} {body:?} after {WAIT:?}; log:\n{}",
                weft.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many files are under `dir/blobs` (sled's files for values too large for its log).
fn blob_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs")).map_or(0, |d| d.count())
}

/// Copies the directory `from` to `to` (a restart "on a roomier disk").
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("cp -a {} {} failed: {status}", from.display(), to.display());
    }
    Ok(())
}

/// A directory whose files cannot grow past [`DISK_BYTES`] in total: a tmpfs of that size, or,
/// where mounting is not allowed, a plain directory with the server run under `prlimit`.
struct SmallDisk {
    /// Holds the mount point; removed after the unmount.
    root: tempfile::TempDir,
    /// Whether `root` is a tmpfs this test mounted (unmounted on drop).
    mounted: bool,
    /// A wrapper that starts `weft` with SIGXFSZ ignored and its file size limited.
    wrapper: Option<PathBuf>,
}

impl SmallDisk {
    /// A small disk, or `None` when neither way works here (the test is then skipped, loudly).
    fn new() -> anyhow::Result<Option<Self>> {
        let root = tempfile::tempdir()?;
        let size = format!("size={DISK_BYTES}");
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(root.path())
            .output();
        match mount {
            Ok(out) if out.status.success() => {
                return Ok(Some(Self {
                    root,
                    mounted: true,
                    wrapper: None,
                }));
            }
            Ok(out) => eprintln!(
                "mounting a tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("cannot run mount: {e}"),
        }
        let prlimit = Command::new("prlimit").arg("--version").output();
        if prlimit.is_ok_and(|o| o.status.success()) {
            // An ignored SIGXFSZ survives exec, so writes past the limit fail with EFBIG
            // instead of killing the process.
            let wrapper = root.path().join("weft-limited.sh");
            let script = format!(
                "#!/bin/sh\ntrap '' XFSZ\nexec prlimit --fsize={DISK_BYTES} -- {} \"$@\"\n",
                weft_binary()?.display()
            );
            std::fs::write(&wrapper, script)?;
            let chmod = Command::new("chmod").arg("+x").arg(&wrapper).status()?;
            if chmod.success() {
                return Ok(Some(Self {
                    root,
                    mounted: false,
                    wrapper: Some(wrapper),
                }));
            }
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("CI=true but neither a tmpfs mount nor prlimit is available for the full disk");
        }
        eprintln!("SKIPPED: no way to make a small disk here (need root for mount, or prlimit)");
        Ok(None)
    }

    /// The data directory on the small disk.
    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Starts `weft` on `data` with its writes limited to the small disk.
    async fn spawn(&self, data: &Path) -> anyhow::Result<WeftProcess> {
        match &self.wrapper {
            Some(wrapper) => WeftProcess::spawn_bin(wrapper, data, &[], &[]).await,
            None => WeftProcess::spawn(data, &[]).await,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy, so a process still holding a file cannot keep the mount alive.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.root.path())
                .status();
        }
    }
}

/// A disk that fills up: the write that does not fit is refused (its sender closed, not left
/// waiting), `/readyz` answers 503, reads still answer, SIGTERM ends the process non-zero within
/// seconds, and a restart on a roomier disk finds every acknowledged edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_and_exits_nonzero() -> anyhow::Result<()> {
    let Some(disk) = SmallDisk::new()? else {
        return Ok(());
    };
    let data = disk.data();
    let mut weft = disk.spawn(&data).await?;

    let calm = Client::connect_synced(&weft.room_url("calm")).await?;
    calm.push("written before the disk filled up")?;
    calm.wait_acked().await?;
    drop(calm);

    let writer = Client::connect_synced(&weft.room_url("fill")).await?;
    let mut acked = String::new();
    let mut refused = None;
    // A few edits that fit, then far more than the disk holds: one of these must be refused.
    for i in 0..(4 + 4 * DISK_BYTES as usize / LARGE_EDIT) {
        let edit = text_block(i, if i < 4 { SMALL_EDIT } else { LARGE_EDIT });
        writer.push(&edit)?;
        let outcome = writer
            .wait_acked_or_closed(WAIT)
            .await
            .with_context(|| format!("large edit {i} on a filling disk; log:\n{}", weft.log()))?;
        if outcome == Outcome::Acked {
            acked.push_str(&edit);
        } else {
            refused = Some(outcome);
            break;
        }
    }
    let refused = refused.context("the disk never filled up")?;
    assert!(!acked.is_empty(), "not even the small edits fitted");
    eprintln!(
        "refused after {} acknowledged bytes: {refused:?}",
        acked.len()
    );

    let why = wait_unready(&weft).await?;
    assert!(
        why.contains("disk full") || why.contains("too large"),
        "{why}"
    );
    let text_url = |doc: &str| format!("{}/api/docs/{doc}/text", weft.http_base());
    let (status, body) = get(&text_url("calm"), WAIT).await?;
    assert_eq!(
        (status, body.as_str()),
        (200, "written before the disk filled up")
    );
    // The document whose write failed answers too (its text, or an error), without hanging.
    get(&text_url("fill"), WAIT).await?;

    let status = weft.terminate_within(EXIT_WITHIN).await?;
    assert!(
        !status.success(),
        "a server whose store failed exited with {status}; log:\n{}",
        weft.log()
    );
    assert!(
        weft.log().contains("disk full") || weft.log().contains("too large"),
        "the exit does not say why; log:\n{}",
        weft.log()
    );
    drop(weft);

    let roomy = tempfile::tempdir()?;
    copy_dir(&data, &roomy.path().join("data"))?;
    drop(disk);
    let mut weft = WeftProcess::spawn(&roomy.path().join("data"), &[]).await?;
    let calm = Client::connect_synced(&weft.room_url("calm")).await?;
    assert_eq!(calm.text(), "written before the disk filled up");
    let reader = Client::connect_synced(&weft.room_url("fill")).await?;
    let text = reader.text();
    assert!(
        text.starts_with(&acked),
        "{} acknowledged bytes, {} after the restart, and they differ",
        acked.len(),
        text.len()
    );
    drop((calm, reader));
    assert!(weft.terminate().await?.success(), "log:\n{}", weft.log());
    Ok(())
}

/// A data directory removed under a running server: `/readyz` fails, a write is refused rather
/// than acknowledged into a directory that no longer exists, and SIGTERM ends it non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_data_directory_fails_readiness_and_refuses_writes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut weft = WeftProcess::spawn(&data, &[]).await?;
    let writer = Client::connect_synced(&weft.room_url("doc")).await?;
    writer.push("saved first")?;
    writer.wait_acked().await?;
    let ready = format!("{}/readyz", weft.http_base());
    assert_eq!(get(&ready, WAIT).await?.0, 200, "log:\n{}", weft.log());

    // The first write after the removal is refused by its own flush, before any probe ran.
    std::fs::remove_dir_all(&data)?;
    writer.push(" then this")?;
    let outcome = writer.wait_acked_or_closed(WAIT).await?;
    assert_ne!(
        outcome,
        Outcome::Acked,
        "a write was acknowledged into a removed directory"
    );
    let why = wait_unready(&weft).await?;
    assert!(why.contains("removed"), "{why}");
    let put = reqwest::Client::new()
        .put(format!("{}/api/docs/doc/text", weft.http_base()))
        .body("replaced")
        .timeout(WAIT)
        .send()
        .await
        .context("PUT text did not answer")?;
    assert!(
        !put.status().is_success(),
        "an API write was acknowledged into a removed directory: {}",
        put.status()
    );

    let status = weft.terminate_within(EXIT_WITHIN).await?;
    assert!(
        !status.success(),
        "exited with {status}; log:\n{}",
        weft.log()
    );
    assert!(weft.log().contains("removed"), "log:\n{}", weft.log());
    Ok(())
}

/// Updates and a snapshot of several MiB are stored in pieces far below sled's blob threshold:
/// no blob file appears, and both load back identical (the updates after a SIGKILL, before any
/// compaction; the snapshot after the compaction a clean shutdown makes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_updates_and_snapshots_are_stored_in_pieces() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut weft = WeftProcess::spawn(&data, &[]).await?;
    let writer = Client::connect_synced(&weft.room_url("big")).await?;
    for i in 0..3 {
        writer.push(&text_block(i, LARGE_EDIT))?;
        writer.wait_acked().await?;
    }
    let expected = writer.text();
    drop(writer);
    weft.kill()?;
    assert_eq!(blob_files(&data), 0, "large updates went to blob files");

    // The updates, as logged.
    let mut weft = WeftProcess::spawn(&data, &[]).await?;
    let reader = Client::connect_synced(&weft.room_url("big")).await?;
    assert!(
        reader.text() == expected,
        "large updates did not load back identical"
    );
    drop(reader);
    assert!(weft.terminate().await?.success(), "log:\n{}", weft.log());
    assert_eq!(
        blob_files(&data),
        0,
        "the large snapshot went to a blob file"
    );
    let snapshot = {
        let store = weft_server::SledStore::open(&data)?;
        let room = weft_protocol::RoomName::parse("big", &weft_protocol::Limits::DEFAULT)?;
        weft_server::Store::load(&store, &room)?.snapshot
    };
    let snapshot_len = snapshot.map_or(0, |s| s.len());
    assert!(
        snapshot_len > LARGE_EDIT,
        "expected a snapshot of several MiB after shutdown, found {snapshot_len} bytes"
    );

    // The snapshot.
    let mut weft = WeftProcess::spawn(&data, &[]).await?;
    let reader = Client::connect_synced(&weft.room_url("big")).await?;
    assert!(
        reader.text() == expected,
        "large snapshot did not load back identical"
    );
    drop(reader);
    assert!(weft.terminate().await?.success(), "log:\n{}", weft.log());
    assert_eq!(blob_files(&data), 0);
    Ok(())
}

/// Waits (at most `within`) for the server to close `client` because its edit was not saved:
/// a control `not_saved` error naming the cause first, then close 1011 "not saved: …".
async fn assert_not_saved(
    client: &Client,
    weft: &WeftProcess,
    within: Duration,
    cause: &str,
) -> anyhow::Result<()> {
    let (code, reason) = tokio::time::timeout(within, client.wait_close())
        .await
        .with_context(|| format!("not closed within {within:?}; log:\n{}", weft.log()))?
        .with_context(|| format!("no close frame; log:\n{}", weft.log()))?;
    assert_eq!(code, 1011, "closed with {code} {reason:?}");
    assert!(
        reason.starts_with("not saved: ") && reason.contains(cause) && reason.len() <= 123,
        "close reason {reason:?}"
    );
    let told = client.controls().into_iter().any(|c| {
        matches!(c, Control::Error { code, message } if code == "not_saved" && message.contains(cause))
    });
    assert!(
        told,
        "no not_saved error; controls: {:?}",
        client.controls()
    );
    Ok(())
}

/// A join to `doc` after its unsaved edits were lost is refused with the store's reason (the
/// data directory removed), and never shows `lost` (edits held only in memory).
async fn assert_join_refused(weft: &WeftProcess, doc: &str, lost: &str) -> anyhow::Result<()> {
    let late = Client::connect(&weft.room_url(doc)).await?;
    let (code, reason) = late.wait_close().await.with_context(|| {
        format!(
            "join not refused; text {:?}; log:\n{}",
            late.text(),
            weft.log()
        )
    })?;
    assert_eq!(code, 1011, "join answered {code} {reason:?}");
    assert!(
        reason.starts_with("document could not be loaded") && reason.contains("removed"),
        "{reason}"
    );
    assert!(
        !late.text().contains(lost),
        "served unsaved edits: {:?}",
        late.text()
    );
    Ok(())
}

/// `PUT text` on `doc`: refused with 503 `store_failed`.
async fn assert_api_write_refused(weft: &WeftProcess, doc: &str) -> anyhow::Result<()> {
    let put = reqwest::Client::new()
        .put(format!("{}/api/docs/{doc}/text", weft.http_base()))
        .body("replaced")
        .timeout(WAIT)
        .send()
        .await
        .context("PUT text did not answer")?;
    let status = put.status().as_u16();
    let body = put.text().await.unwrap_or_default();
    assert_eq!(status, 503, "PUT text on {doc}: {body}");
    assert!(body.contains("store_failed"), "{body}");
    Ok(())
}

/// Once the store fails, a writer that opted in to control messages learns its edit was not
/// saved and why; a new join to that document is refused instead of being served edits that
/// never reached the disk; API writes answer 503 `store_failed`, on that document and on one
/// whose edits were all saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_store_tells_writers_and_serves_no_unsaved_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut weft = WeftProcess::spawn(&data, &[]).await?;
    let other = Client::connect_synced(&weft.room_url("other")).await?;
    other.push("saved elsewhere")?;
    other.wait_acked().await?;
    let writer = Client::connect_synced(&weft.room_url("doc")).await?;
    writer.hello().await?;
    writer.push("saved first")?;
    writer.wait_acked().await?;

    std::fs::remove_dir_all(&data)?;
    writer.push(" never saved")?;
    assert_not_saved(&writer, &weft, WAIT, "removed").await?;
    assert_join_refused(&weft, "doc", "never saved").await?;
    assert_api_write_refused(&weft, "doc").await?;
    assert_api_write_refused(&weft, "other").await?;

    let status = weft.terminate_within(EXIT_WITHIN).await?;
    assert!(!status.success(), "exited with {status}");
    Ok(())
}

/// Relaxed durability broadcasts before the flush: when the flush then fails, the writer still
/// learns, within a bounded time, that its edit was not saved, and the document is not served
/// from memory afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_writer_learns_its_flush_failed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut weft = WeftProcess::spawn(&data, &["--durability", "relaxed"]).await?;
    let writer = Client::connect_synced(&weft.room_url("doc")).await?;
    writer.hello().await?;
    writer.push("saved first")?;
    weft_tests::wait_until("saved", WAIT, || {
        writer
            .controls()
            .iter()
            .any(|c| matches!(c, Control::Saved { .. }))
    })
    .await?;

    std::fs::remove_dir_all(&data)?;
    writer.push(" never saved")?;
    assert_not_saved(&writer, &weft, Duration::from_secs(5), "removed").await?;
    assert_join_refused(&weft, "doc", "never saved").await?;

    let status = weft.terminate_within(EXIT_WITHIN).await?;
    assert!(!status.success(), "exited with {status}");
    Ok(())
}
