//! The JSON API over real HTTP: document listing with metadata and live user counts.

use serde_json::Value;
use weft_tests::{Client, TestServer, WAIT};

/// `GET /api/docs` lists stored documents, newest first, with titles and who is connected,
/// and pages through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_documents_with_live_users() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = Client::connect_synced(&server.room_url("groceries")).await?;
    a.push("Groceries\nmilk")?;
    a.wait_acked().await?;
    let b = Client::connect_synced(&server.room_url("plans")).await?;
    b.push("Plans for Monday")?;
    b.wait_acked().await?;
    drop(b);

    let http = reqwest::Client::new();
    let url = format!("{}/api/docs", server.http_base());
    let page: Value = http
        .get(&url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(page["total"], 2, "{page}");
    let docs = page["docs"].as_array().expect("docs array");
    let ids: Vec<&str> = docs.iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, ["plans", "groceries"], "newest first: {page}");
    assert_eq!(docs[1]["users"], 1, "a is connected to groceries: {page}");
    assert!(docs[1]["update_count"].as_u64() >= Some(1));
    assert!(page["next_offset"].is_null());

    let first: Value = http
        .get(format!("{url}?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(first["docs"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["next_offset"], 1);
    // Titles (first lines) show up within seconds, long before any compaction.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page: Value = http.get(&url).send().await?.json().await?;
        let docs = page["docs"].as_array().cloned().unwrap_or_default();
        let title_of = |id: &str| {
            docs.iter()
                .find(|d| d["id"] == id)
                .map(|d| d["title"].clone())
        };
        if title_of("groceries") == Some("Groceries".into())
            && title_of("plans") == Some("Plans for Monday".into())
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {WAIT:?} waiting for titles; last listing: {page}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(a);
    Ok(())
}
