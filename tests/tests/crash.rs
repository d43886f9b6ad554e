//! Crash containment beyond panics, end to end with the real binary in a child process: an
//! update that kills the process inside yrs is never on disk (apply before persist), the next
//! start finds its in-flight mark, refuses the same bytes from then on, quarantines a stored
//! update that killed a replay, and serves every document.
//!
//! No input is known to crash yrs 0.28 outright, so the process is `weft-fault-injection` (the
//! `weft` binary with weft-server's `fault-injection` feature): it aborts when an update holding
//! the bytes in `WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING` reaches yrs, right where yrs would crash.

use std::os::unix::process::ExitStatusExt as _;

use weft_protocol::{encode_sync, CloseCode, SYNC_UPDATE};
use weft_tests::{weft_binary, weft_fault_injection_binary, Client, WeftProcess};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Text, Transact, Update};

const ENV: &str = "WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING";
const SIGABRT: i32 = 6;
/// What the restarted server logs for each mark a crash left.
const MARK_LOG: &str = "the previous process died while applying this update";

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

    // Acknowledged edits in three documents (strict durability: echoed means on disk).
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

    // The poisoned update kills the process.
    let poison = append_update(&alpha.full_state(), POISON)?;
    let frame = encode_sync(SYNC_UPDATE, &poison);
    let poisoner = Client::connect_synced(&weft.room_url("alpha")).await?;
    poisoner.send_raw(frame.clone())?;
    let status = weft.wait_exit().await?;
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "expected an abort, got {status}; log:\n{}",
        weft.log()
    );
    drop((alpha, beta, gamma, poisoner));

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

    // The same bytes are refused (1007) while another member keeps editing.
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
    assert!(!watcher.text().contains(POISON));
    assert!(
        weft.log()
            .contains("refused an update that crashed the server before"),
        "no WARN for the refusal; log:\n{}",
        weft.log()
    );
    drop((writer, watcher, again));
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

/// A stored update that kills the process while its document is replayed at load is moved to
/// quarantine at the next start, and the document loads without it (no crash loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_update_that_kills_the_replay_is_quarantined() -> anyhow::Result<()> {
    const POISON: &str = "REPLAY-POISON-5eed";
    let dir = tempfile::tempdir()?;
    let fault = weft_fault_injection_binary()?;
    let marker = hex(POISON.as_bytes());

    // Stored while harmless: no marker configured yet. SIGKILL keeps the log uncompacted.
    let mut weft = WeftProcess::spawn_bin(&fault, dir.path(), &[], &[]).await?;
    let c = Client::connect_synced(&weft.room_url("doc")).await?;
    c.push("before ")?;
    c.wait_acked().await?;
    c.push(POISON)?;
    c.wait_acked().await?;
    c.push(" after")?;
    c.wait_acked().await?;
    let other = Client::connect_synced(&weft.room_url("other")).await?;
    other.push("other document")?;
    other.wait_acked().await?;
    drop((c, other));
    weft.kill()?;

    // Now the replay of that stored update aborts the process.
    let mut weft = WeftProcess::spawn_bin(&fault, dir.path(), &[], &[(ENV, &marker)]).await?;
    let _joining = Client::connect(&weft.room_url("doc")).await?;
    let status = weft.wait_exit().await?;
    assert_eq!(status.signal(), Some(SIGABRT), "log:\n{}", weft.log());

    // Even the fault build with the marker still set comes back: the update is quarantined.
    let weft = WeftProcess::spawn_bin(&fault, dir.path(), &[], &[(ENV, &marker)]).await?;
    let log = weft.log();
    assert!(
        log.lines()
            .any(|l| l.contains(MARK_LOG) && l.contains("stored update 2, replayed at load")),
        "no replay mark consumed; log:\n{log}"
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
