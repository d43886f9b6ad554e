//! Faults nobody planned for, over real sockets: one request or one connection doing something
//! legal but expensive must not cost everyone else. A large text rewrite through the API runs
//! off the room's task.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_tests::{Client, TestServer, WAIT};

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
