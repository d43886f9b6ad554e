//! Durability: documents survive restarts, idle unloads and SIGKILL; the log is compacted; a
//! corrupt, foreign or locked data directory refuses to start; a stored update that no longer
//! applies is quarantined while the rest of the document loads; the binary runs with glibc's malloc
//! arenas capped.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use weft_protocol::{CloseCode, Limits, RoomName};
use weft_server::{SledStore, Store};
use weft_tests::{run_weft, wait_until, weft_binary, Client, TestServer, WeftProcess, WAIT};

/// Text written through two clients is there after a graceful restart on the same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_edit() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("notes");
    let a = Client::connect_synced(&url).await?;
    let b = Client::connect_synced(&url).await?;
    for i in 0..20 {
        a.push(&format!("a{i} "))?;
        b.insert(0, &format!("b{i} "))?;
    }
    a.wait_text("both writers' edits", |t| {
        t.contains("a19") && t.contains("b19")
    })
    .await?;
    b.wait_text("a's edits at b", |t| t.contains("a19")).await?;
    let text = a.text();
    drop((a, b));
    let (dir, guard) = server.stop().await?;

    let server = TestServer::start_in(&dir, |_| {}).await?;
    let fresh = Client::connect_synced(&server.room_url("notes")).await?;
    assert_eq!(fresh.text(), text, "text after restart");
    drop(fresh);
    server.stop().await?;
    drop(guard);
    Ok(())
}

/// A room with nobody connected is unloaded after the idle period and reloads, intact, on the
/// next join; memory holds open documents only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rooms_unload_and_reload() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.idle_unload_secs = 1).await?;
    let mut texts = Vec::new();
    for r in 0..10 {
        let c = Client::connect_synced(&server.room_url(&format!("doc-{r}"))).await?;
        c.push(&format!("document {r}\nbody of {r}"))?;
        c.wait_acked().await?;
        texts.push(c.text());
        c.close().await;
    }
    assert_eq!(server.stats().rooms_loaded(), 10);
    wait_until("every idle room to unload", WAIT, || {
        server.stats().open_rooms() == 0
    })
    .await?;
    for (r, text) in texts.iter().enumerate() {
        let c = Client::connect_synced(&server.room_url(&format!("doc-{r}"))).await?;
        assert_eq!(&c.text(), text, "doc-{r} after reload");
    }
    assert_eq!(
        server.stats().rooms_loaded(),
        20,
        "each room was loaded again"
    );
    let (dir, guard) = server.stop().await?;
    // Listing reads metadata only: every document, titled by its first line.
    let store = SledStore::open(&dir)?;
    let mut titles: Vec<_> = store
        .list()?
        .into_iter()
        .map(|m| (m.id, m.title.unwrap_or_default()))
        .collect();
    titles.sort();
    let expected: Vec<_> = (0..10)
        .map(|r| (format!("doc-{r}"), format!("document {r}")))
        .collect();
    assert_eq!(titles, expected);
    drop(store);
    drop(guard);
    Ok(())
}

/// Many small edits are folded into the snapshot: the log stays short, the text is identical,
/// and disk use levels off instead of growing with the number of edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_log_and_disk() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.compact_every = 100;
        // A long session compressed into a second or two: far above any typist's frame rate.
        c.max_frames_per_sec = 100_000;
    })
    .await?;
    let url = server.room_url("long-session");
    let c = Client::connect_synced(&url).await?;
    // A long session that keeps the text about the same size: type a word, delete a word.
    let mut sizes = Vec::new();
    let rounds: u32 = 6;
    for round in 0..rounds {
        for i in 0..400u32 {
            if i % 2 == 0 || c.len() < 40 {
                c.push(&format!("w{round}-{i} "))?;
            } else {
                c.delete(0, 6)?;
            }
        }
        c.wait_acked().await?;
        let expected = c.text();
        let reader = Client::connect_synced(&url).await?;
        reader
            .wait_text("a fresh reader to see the session", |t| t == expected)
            .await?;
        drop(reader);
        sizes.push(dir_size(&server.data)?);
    }
    let text = c.text();
    drop(c);
    let (dir, guard) = server.stop().await?;
    {
        let store = SledStore::open(&dir)?;
        let name = RoomName::parse("long-session", &Limits::DEFAULT)?;
        let stored = store.load(&name)?;
        assert!(stored.snapshot.is_some(), "a snapshot was written");
        assert!(
            stored.updates.len() < 100,
            "log holds {} updates after compaction",
            stored.updates.len()
        );
        let meta = store.meta(&name)?.expect("metadata");
        // Clients also answer the server's sync step 1 with what they have, so a few redundant
        // updates are logged on top of the edits.
        assert!(meta.update_count >= u64::from(rounds) * 400, "{meta:?}");
    }
    let server = TestServer::start_in(&dir, |_| {}).await?;
    let fresh = Client::connect_synced(&server.room_url("long-session")).await?;
    assert_eq!(fresh.text(), text, "compacted document is identical");
    drop(fresh);
    server.stop().await?;
    drop(guard);
    // Disk use after the first rounds and at the end: growth is bounded, not per edit.
    let (early, last) = (sizes[1], sizes[rounds as usize - 1]);
    assert!(
        last <= early * 2 + 4 * 1024 * 1024,
        "disk grew from {early} to {last} bytes over the session: {sizes:?}"
    );
    Ok(())
}

/// SIGKILL at random moments while clients type: after a restart, every update that any client
/// had received from the server is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_any_client_saw() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for cycle in 0..5 {
        let mut weft = WeftProcess::spawn(dir.path(), &[]).await?;
        let url = weft.room_url("crash");
        let observer = Client::connect_synced(&url).await?;
        // Everything acknowledged before this cycle must have survived the previous kill.
        let text = observer.text();
        for m in &expected {
            assert!(
                text.contains(m.as_str()),
                "cycle {cycle}: marker {m} lost after SIGKILL; text {text:?}\nlog:\n{}",
                weft.log()
            );
        }
        let writers = [
            Client::connect_synced(&url).await?,
            Client::connect_synced(&url).await?,
            Client::connect_synced(&url).await?,
        ];
        let kill_after = Duration::from_millis(rng.gen_range(200..1500));
        let started = tokio::time::Instant::now();
        let mut n = 0u32;
        while started.elapsed() < kill_after {
            for (w, c) in writers.iter().enumerate() {
                // Ignore send errors: the connection may be going down.
                let _ = c.push(&format!("<{cycle}.{w}.{n}>"));
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        weft.kill()?;
        // Let every client drain what the server wrote before it died.
        for c in writers.iter().chain([&observer]) {
            wait_until("the killed server's socket to end", WAIT, || {
                c.is_disconnected()
            })
            .await?;
        }
        let mut seen = markers(&observer.text());
        for (w, c) in writers.iter().enumerate() {
            // A writer's own markers may be local only; others' markers came from the server.
            let own = format!("<{cycle}.{w}.");
            seen.extend(
                markers(&c.text())
                    .into_iter()
                    .filter(|m| !m.starts_with(&own)),
            );
        }
        assert!(
            !seen.is_empty() || cycle > 0,
            "no update reached any client before the kill"
        );
        expected.extend(seen);
    }
    let weft = WeftProcess::spawn(dir.path(), &[]).await?;
    let last = Client::connect_synced(&weft.room_url("crash")).await?;
    let text = last.text();
    let missing: Vec<_> = expected
        .iter()
        .filter(|m| !text.contains(m.as_str()))
        .collect();
    assert!(missing.is_empty(), "lost after SIGKILL: {missing:?}");
    Ok(())
}

/// In relaxed durability the echo comes first and `saved` follows the flush; whatever was
/// reported saved survives a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_saved_means_durable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relaxed = ["--durability", "relaxed", "--relaxed-flush-ms", "200"];
    let mut weft = WeftProcess::spawn(dir.path(), &relaxed).await?;
    let c = Client::connect_synced(&weft.room_url("relaxed")).await?;
    c.hello().await?;
    c.push("said saved")?;
    c.wait_acked().await?;
    wait_until("a saved notice after the relaxed flush", WAIT, || {
        c.controls()
            .iter()
            .any(|m| matches!(m, weft_protocol::Control::Saved { version } if *version >= 1))
    })
    .await?;
    weft.kill()?;
    drop(c);
    let weft = WeftProcess::spawn(dir.path(), &relaxed).await?;
    let c = Client::connect_synced(&weft.room_url("relaxed")).await?;
    assert_eq!(c.text(), "said saved");
    Ok(())
}

/// SIGTERM makes the real binary close sockets, flush, and exit 0; the text is there after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_keeps_data() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut weft = WeftProcess::spawn(dir.path(), &[]).await?;
    let c = Client::connect_synced(&weft.room_url("term")).await?;
    c.push("before SIGTERM")?;
    c.wait_acked().await?;
    let status = weft.terminate().await?;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        weft.log()
    );
    let (code, _) = c.wait_close().await?;
    assert_eq!(
        code,
        CloseCode::GoingAway,
        "clients are told the server is going away"
    );
    let log = weft.log();
    assert!(log.contains("SIGTERM received"), "log:\n{log}");
    assert!(log.contains("everything flushed"), "log:\n{log}");
    drop(weft);
    let weft = WeftProcess::spawn(dir.path(), &[]).await?;
    let c = Client::connect_synced(&weft.room_url("term")).await?;
    assert_eq!(c.text(), "before SIGTERM");
    Ok(())
}

/// The server caps glibc's malloc arenas by starting itself again with `MALLOC_ARENA_MAX=2`,
/// under the process id it was started with (signals and supervisors still reach it); an
/// operator's own value is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_capped_malloc_arenas_under_its_own_pid() -> anyhow::Result<()> {
    let arenas = |weft: &WeftProcess| -> anyhow::Result<Option<String>> {
        let environ = std::fs::read(format!("/proc/{}/environ", weft.pid()))?;
        Ok(environ
            .split(|b| *b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("MALLOC_ARENA_MAX="))
            .map(str::to_owned))
    };
    let dir = tempfile::tempdir()?;
    let weft = WeftProcess::spawn(dir.path(), &[]).await?;
    assert_eq!(arenas(&weft)?.as_deref(), Some("2"), "log:\n{}", weft.log());
    let c = Client::connect_synced(&weft.room_url("arenas")).await?;
    c.push("served")?;
    c.wait_acked().await?;
    drop(c);
    drop(weft);
    let own = WeftProcess::spawn_bin(
        &weft_binary()?,
        dir.path(),
        &[],
        &[("MALLOC_ARENA_MAX", "5")],
    )
    .await?;
    assert_eq!(arenas(&own)?.as_deref(), Some("5"), "log:\n{}", own.log());
    Ok(())
}

/// A data directory that is locked, not a directory, foreign, or whose database was destroyed
/// makes `weft` exit non-zero with a message that says so; it never starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_directories_refuse_to_start() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let bind = OsStr::new("--bind");
    let any_port = OsStr::new("127.0.0.1:0");
    let data = OsStr::new("--data");

    // Locked: another weft already serves it.
    let locked = root.path().join("locked");
    let running = WeftProcess::spawn(&locked, &[]).await?;
    let (status, out) = run_weft(&[bind, any_port, data, locked.as_os_str()]).await?;
    assert!(
        !status.success(),
        "second weft on a locked dir started: {out}"
    );
    assert!(out.contains("is locked"), "no lock message: {out}");
    drop(running);

    // Not a directory.
    let file = root.path().join("a-file");
    std::fs::write(&file, b"not a directory")?;
    let (status, out) = run_weft(&[bind, any_port, data, file.as_os_str()]).await?;
    assert!(!status.success(), "started on a file: {out}");
    assert!(out.contains("not a directory"), "unclear message: {out}");

    // A foreign, non-empty directory.
    let foreign = root.path().join("foreign");
    std::fs::create_dir(&foreign)?;
    std::fs::write(foreign.join("thesis.txt"), b"my thesis")?;
    let (status, out) = run_weft(&[bind, any_port, data, foreign.as_os_str()]).await?;
    assert!(!status.success(), "started on a foreign directory: {out}");
    assert!(
        out.contains("not a weft data directory"),
        "unclear message: {out}"
    );
    assert_eq!(std::fs::read(foreign.join("thesis.txt"))?, b"my thesis");

    // A store whose database file was destroyed (truncated to nothing or overwritten).
    for (name, damage) in [("truncated", &b""[..]), ("garbled", &[0x5a; 4096][..])] {
        let store = root.path().join(name);
        let server = TestServer::start_in(&store, |_| {}).await?;
        let c = Client::connect_synced(&server.room_url("precious")).await?;
        c.push("years of work")?;
        c.wait_acked().await?;
        drop(c);
        server.stop().await?;
        std::fs::write(store.join("db"), damage)?;
        let (status, out) = run_weft(&[bind, any_port, data, store.as_os_str()]).await?;
        assert!(
            !status.success(),
            "{name}: started on a destroyed store: {out}"
        );
        assert!(
            out.contains("cannot open data directory") || out.contains("could not open"),
            "{name}: unclear message: {out}"
        );
    }
    Ok(())
}

/// An update in the log that no longer applies is moved to quarantine and reported in the
/// document's metadata; the rest of the document loads and stays editable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unappliable_stored_update_is_quarantined() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("mixed");
    let c = Client::connect_synced(&url).await?;
    c.push("good text")?;
    c.wait_acked().await?;
    drop(c);
    let (dir, guard) = server.stop().await?;
    let bad_seq = {
        let store = SledStore::open(&dir)?;
        // Valid framing, nonsense content: yrs cannot decode it as an update.
        let seq = store.append(
            &RoomName::parse("mixed", &Limits::DEFAULT)?,
            &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01],
        )?;
        store.flush()?;
        seq
    };
    let server = TestServer::start_in(&dir, |_| {}).await?;
    let c = Client::connect_synced(&server.room_url("mixed")).await?;
    assert_eq!(c.text(), "good text");
    c.push(", still editable")?;
    c.wait_acked().await?;
    drop(c);
    server.stop().await?;
    let store = SledStore::open(&dir)?;
    let name = RoomName::parse("mixed", &Limits::DEFAULT)?;
    let meta = store.meta(&name)?.expect("metadata");
    assert_eq!(
        meta.quarantined, 1,
        "metadata reports the quarantined update"
    );
    let q = store.quarantined(&name)?;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].seq, bad_seq);
    assert!(
        store
            .load(&name)?
            .updates
            .iter()
            .all(|(s, _)| *s != bad_seq),
        "the bad update left the log"
    );
    drop(store);
    drop(guard);
    Ok(())
}

fn markers(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        out.insert(rest[start..start + len + 1].to_owned());
        rest = &rest[start + len + 1..];
    }
    out
}

fn dir_size(path: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let md = entry.metadata()?;
        total += if md.is_dir() {
            dir_size(&entry.path())?
        } else {
            md.len()
        };
    }
    Ok(total)
}
