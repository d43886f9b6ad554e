//! Faults nobody planned for, over real sockets: one request or one connection doing something
//! legal but expensive must not cost everyone else. A large text rewrite through the API runs
//! off the room's task; one frame asking for the document many times gets it once; typing hints
//! are rate-limited; a title has a size limit.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_protocol::{encode_sync, Control, Message, SYNC_STEP1};
use weft_tests::{within, Client, RawSocket, TestServer, WAIT};

/// Lines of about 60 characters, `lines` of them, random from `seed`.
fn random_lines(seed: u64, lines: usize) -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..lines)
        .map(|_| {
            (0..60)
                .map(|_| char::from(rng.gen_range(b'a'..=b'z')))
                .collect::<String>()
                + "\n"
        })
        .collect()
}

/// `base` with every third line replaced by a random one from `seed`.
fn rewritten(base: &[String], seed: u64) -> String {
    let fresh = random_lines(seed, base.len());
    base.iter()
        .zip(&fresh)
        .enumerate()
        .map(|(i, (old, new))| if i % 3 == 0 { new } else { old }.as_str())
        .collect()
}

/// `PUT text` of a 200,000-character rewrite (a character diff of it would take hours) does
/// not stall the room: while two such requests run, a member's edits are acknowledged and
/// reach another member, and both requests complete with the text exactly as requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rewrites_do_not_stall_the_room() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let base = random_lines(1, 200_000 / 61);
    let created = http
        .post(format!("{}/api/docs", server.http_base()))
        .json(&json!({ "id": "big", "text": base.concat() }))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let writer = Client::connect_synced(&server.room_url("big")).await?;
    let reader = Client::connect_synced(&server.room_url("big")).await?;
    let url = format!("{}/api/docs/big/text", server.http_base());
    let texts = [rewritten(&base, 2), rewritten(&base, 3)];
    let puts: Vec<_> = texts
        .iter()
        .map(|text| tokio::spawn(http.put(&url).body(text.clone()).send()))
        .collect();

    // The member keeps editing (another shared type, so `content` stays the PUTs' alone) until
    // both requests are done; each edit must come back and reach the reader in bounded time.
    let mut edits = 0;
    while edits < 3 || !puts.iter().all(|p| p.is_finished()) {
        writer.insert_into("notes", 0, "x")?;
        writer.wait_acked().await?;
        edits += 1;
        let want = "x".repeat(edits);
        let seen = || reader.text_of("notes") == want;
        weft_tests::wait_until("the reader to get the edit", WAIT, seen).await?;
        anyhow::ensure!(edits < 10_000, "the rewrites never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut versions = Vec::new();
    for put in puts {
        let written: Value = put.await??.error_for_status()?.json().await?;
        versions.push(written["version"].as_u64().unwrap_or_default());
    }
    let last = if versions[0] > versions[1] { 0 } else { 1 };
    let text = http.get(&url).send().await?.text().await?;
    assert!(text == texts[last], "the text is not the last PUT's");
    reader
        .wait_text("the last rewrite", |t| t == texts[last])
        .await?;
    Ok(())
}

/// One frame of 64 sync step 1 messages on a 3 MB document gets one sync step 2, not 64 (each a
/// copy of the document), and the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_frame_gets_one_sync_step2() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/docs", server.http_base()))
        .json(&json!({ "id": "large", "text": "y".repeat(3 * 1024 * 1024) }))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut socket = RawSocket::connect(&server.room_url("large")).await?;
    let step1 = encode_sync(SYNC_STEP1, &[0]);
    socket.send(WsMessage::binary(step1.repeat(64))).await?;
    // Answered after everything before it: the room has handled the whole frame by then.
    let hello = Message::Control(Control::Hello { user: None }).encode();
    socket.send(WsMessage::binary(hello)).await?;
    let step2s = within("the welcome after the frame", WAIT, async {
        let mut step2s = 0;
        loop {
            for m in socket.next_messages().await? {
                match m {
                    Message::SyncStep2(_) => step2s += 1,
                    Message::Control(Control::Welcome { .. }) => return Ok(step2s),
                    _ => {}
                }
            }
        }
    })
    .await?;
    assert_eq!(step2s, 1, "sync step 2 messages for one frame");
    Ok(())
}

/// A member sending 1,000 typing hints at once has at most a few dozen relayed to the others
/// (the rest are dropped: they are hints), and nobody is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_hints_are_rate_limited() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = server.room_url("typing");
    let typist = Client::connect_synced(&url).await?;
    let watcher = Client::connect_synced(&url).await?;
    typist.hello().await?;
    watcher.hello().await?;
    let hint = Message::Control(Control::Typing {
        connection: None,
        user: None,
        active: true,
    })
    .encode();
    for _ in 0..1000 / 50 {
        typist.send_raw(hint.repeat(50))?;
    }
    // Delivered after every relay of the hints sent before it.
    typist.push("done")?;
    typist.wait_acked().await?;
    watcher
        .wait_text("the edit after the hints", |t| t == "done")
        .await?;
    let relayed = watcher
        .controls()
        .iter()
        .filter(|c| matches!(c, Control::Typing { .. }))
        .count();
    assert!(
        (1..=40).contains(&relayed),
        "{relayed} of 1,000 hints relayed"
    );
    for c in [&typist, &watcher] {
        assert!(c.close_frame().is_none() && !c.is_disconnected());
    }
    Ok(())
}

/// A title given through the API may have 200 characters; a longer one is refused with 400
/// `title_too_long` and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_have_a_size_limit() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let docs = format!("{}/api/docs", server.http_base());
    let create = |id: &str, title: String| {
        http.post(&docs)
            .json(&json!({ "id": id, "text": "body", "title": title }))
            .send()
    };
    let ok = create("fits", "é".repeat(200)).await?;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let long = create("long", "é".repeat(201)).await?;
    assert_eq!(long.status(), StatusCode::BAD_REQUEST);
    let body: Value = long.json().await?;
    assert_eq!(body["code"], "title_too_long", "{body}");
    let huge = create("huge", "t".repeat(4 * 1024 * 1024)).await?;
    assert_eq!(huge.status(), StatusCode::BAD_REQUEST);
    for (id, status) in [("fits", StatusCode::OK), ("long", StatusCode::NOT_FOUND)] {
        let got = http.get(format!("{docs}/{id}")).send().await?;
        assert_eq!(got.status(), status, "{id}");
    }
    Ok(())
}
