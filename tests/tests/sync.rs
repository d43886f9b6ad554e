//! Sync server behaviour over real sockets: convergence, late joiners, resync, awareness,
//! slow members, hostile frames and limits.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_protocol::{CloseCode, Control, Message, UserInfo};
use weft_tests::{wait_until, Client, Edit, RawSocket, TestServer, WAIT};

/// Two clients editing at the same time end with the same text, containing both edits.
#[tokio::test]
async fn two_clients_converge_after_concurrent_edits() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("pair");
    let a = Client::connect_synced(&url).await?;
    let b = Client::connect_synced(&url).await?;
    a.insert(0, "hello ")?;
    b.insert(0, "world ")?;
    a.wait_text("both edits at a", |t| {
        t.contains("hello") && t.contains("world")
    })
    .await?;
    b.wait_text("both edits at b", |t| {
        t.contains("hello") && t.contains("world")
    })
    .await?;
    assert_eq!(a.text(), b.text());
    Ok(())
}

/// Eight clients making random concurrent inserts and deletes converge with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_random_edits_converge() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("crowd");
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(Client::connect_synced(&url).await?);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut markers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut round = 0u32;
    while tokio::time::Instant::now() < deadline {
        for (i, c) in clients.iter().enumerate() {
            let delete = rng.gen_bool(0.3);
            let pick: f64 = rng.gen();
            let marker = format!("<{i}:{round}>");
            let mut inserted = false;
            c.edit(|text| {
                if delete && text.len() > 20 {
                    // Deletes only touch filler dots, so every marker must survive.
                    let dots: Vec<usize> = text.match_indices('.').map(|(p, _)| p).collect();
                    let at = *dots.get((pick * dots.len() as f64) as usize)?;
                    return Some(Edit::Delete(at as u32, 1));
                }
                let at = safe_insert_position(text, (pick * text.len() as f64) as usize);
                inserted = true;
                Some(Edit::Insert(at as u32, format!("{marker}...")))
            })?;
            if inserted {
                markers.push(marker);
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = &clients[0];
    wait_until("all 8 clients to hold identical text", WAIT, || {
        clients.iter().all(|c| c.text() == first.text())
    })
    .await?;
    let text = first.text();
    for m in &markers {
        assert!(text.contains(m.as_str()), "marker {m} lost from {text:?}");
    }
    let late = Client::connect_synced(&url).await?;
    late.wait_text("late joiner to match", |t| t == text)
        .await?;
    Ok(())
}

/// Moves `pos` so an insert never splits an existing marker like `<3:12>`.
fn safe_insert_position(text: &str, pos: usize) -> usize {
    let bytes = text.as_bytes();
    let mut p = pos.min(bytes.len());
    while p > 0 && p < bytes.len() && !(bytes[p] == b'<' || bytes[p - 1] == b'.') {
        p -= 1;
    }
    p
}

/// A client that joins late gets the whole document; a mid-session step 1 is answered.
#[tokio::test]
async fn late_joiner_and_resync() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("late");
    let a = Client::connect_synced(&url).await?;
    for i in 0..50 {
        a.push(&format!("line {i}\n"))?;
    }
    a.wait_acked().await?;
    let late = Client::connect_synced(&url).await?;
    late.wait_text("the full document", |t| {
        t.contains("line 0\n") && t.contains("line 49\n")
    })
    .await?;
    late.resync()?;
    late.wait_synced().await?;
    Ok(())
}

/// A document far larger than one WebSocket frame the server sends (it fragments messages
/// over 32 KiB) reaches joiners whole, several at once, and their edits still converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_of_a_large_document_get_all_of_it() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("large");
    let seed = Client::connect_synced(&url).await?;
    // 24 lines of 10,000 characters: about 240 KB, eight fragments, in one step 2.
    for i in 0..24 {
        seed.push(&format!("{i:02}{}\n", "x".repeat(9_997)))?;
    }
    seed.wait_acked().await?;
    let expected = seed.text();
    let mut joiners = Vec::new();
    // Connected one after another without waiting: their step 2s are in flight together.
    for _ in 0..4 {
        joiners.push(Client::connect(&url).await?);
    }
    for joiner in &joiners {
        joiner.wait_synced().await?;
    }
    // Every copy is checked before anyone types: an edit would reach the others at once.
    for joiner in &joiners {
        let got = joiner.text();
        assert!(
            got == expected,
            "a joiner's copy differs from the seed's ({} characters against {})",
            got.len(),
            expected.len()
        );
    }
    for joiner in &joiners {
        joiner.push("!")?;
    }
    // A text this long in an assertion message is no help: compare lengths.
    wait_until("the joiners' edits at the seed", WAIT, || {
        seed.len() as usize == expected.len() + joiners.len()
    })
    .await?;
    Ok(())
}

/// Awareness reaches others, echoes to the sender, and disappears from the others within a
/// second of the owner's socket dropping without a close frame.
#[tokio::test]
async fn awareness_relay_echo_and_removal_on_drop() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("cursors");
    let a = Client::connect_synced(&url).await?;
    let b = Client::connect_synced(&url).await?;
    let state = r##"{"user":{"name":"Ana","color":"#30bced"},"cursor":null}"##;
    a.set_awareness(1, state)?;
    let id = a.client_id();
    wait_until("b sees a's awareness", WAIT, || {
        b.awareness_of(id).is_some()
    })
    .await?;
    wait_until("a sees its own awareness echoed", WAIT, || {
        a.awareness_of(id).is_some()
    })
    .await?;
    assert_eq!(b.awareness_of(id).as_deref(), Some(state));
    let c = Client::connect_synced(&url).await?;
    wait_until("a late joiner gets current awareness", WAIT, || {
        c.awareness_of(id).is_some()
    })
    .await?;
    a.kill();
    wait_until(
        "a's state removed at b within 1 s of the drop",
        Duration::from_secs(1),
        || b.awareness_of(id).is_none(),
    )
    .await?;
    Ok(())
}

/// An awareness update that tries to overwrite or remove another client's id is dropped.
#[tokio::test]
async fn awareness_spoofing_is_dropped() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("spoof");
    let a = Client::connect_synced(&url).await?;
    let b = Client::connect_synced(&url).await?;
    let mallory = Client::connect_synced(&url).await?;
    a.set_awareness(1, r#"{"user":{"name":"Ana"}}"#)?;
    let id = a.client_id();
    wait_until("b sees a", WAIT, || b.awareness_of(id).is_some()).await?;
    mallory.send_awareness(id, 99, "null")?;
    mallory.send_awareness(id, 100, r#"{"user":{"name":"Mallory"}}"#)?;
    // A marker sent after the spoof proves the spoof was processed before it.
    mallory.set_awareness(1, r#"{"marker":true}"#)?;
    let mid = mallory.client_id();
    wait_until("b sees mallory's own state", WAIT, || {
        b.awareness_of(mid).is_some()
    })
    .await?;
    assert_eq!(
        b.awareness_of(id).as_deref(),
        Some(r#"{"user":{"name":"Ana"}}"#)
    );
    assert!(
        mallory.close_frame().is_none(),
        "spoofing is dropped, not a close"
    );
    Ok(())
}

/// A member that stops reading is closed (1013, or dropped once even a close frame cannot be
/// written) and the rest of the room keeps receiving every update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_member_is_closed_others_keep_receiving() -> anyhow::Result<()> {
    slow_member_case(|c| c.send_queue = 16).await
}

/// The same with a queue limited by bytes instead of frames: a member that stopped reading
/// cannot make the server hold more than `--send-queue-bytes` for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_member_is_closed_by_queued_bytes() -> anyhow::Result<()> {
    slow_member_case(|c| {
        c.send_queue = 1_000_000;
        c.max_message = 256 * 1024;
        c.send_queue_bytes = 1024 * 1024;
    })
    .await
}

/// A stalled member in a room with a watcher and a writer of large updates, on a server
/// configured by `adjust`: the stalled one must go, the watcher must get everything.
async fn slow_member_case(adjust: impl FnOnce(&mut weft_server::Config)) -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        // Large updates as fast as the test sends them.
        c.max_bytes_per_sec = 1 << 30;
        adjust(c);
    })
    .await?;
    let url = server.room_url("slow");
    let watcher = Client::connect_synced(&url).await?;
    watcher.hello().await?;
    // The stalled peer says hello (so the watcher hears when it leaves), then never reads.
    let mut stalled = RawSocket::connect(&url).await?;
    stalled
        .send(WsMessage::binary(
            Message::Control(Control::Hello { user: None }).encode(),
        ))
        .await?;
    wait_until("watcher told the stalled peer joined", WAIT, || {
        watcher
            .controls()
            .iter()
            .any(|c| matches!(c, Control::Joined { .. }))
    })
    .await?;
    let writer = Client::connect_synced(&url).await?;
    let left = || {
        watcher
            .controls()
            .iter()
            .any(|c| matches!(c, Control::Left { .. }))
    };
    // Large updates fill the stalled peer's socket buffers, then its queue.
    let chunk = "x".repeat(64 * 1024);
    let mut sent = 0;
    while sent < 800 && !left() {
        writer.push(&chunk)?;
        sent += 1;
        if sent % 10 == 0 {
            let n = sent * chunk.len();
            watcher
                .wait_text("watcher keeps receiving", |t| t.len() == n)
                .await?;
        }
    }
    wait_until("the stalled peer to be disconnected", WAIT, left).await?;
    let total = sent * chunk.len();
    watcher
        .wait_text("every update at the watcher", |t| t.len() == total)
        .await?;
    // What the stalled peer finally reads ends in a 1013 close or a dropped stream.
    match stalled.expect_close().await {
        Ok((code, reason)) => assert_eq!(code, CloseCode::TryAgainLater, "close reason {reason}"),
        Err(e) => assert!(
            format!("{e:#}").contains("without a close frame")
                || format!("{e:#}").contains("reset"),
            "unexpected end: {e:#}"
        ),
    }
    Ok(())
}

/// Oversize, text, garbage and truncated frames each get their close code, and another room is
/// unaffected throughout.
#[tokio::test]
async fn hostile_frames_get_defined_closes() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_message = 64 * 1024).await?;
    let bystander_url = server.room_url("bystander");
    let a = Client::connect_synced(&bystander_url).await?;
    let b = Client::connect_synced(&bystander_url).await?;
    let url = server.room_url("target");

    let cases: Vec<(&str, WsMessage, CloseCode)> = vec![
        (
            "oversize",
            WsMessage::binary(vec![0u8; 128 * 1024]),
            CloseCode::TooBig,
        ),
        ("text", WsMessage::text("hello"), CloseCode::Unsupported),
        (
            "garbage",
            WsMessage::binary(vec![0x42, 0x13, 0x37]),
            CloseCode::InvalidData,
        ),
        (
            "truncated",
            WsMessage::binary(vec![0x00, 0x02, 0x80]),
            CloseCode::InvalidData,
        ),
        (
            "empty",
            WsMessage::binary(Vec::<u8>::new()),
            CloseCode::InvalidData,
        ),
        (
            "bad update",
            WsMessage::binary(vec![0x00, 0x02, 0x03, 0xff, 0xff, 0xff]),
            CloseCode::InvalidData,
        ),
    ];
    for (i, (name, frame, code)) in cases.into_iter().enumerate() {
        let mut s = RawSocket::connect(&url).await?;
        s.send(frame).await?;
        let (got, reason) = s.expect_close().await?;
        assert_eq!(got, code, "{name}: close {got} ({reason})");
        assert!(
            s.ends_within(Duration::from_secs(5)).await,
            "{name}: handshake did not finish"
        );
        a.push(&format!("[{i}]"))?;
        b.wait_text("bystander room keeps working", |t| {
            t.contains(&format!("[{i}]"))
        })
        .await?;
    }
    // The target room itself still works for well-behaved clients.
    let c = Client::connect_synced(&url).await?;
    c.push("fine")?;
    c.wait_acked().await?;
    assert_eq!(c.text(), "fine");
    Ok(())
}

/// Room names are validated at the URL: a control character gets HTTP 400, no upgrade.
#[tokio::test]
async fn invalid_room_names_are_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let err = RawSocket::connect(&server.room_url("bad%0Aname"))
        .await
        .err();
    let msg = format!("{err:?}");
    assert!(msg.contains("400"), "expected HTTP 400, got {msg}");
    let long = "x".repeat(300);
    let err = RawSocket::connect(&server.room_url(&long)).await.err();
    assert!(format!("{err:?}").contains("400"));
    Ok(())
}

/// Connection limits: beyond the per-room cap a join is closed with 1013; beyond the total cap
/// the upgrade is refused with 503.
#[tokio::test]
async fn connection_limits() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.max_room_connections = 2;
        c.max_connections = 3;
    })
    .await?;
    let url = server.room_url("small");
    let _a = Client::connect_synced(&url).await?;
    let _b = Client::connect_synced(&url).await?;
    let c = Client::connect(&url).await?;
    let (code, _) = c.wait_close().await?;
    assert_eq!(code, CloseCode::TryAgainLater);
    // c's slot frees once its close handshake has finished on the server side.
    let deadline = tokio::time::Instant::now() + WAIT;
    let d = loop {
        match Client::connect_synced(&server.room_url("other")).await {
            Ok(d) => break d,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context("the refused connection's slot never freed"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let err = RawSocket::connect(&server.room_url("other")).await.err();
    assert!(
        format!("{err:?}").contains("503"),
        "expected 503, got {err:?}"
    );
    drop(d);
    Ok(())
}

/// Weft-aware clients get welcome, joined/left with user counts, and typing hints.
#[tokio::test]
async fn control_channel_presence_and_typing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("presence");
    let a = Client::connect_synced(&url).await?;
    a.send_control(Control::Hello {
        user: Some(UserInfo {
            name: "Ana".into(),
            color: None,
        }),
    })?;
    wait_until("welcome for a", WAIT, || {
        a.controls()
            .iter()
            .any(|c| matches!(c, Control::Welcome { users: 1, .. }))
    })
    .await?;
    let b = Client::connect_synced(&url).await?;
    b.send_control(Control::Hello {
        user: Some(UserInfo {
            name: "Bo".into(),
            color: None,
        }),
    })?;
    wait_until("a told that Bo joined", WAIT, || {
        a.controls()
            .iter()
            .any(|c| matches!(c, Control::Joined { user: Some(u), users: 2, .. } if u.name == "Bo"))
    })
    .await?;
    b.send_control(Control::Typing {
        connection: None,
        user: None,
        active: true,
    })?;
    wait_until("a sees Bo typing", WAIT, || {
        a.controls().iter().any(
            |c| matches!(c, Control::Typing { user: Some(u), active: true, .. } if u.name == "Bo"),
        )
    })
    .await?;
    a.push("x")?;
    wait_until("a gets saved", WAIT, || {
        a.controls()
            .iter()
            .any(|c| matches!(c, Control::Saved { version } if *version >= 1))
    })
    .await?;
    b.close().await;
    wait_until("a told that Bo left", WAIT, || {
        a.controls()
            .iter()
            .any(|c| matches!(c, Control::Left { users: 1, .. }))
    })
    .await?;
    // A stock client that never said hello receives no control messages.
    let stock = Client::connect_synced(&url).await?;
    a.push("y")?;
    stock
        .wait_text("stock client syncs", |t| t.contains('y'))
        .await?;
    assert!(stock.controls().is_empty());
    Ok(())
}

/// The close handshake completes cleanly when the client closes.
#[tokio::test]
async fn client_close_handshake_completes() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut s = RawSocket::connect(&server.room_url("bye")).await?;
    let first = s.next_messages().await?;
    assert!(
        matches!(first.as_slice(), [Message::SyncStep1(_)]),
        "got {first:?}"
    );
    s.send(WsMessage::Close(None)).await?;
    assert!(s.ends_within(Duration::from_secs(5)).await);
    Ok(())
}

/// Graceful shutdown closes open sockets with 1001.
#[tokio::test]
async fn shutdown_closes_with_1001() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = Client::connect_synced(&server.room_url("going")).await?;
    server.stop().await?;
    let (code, _) = a.wait_close().await?;
    assert_eq!(code, CloseCode::GoingAway);
    Ok(())
}

/// A peer that stops answering pings is terminated (and its departure announced), while a peer
/// that answers stays connected across many ping intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_peers_are_terminated() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.ping_secs = 1).await?;
    let url = server.room_url("pings");
    let watcher = Client::connect_synced(&url).await?;
    watcher.hello().await?;
    // Says hello, then never reads again, so it never answers a ping.
    let mut silent = RawSocket::connect(&url).await?;
    silent
        .send(WsMessage::binary(
            Message::Control(Control::Hello { user: None }).encode(),
        ))
        .await?;
    wait_until("the silent peer to be terminated", WAIT, || {
        watcher
            .controls()
            .iter()
            .any(|c| matches!(c, Control::Left { users: 1, .. }))
    })
    .await?;
    assert!(
        watcher.close_frame().is_none() && !watcher.is_disconnected(),
        "the responsive watcher must stay connected"
    );
    watcher.push("still here")?;
    watcher.wait_acked().await?;
    drop(silent);
    Ok(())
}

/// A quiet room still sends each member an empty awareness update well within 15 s, so stock
/// y-websocket clients (which reconnect after 30 s of silence) stay connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_rooms_get_keepalives() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut s = RawSocket::connect(&server.room_url("quiet")).await?;
    s.send(WsMessage::binary(weft_protocol::encode_sync(
        weft_protocol::SYNC_STEP1,
        &[0],
    )))
    .await?;
    let joined = tokio::time::Instant::now();
    let keepalive = weft_tests::within(
        "an empty awareness update",
        Duration::from_secs(20),
        async {
            loop {
                let msgs = s.next_messages().await?;
                if msgs
                    .iter()
                    .any(|m| matches!(m, Message::Awareness(a) if a.entries.is_empty()))
                {
                    return anyhow::Ok(joined.elapsed());
                }
            }
        },
    )
    .await?;
    assert!(
        keepalive <= Duration::from_secs(15),
        "first keepalive after {keepalive:?}"
    );
    Ok(())
}

/// A step 2 that brings nothing new (what a reconnecting client sends: its whole state,
/// including every deletion) is neither stored nor broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundant_updates_are_not_stored() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("redundant");
    let a = Client::connect_synced(&url).await?;
    a.push("hello, world")?;
    a.delete(0, 7)?;
    a.wait_acked().await?;
    let meta_url = format!("{}/api/docs/redundant", server.http_base());
    let count = || async {
        let meta: serde_json::Value = reqwest::get(&meta_url).await?.json().await?;
        anyhow::Ok(meta["update_count"].as_u64())
    };
    let before = count().await?;
    assert_eq!(before, Some(2), "two edits stored");
    // Everything a already has, deletions included, as one update.
    a.send_raw(weft_protocol::encode_sync(
        weft_protocol::SYNC_STEP2,
        &a.full_state(),
    ))?;
    // A later real edit is ordered after it on the same socket, so once that one is echoed the
    // redundant one has been handled.
    a.push("!")?;
    a.wait_acked().await?;
    assert_eq!(count().await?, Some(3), "only the real edit was stored");
    assert_eq!(a.text(), "world!");
    Ok(())
}
