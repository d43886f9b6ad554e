//! Crash containment beyond panics, end to end with the real binary in a child process: an
//! update that kills the process inside yrs is never on disk (apply before persist), the next
//! start finds its in-flight mark, refuses the same bytes from then on, quarantines a stored
//! update proven to kill a replay (it killed its proving replay too), and serves every
//! document; a process killed by anything else in the middle of a load loses nothing.
//!
//! No input is known to crash yrs 0.28 outright, so the process is `weft-fault-injection` (the
//! `weft` binary with weft-server's `fault-injection` feature): it aborts when an update holding
//! the bytes in `WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING` reaches yrs, right where yrs would crash,
//! and with `WEFT_FAULT_PAUSE_LOAD=<n>` stops its n-th replayed entry under its mark, where the
//! test kills it.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;

use anyhow::Context as _;
use weft_protocol::{encode_sync, CloseCode, SYNC_UPDATE};
use weft_tests::{wait_until, weft_binary, weft_fault_injection_binary, Client, WeftProcess, WAIT};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Text, Transact, Update};

const ENV: &str = "WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING";
const SIGABRT: i32 = 6;
/// What the restarted server logs for each mark that blames its bytes.
const MARK_LOG: &str = "the previous process died while applying this update";
/// What the restarted server logs for a stored entry a dead process was replaying.
const SUSPECT_LOG: &str = "suspect, not refused";
/// What a load logs when the suspect entry applied again.
const CLEARED_LOG: &str = "suspicion cleared";
/// Stops the n-th replayed entry of the fault-injection build under its in-flight mark.
const PAUSE_ENV: &str = "WEFT_FAULT_PAUSE_LOAD";
/// What that build prints once paused (followed by the entry's number).
const PAUSED: &str = "fault injection: load paused under the in-flight mark of entry";
/// No compaction while the tests arrange the log, and no rate limit on a fast writer.
const FLAGS: [&str; 4] = [
    "--compact-every",
    "1000000",
    "--max-frames-per-sec",
    "1000000",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An update appending `text` to the end of the document whose full state is `state`, made by a
/// peer of its own (fixed client id), so the test holds its exact bytes.
fn append_update(state: &[u8], text: &str) -> anyhow::Result<Vec<u8>> {
    let doc = Doc::with_client_id(0x7e57);
    let content = doc.get_or_insert_text("content");
    doc.transact_mut().apply_update(Update::decode_v1(state)?)?;
    let mut txn = doc.transact_mut();
    let end = content.len(&txn);
    content.insert(&mut txn, end, text);
    Ok(txn.encode_update_v1())
}

/// Writes acknowledged edits to "alpha", "beta" and "gamma" (strict durability: echoed means on
/// disk), then sends `poison` appended to "alpha" and waits for the process to abort. Returns
/// the poisoned update.
async fn abort_with_member_update(weft: &mut WeftProcess, poison: &str) -> anyhow::Result<Vec<u8>> {
    let alpha = Client::connect_synced(&weft.room_url("alpha")).await?;
    alpha.push("alpha one. ")?;
    alpha.push("alpha two. ")?;
    alpha.wait_acked().await?;
    let beta = Client::connect_synced(&weft.room_url("beta")).await?;
    beta.push("beta text")?;
    beta.wait_acked().await?;
    let gamma = Client::connect_synced(&weft.room_url("gamma")).await?;
    gamma.push("gamma text")?;
    gamma.wait_acked().await?;

    let update = append_update(&alpha.full_state(), poison)?;
    let poisoner = Client::connect_synced(&weft.room_url("alpha")).await?;
    poisoner.send_raw(encode_sync(SYNC_UPDATE, &update))?;
    let status = weft.wait_exit().await?;
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "expected an abort, got {status}; log:\n{}",
        weft.log()
    );
    Ok(update)
}

/// Checks that `frame` is refused with 1007 in "alpha" while another member keeps editing.
async fn refused_while_others_edit(
    weft: &WeftProcess,
    frame: Vec<u8>,
    poison: &str,
) -> anyhow::Result<()> {
    let writer = Client::connect_synced(&weft.room_url("alpha")).await?;
    let watcher = Client::connect_synced(&weft.room_url("alpha")).await?;
    let again = Client::connect_synced(&weft.room_url("alpha")).await?;
    again.send_raw(frame)?;
    let (code, reason) = again.wait_close().await?;
    assert_eq!(code, CloseCode::InvalidData, "{reason}");
    writer.push("still editing")?;
    writer.wait_acked().await?;
    watcher
        .wait_text("the edit after the refusal", |t| {
            t.ends_with("still editing")
        })
        .await?;
    assert!(!watcher.text().contains(poison));
    assert!(
        weft.log()
            .contains("refused an update that crashed the server before"),
        "no WARN for the refusal; log:\n{}",
        weft.log()
    );
    Ok(())
}

/// A member's update that aborts the process inside the apply path: it is not on disk after the
/// restart, every acknowledged edit is, all documents load, the mark was consumed (logged once),
/// and the same bytes are refused with 1007 while other members keep editing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_that_kills_the_process_is_refused_after_restart() -> anyhow::Result<()> {
    const POISON: &str = "POISON-c0ffee";
    let dir = tempfile::tempdir()?;
    let fault = weft_fault_injection_binary()?;
    let marker = hex(POISON.as_bytes());
    let mut weft = WeftProcess::spawn_bin(&fault, dir.path(), &[], &[(ENV, &marker)]).await?;
    let poison = abort_with_member_update(&mut weft, POISON).await?;

    // Restart with the normal binary: it has no fault injection, so the marker is inert there.
    let mut weft =
        WeftProcess::spawn_bin(&weft_binary()?, dir.path(), &[], &[(ENV, &marker)]).await?;
    let log = weft.log();
    let mark_line = log
        .lines()
        .find(|l| l.contains(MARK_LOG))
        .unwrap_or_else(|| panic!("no mark consumed at start; log:\n{log}"));
    assert!(mark_line.contains("ERROR"), "{mark_line}");
    assert!(mark_line.contains("doc=alpha"), "{mark_line}");
    assert!(
        mark_line.contains(&format!("size={}", poison.len())),
        "{mark_line}"
    );
    for (room, expected) in [
        ("alpha", "alpha one. alpha two. "),
        ("beta", "beta text"),
        ("gamma", "gamma text"),
    ] {
        let c = Client::connect_synced(&weft.room_url(room)).await?;
        assert_eq!(c.text(), expected, "document {room} after the crash");
    }
    refused_while_others_edit(&weft, encode_sync(SYNC_UPDATE, &poison), POISON).await?;
    weft.terminate().await?;

    // Consumed: the next start finds no mark, and the refusal persists.
    let weft = WeftProcess::spawn(dir.path(), &[]).await?;
    assert!(
        !weft.log().contains(MARK_LOG),
        "mark reported twice:\n{}",
        weft.log()
    );
    let again = Client::connect_synced(&weft.room_url("alpha")).await?;
    again.send_raw(encode_sync(SYNC_UPDATE, &poison))?;
    assert_eq!(again.wait_close().await?.0, CloseCode::InvalidData);
    let check = Client::connect_synced(&weft.room_url("alpha")).await?;
    assert_eq!(check.text(), "alpha one. alpha two. still editing");
    Ok(())
}

/// Stores "before ", `poison`, " after" in "doc" and "other document" in "other" with no marker
/// configured (harmless then), and SIGKILLs the process so the log stays uncompacted.
async fn store_with_poison(fault: &Path, dir: &Path, poison: &str) -> anyhow::Result<()> {
    let mut weft = WeftProcess::spawn_bin(fault, dir, &[], &[]).await?;
    let c = Client::connect_synced(&weft.room_url("doc")).await?;
    c.push("before ")?;
    c.wait_acked().await?;
    c.push(poison)?;
    c.wait_acked().await?;
    c.push(" after")?;
    c.wait_acked().await?;
    let other = Client::connect_synced(&weft.room_url("other")).await?;
    other.push("other document")?;
    other.wait_acked().await?;
    drop((c, other));
    weft.kill()
}

/// Opens `room`, whose load must abort the process, and waits for the abort.
async fn load_aborts(weft: &mut WeftProcess, room: &str) -> anyhow::Result<()> {
    let _joining = Client::connect(&weft.room_url(room)).await?;
    let status = weft.wait_exit().await?;
    assert_eq!(status.signal(), Some(SIGABRT), "log:\n{}", weft.log());
    Ok(())
}

/// A stored update that kills the process while its document is replayed at load is suspect at
/// the next start, kills the proving replay too, and is moved to quarantine at the start after
/// that; the document loads without it (no crash loop: two restarts, one more than before
/// suspicions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_update_that_kills_the_replay_is_quarantined() -> anyhow::Result<()> {
    const POISON: &str = "REPLAY-POISON-5eed";
    let dir = tempfile::tempdir()?;
    let fault = weft_fault_injection_binary()?;
    let marker = hex(POISON.as_bytes());
    store_with_poison(&fault, dir.path(), POISON).await?;

    // Now the replay of that stored update aborts the process.
    let mut weft = WeftProcess::spawn_bin(&fault, dir.path(), &[], &[(ENV, &marker)]).await?;
    load_aborts(&mut weft, "doc").await?;

    // The next start only suspects it (an unrelated kill could have left the same mark); the
    // next load replays it under a proving mark, and it aborts the process again.
    let mut weft = WeftProcess::spawn_bin(&fault, dir.path(), &[], &[(ENV, &marker)]).await?;
    let log = weft.log();
    assert!(
        log.lines()
            .any(|l| l.contains(SUSPECT_LOG) && l.contains("stored update 2, replayed at load")),
        "no suspicion at start; log:\n{log}"
    );
    assert!(!log.contains(MARK_LOG), "blamed without proof; log:\n{log}");
    load_aborts(&mut weft, "doc").await?;
    let log = weft.log();
    assert!(log.contains("under a proving mark"), "log:\n{log}");

    // That is proof: even the fault build with the marker still set comes back, the update is
    // quarantined.
    let weft = WeftProcess::spawn_bin(&fault, dir.path(), &[], &[(ENV, &marker)]).await?;
    let log = weft.log();
    assert!(
        log.lines().any(|l| l.contains(MARK_LOG)
            && l.contains("stored update 2, replayed at load to prove a suspicion")),
        "no proving mark consumed; log:\n{log}"
    );
    let doc = Client::connect_synced(&weft.room_url("doc")).await?;
    let text = doc.text();
    assert!(!text.contains(POISON), "{text}");
    assert!(text.starts_with("before "), "{text}");
    let other = Client::connect_synced(&weft.room_url("other")).await?;
    assert_eq!(other.text(), "other document");
    assert!(
        log.lines()
            .any(|l| l.contains("update quarantined") && l.contains("seq=2")),
        "the stored update was not quarantined; log:\n{log}"
    );
    Ok(())
}

/// Writes the document `big`: "START " and 3,000 acknowledged updates of 50 characters
/// (150,006 characters); the first 1,000 go into the snapshot (compacted at a graceful stop),
/// the last 2,000 stay in the log (SIGKILL, compaction off). Returns its text.
async fn store_large_document(bin: &Path, dir: &Path) -> anyhow::Result<String> {
    let mut expected = String::from("START ");
    for (first, count) in [(0, 1000), (1000, 2000)] {
        let mut weft = WeftProcess::spawn_bin(bin, dir, &FLAGS, &[]).await?;
        let c = Client::connect_synced(&weft.room_url("big")).await?;
        if first == 0 {
            c.push("START ")?;
        }
        for i in first..first + count {
            let line = format!("{:<49}\n", format!("line {i} of the large document"));
            c.push(&line)?;
            expected.push_str(&line);
        }
        c.wait_acked().await?;
        assert_eq!(c.text().len(), expected.len());
        drop(c);
        if first == 0 {
            weft.terminate().await?;
        } else {
            weft.kill()?;
        }
    }
    Ok(expected)
}

/// The first WARN and ERROR lines of a log: a load that quarantines a cascade logs thousands.
fn complaints(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    let mut out = lines
        .iter()
        .take(20)
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > 20 {
        out.push_str(&format!("\n... and {} more", lines.len() - 20));
    }
    out
}

/// Starts the fault-injection build, opens `big` and SIGKILLs the process while it replays
/// entry `entry` (1: the snapshot) under that entry's in-flight mark.
async fn kill_during_load(bin: &Path, dir: &Path, entry: &str) -> anyhow::Result<()> {
    let mut weft = WeftProcess::spawn_bin(bin, dir, &FLAGS, &[(PAUSE_ENV, entry)]).await?;
    let url = weft.room_url("big");
    let joining = tokio::spawn(async move { Client::connect(&url).await });
    let cue = format!("{PAUSED} {entry}\n");
    wait_until(&format!("the load to pause at entry {entry}"), WAIT, || {
        weft.log().contains(&cue)
    })
    .await
    .with_context(|| format!("log:\n{}", weft.log()))?;
    weft.kill()?;
    joining.abort();
    Ok(())
}

/// A SIGKILL (as from the OOM killer) in the middle of a document's load, once while the
/// snapshot is replayed and once while an update in the middle of the log is: the entry is only
/// suspect, the next start loads every acknowledged character, nothing is quarantined or
/// refused, and the suspicion is cleared by that load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_load_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fault = weft_fault_injection_binary()?;
    let expected = store_large_document(&fault, dir.path()).await?;
    assert_eq!(expected.len(), 150_006);

    // Entry 1 is the snapshot; entry 1,000 is update 1,000 of the 2,000 in the log.
    for (entry, what) in [("1", "the snapshot"), ("1000", "stored update")] {
        kill_during_load(&fault, dir.path(), entry).await?;
        let mut weft = WeftProcess::spawn_bin(&weft_binary()?, dir.path(), &FLAGS, &[]).await?;
        let c = Client::connect_synced(&weft.room_url("big"))
            .await
            .with_context(|| {
                format!("killed at entry {entry}: no document; log:\n{}", weft.log())
            })?;
        let text = c.text();
        assert_eq!(
            text.len(),
            expected.len(),
            "killed at entry {entry}: the document came back with {} of {} characters, \
             starting {:?}; warnings and errors:\n{}",
            text.len(),
            expected.len(),
            text.chars().take(40).collect::<String>(),
            complaints(&weft.log())
        );
        assert!(
            text == expected,
            "killed at entry {entry}: the text differs"
        );
        let log = weft.log();
        for bad in [
            MARK_LOG,
            "refusing these bytes",
            "quarantined",
            "does not load",
        ] {
            let complaints = complaints(&log);
            assert!(
                !log.contains(bad),
                "{bad:?} after a kill at entry {entry}:\n{complaints}"
            );
        }
        assert!(
            log.lines()
                .any(|l| l.contains(SUSPECT_LOG) && l.contains(what)),
            "no suspicion of {what} at start; log:\n{log}"
        );
        assert!(
            log.contains(CLEARED_LOG),
            "suspicion not cleared; log:\n{log}"
        );
        drop(c);
        // SIGKILL again, so the next round finds the same snapshot and log.
        weft.kill()?;
    }
    Ok(())
}
