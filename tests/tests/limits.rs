//! Per-connection limits over real sockets: frame and byte rates (bytes per address too), the
//! handshake deadline,
//! the document size limit and one awareness client id per connection. Each limit hits only the
//! offending connection; the rest of the room keeps working.

use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_protocol::{
    encode_sync, CloseCode, Control, Message, UserInfo, MAX_USER_NAME_CHARS, SYNC_STEP1,
};
use weft_tests::{wait_until, Client, RawSocket, TestServer, WAIT};

/// A connection flooding frames is closed with 1008; a bystander in the same room is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_flood_is_closed_with_policy_violation() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_frames_per_sec = 20).await?;
    let url = server.room_url("flood");
    let bystander = Client::connect_synced(&url).await?;
    let mut flood = RawSocket::connect(&url).await?;
    flood
        .send(WsMessage::binary(encode_sync(SYNC_STEP1, &[0])))
        .await?;
    for _ in 0..200 {
        // Query-awareness: the cheapest valid message.
        if flood.send(WsMessage::binary(vec![3u8])).await.is_err() {
            break;
        }
    }
    let (code, reason) = flood.expect_close().await?;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy.code(), "rate limit exceeded")
    );
    bystander.push("unaffected")?;
    bystander.wait_acked().await?;
    Ok(())
}

/// A connection sending more bytes per second than allowed is closed with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_flood_is_closed_with_policy_violation() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.max_message = 64 * 1024;
        c.max_bytes_per_sec = 64 * 1024;
    })
    .await?;
    let c = Client::connect_synced(&server.room_url("bytes")).await?;
    let chunk = "x".repeat(60 * 1024);
    for _ in 0..10 {
        if c.push(&chunk).is_err() {
            break;
        }
    }
    let (code, reason) = c.wait_close().await?;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy.code(), "rate limit exceeded")
    );
    Ok(())
}

/// The byte budget is per client address too: a writer thrown out for flooding cannot come
/// back with a full bucket by reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_does_not_refill_the_byte_budget() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        // Burst: one maximal message (64 KiB); refill: 1 KiB/s, so the 24 KiB left after the
        // first chunk needs 16 s to cover another: longer than a connection may stay over its
        // rate (5 s), so the writer is closed rather than only slowed down.
        c.max_message = 64 * 1024;
        c.max_bytes_per_sec = 1024;
    })
    .await?;
    let url = server.room_url("budget");
    let chunk = "x".repeat(40 * 1024);
    let first = Client::connect_synced(&url).await?;
    first.push(&chunk)?;
    first.wait_acked().await?;
    first.push(&chunk)?;
    let (code, _) = first.wait_close().await?;
    assert_eq!(
        code,
        CloseCode::Policy,
        "the second chunk is over the budget"
    );
    let again = Client::connect_synced(&url).await?;
    again.push(&chunk)?;
    let (code, reason) = again.wait_close().await?;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy.code(), "rate limit exceeded"),
        "a new connection from the same address shares the spent budget"
    );
    Ok(())
}

/// A well-formed writer bursting past `--max-frames-per-sec` is slowed down (its socket read
/// only as fast as its rate allows), not closed: clients that do not reconnect (pycrdt, plain
/// yrs) would otherwise lose the rest of their edits. Every keystroke arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_valid_writer_is_slowed_down_not_closed() -> anyhow::Result<()> {
    // 100 frames/s with bursts of 200: 500 one-character transactions need about 3 s of
    // throttling, under the 5 s a connection may stay over its rate.
    let server = TestServer::start_with(|c| c.max_frames_per_sec = 100).await?;
    let url = server.room_url("burst");
    let writer = Client::connect_synced(&url).await?;
    let reader = Client::connect_synced(&url).await?;
    for _ in 0..500 {
        writer.push("x")?;
    }
    writer.wait_acked().await?;
    reader
        .wait_text("all 500 keystrokes", |t| t.len() == 500)
        .await?;
    assert!(
        !writer.is_disconnected(),
        "the bursting writer was closed: {:?}",
        writer.close_frame()
    );
    Ok(())
}

/// A member announcing a 60 KiB name and then sending typing hints cannot fill other members'
/// send queues with copies of that name: the name is cut to 64 characters, the typing hints
/// reach the others with the cut name, and nobody is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_name_cannot_flood_other_members() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        // One maximal message is 1 MiB, and so is what a member may have queued.
        c.max_message = 1024 * 1024;
        c.send_queue_bytes = 1024 * 1024;
    })
    .await?;
    let url = server.room_url("names");
    let victim = Client::connect_synced(&url).await?;
    victim.hello().await?;
    let attacker = Client::connect_synced(&url).await?;
    let name = "n".repeat(60 * 1024);
    attacker.send_control(Control::Hello {
        user: Some(UserInfo { name, color: None }),
    })?;
    let typing = Message::Control(Control::Typing {
        connection: None,
        user: None,
        active: true,
    })
    .encode();
    for _ in 0..4 {
        attacker.send_raw(typing.repeat(64))?;
    }
    wait_until("a typing hint with the cut name", WAIT, || {
        victim.controls().iter().any(|c| {
            matches!(c, Control::Typing { user: Some(u), .. }
                if u.name.chars().count() == MAX_USER_NAME_CHARS)
        })
    })
    .await?;
    victim.push("still here")?;
    victim.wait_acked().await?;
    assert!(
        !victim.is_disconnected(),
        "the victim was closed: {:?}",
        victim.close_frame()
    );
    Ok(())
}

/// A socket that never sends sync step 1 is closed with 1008 after the handshake deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_socket_hits_the_handshake_deadline() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.handshake_secs = 1).await?;
    let mut s = RawSocket::connect(&server.room_url("silent")).await?;
    let (code, _) = s.expect_close().await?;
    assert_eq!(code, CloseCode::Policy);
    // A normal client does the handshake at once and stays.
    let c = Client::connect_synced(&server.room_url("silent")).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!c.is_disconnected(), "a client that sent step 1 was closed");
    Ok(())
}

/// Past the document size limit, writes are refused and the writer is told; the document keeps
/// what it had and other members never see the refused edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_size_limit_refuses_writes() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_doc_bytes = 8 * 1024).await?;
    let url = server.room_url("bounded");
    let writer = Client::connect_synced(&url).await?;
    writer.send_control(Control::Hello { user: None })?;
    let stock = Client::connect_synced(&url).await?;
    writer.push(&"a".repeat(5000))?;
    writer.wait_acked().await?;
    writer.push(&"b".repeat(5000))?;
    wait_until("the writer told the document is full", WAIT, || {
        writer
            .controls()
            .iter()
            .any(|c| matches!(c, Control::Error { code, .. } if code == "document_too_large"))
    })
    .await?;
    stock.push(&"c".repeat(5000))?;
    wait_until(
        "the stock client told through permission-denied",
        WAIT,
        || !stock.permission_denied().is_empty(),
    )
    .await?;
    let fresh = Client::connect_synced(&url).await?;
    assert_eq!(
        fresh.text(),
        "a".repeat(5000),
        "only the accepted edit is stored"
    );
    Ok(())
}

/// A connection may announce one awareness client id; a second one is not relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_awareness_client_id_per_connection() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("ids");
    let a = Client::connect_synced(&url).await?;
    let b = Client::connect_synced(&url).await?;
    a.set_awareness(1, r#"{"user":{"name":"Ana"}}"#)?;
    a.send_awareness(424242, 1, r#"{"user":{"name":"Ghost"}}"#)?;
    a.set_awareness(2, r#"{"user":{"name":"Ana 2"}}"#)?;
    wait_until("b to see a's second state", WAIT, || {
        b.awareness_of(a.client_id())
            .is_some_and(|s| s.contains("Ana 2"))
    })
    .await?;
    assert_eq!(b.awareness_of(424242), None, "the ghost id was relayed");
    Ok(())
}

/// One address may hold only so many sockets (HTTP 429 beyond); closing one frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 2).await?;
    let url = server.room_url("per-ip");
    let a = Client::connect_synced(&url).await?;
    let _b = Client::connect_synced(&url).await?;
    let err = RawSocket::connect(&url).await.err();
    assert!(
        format!("{err:?}").contains("429"),
        "expected 429, got {err:?}"
    );
    a.close().await;
    // The slot frees once the server has finished with a's socket.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Client::connect_synced(&url).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context("the closed connection's slot never freed"));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    Ok(())
}

/// `weft_unfinished_messages_bytes` from `/metrics`.
async fn unfinished_bytes(server: &TestServer) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", server.http_base()))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("weft_unfinished_messages_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no weft_unfinished_messages_bytes in /metrics"))
}

/// Sockets that each send most of a large frame and never finish it hold no more than the
/// read budget (here one maximal message for their address and for the server): the server
/// stops reading them, a small message from the same address still gets through, and when
/// the stalled sockets are dropped the budget is whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_frames_are_bounded_by_the_read_budget() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    const MIB: usize = 1024 * 1024;
    let server = TestServer::start_with(|c| {
        c.max_message = 2 * MIB;
        c.max_unfinished_bytes = 2 * MIB;
        c.max_bytes_per_sec = 64 * MIB as u32;
    })
    .await?;
    let url = server.room_url("unfinished");
    let addr = server.http_base().trim_start_matches("http://").to_owned();
    let payload = 2 * MIB - 64;
    let mut header = vec![0x82, 0xff];
    header.extend_from_slice(&(payload as u64).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let mut writers = Vec::new();
    for _ in 0..4 {
        let tcp = tokio::net::TcpStream::connect(&addr).await?;
        let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp).await?;
        let header = header.clone();
        writers.push(tokio::spawn(async move {
            let tcp = ws.get_mut();
            // All of the frame but its last byte; the writes block once the server stops
            // reading.
            let _ = tcp.write_all(&header).await;
            let _ = tcp.write_all(&vec![0u8; payload - 1]).await;
            std::future::pending::<()>().await;
        }));
    }
    wait_until_async("the stalled frames to fill the budget", || async {
        unfinished_bytes(&server)
            .await
            .is_ok_and(|b| b >= MIB as f64)
    })
    .await?;
    let mut most = 0f64;
    for _ in 0..20 {
        most = most.max(unfinished_bytes(&server).await?);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The budget, plus what each stalled socket may read past it: the 64 KiB floor and one
    // read.
    assert!(
        most <= (3 * MIB) as f64,
        "unfinished frames held {most} bytes against a 2 MiB budget"
    );
    let typist = Client::connect_synced(&url).await?;
    typist.push("small messages still pass")?;
    typist.wait_acked().await?;
    for w in writers {
        w.abort();
    }
    wait_until_async("the budget to be whole again", || async {
        unfinished_bytes(&server).await.is_ok_and(|b| b == 0.0)
    })
    .await
}

/// Polls `check` every 50 ms until it holds, for at most [`WAIT`].
async fn wait_until_async<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}
