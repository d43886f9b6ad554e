//! Version history in a cluster: two Weft nodes on one real NATS server, both with the
//! document open, record its versions once (one node at a time records, ids never collide),
//! every node's History API lists the same versions with the right texts, a restore works
//! through the node that is not recording, versions survive the nodes' restarts, and purging a
//! document from the trash deletes its history for every node.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_tests::nats::{require_nats, NatsServer};
use weft_tests::{Client, TestServer, WAIT};

/// An HTTP client of one node's API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(node: &TestServer) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: node.http_base(),
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let res = self.http.get(format!("{}{path}", self.base)).send().await?;
        Ok((res.status(), res.text().await?))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    async fn put_text(&self, doc: &str, text: &str) -> anyhow::Result<()> {
        let res = self
            .http
            .put(format!("{}/api/docs/{doc}/text", self.base))
            .body(text.to_owned())
            .send()
            .await?;
        ensure!(res.status().is_success(), "PUT text: {}", res.status());
        Ok(())
    }

    async fn delete(&self, path: &str) -> anyhow::Result<StatusCode> {
        let res = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await?;
        Ok(res.status())
    }

    /// Every version of `doc`, newest first.
    async fn versions(&self, doc: &str) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self.get(&format!("/api/docs/{doc}/versions")).await?;
        ensure!(status == StatusCode::OK, "GET versions: {status} {body}");
        let page: Value = serde_json::from_str(&body)?;
        Ok(page["versions"].as_array().cloned().unwrap_or_default())
    }

    async fn text_of(&self, doc: &str, id: &Value) -> anyhow::Result<String> {
        let (status, text) = self
            .get(&format!("/api/docs/{doc}/versions/{id}/text"))
            .await?;
        ensure!(
            status == StatusCode::OK,
            "version {id} text: {status} {text}"
        );
        Ok(text)
    }

    /// Polls until `doc` has a version whose text is `text`; returns the versions.
    async fn wait_text(&self, doc: &str, text: &str) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let versions = self.versions(doc).await?;
            if let Some(newest) = versions.first() {
                if self.text_of(doc, &newest["id"]).await? == text {
                    return Ok(versions);
                }
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for a version of {doc} reading {text:?}: {versions:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A node of the cluster on `nats` that records versions quickly.
async fn node(nats: &NatsServer) -> anyhow::Result<TestServer> {
    let url = nats.url();
    TestServer::start_with(move |c| {
        c.nats.urls = vec![url];
        c.version_idle_secs = 1;
        c.version_every_secs = 3;
    })
    .await
}

/// Ids of `versions` (newest first): strictly decreasing, so none twice.
fn ids(versions: &[Value]) -> anyhow::Result<Vec<u64>> {
    let ids: Vec<u64> = versions.iter().filter_map(|v| v["id"].as_u64()).collect();
    ensure!(
        ids.len() == versions.len(),
        "a version without id: {versions:?}"
    );
    ensure!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "ids not unique and ordered: {ids:?}"
    );
    Ok(ids)
}

/// The versions both nodes list once they agree and nothing new comes for a while: the same
/// list through either node.
async fn settled(a: &Api, b: &Api, doc: &str) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last: Option<Vec<Value>> = None;
    loop {
        // Longer than a version takes (1 s idle + the 1 s tick): a late duplicate would show.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (from_a, from_b) = (a.versions(doc).await?, b.versions(doc).await?);
        if from_a == from_b && last.as_ref() == Some(&from_a) {
            return Ok(from_a);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the nodes never agreed on the versions of {doc}:\nA: {from_a:?}\nB: {from_b:?}"
        );
        last = (from_a == from_b).then_some(from_a);
    }
}

/// Texts of `versions` (newest first) read through `api`; no two consecutive unnamed versions
/// read the same (a version recorded twice would).
async fn texts(api: &Api, doc: &str, versions: &[Value]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for v in versions {
        out.push(api.text_of(doc, &v["id"]).await?);
    }
    for (i, pair) in out.windows(2).enumerate() {
        ensure!(
            pair[0] != pair[1] || !versions[i]["name"].is_null(),
            "version {} repeats the text of the one before: {versions:?}",
            versions[i]["id"]
        );
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_history() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster history") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let (a, b) = (node(&nats).await?, node(&nats).await?);
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let doc = "shared-history";
    let (status, body) = api_a
        .post("/api/docs", json!({"id": doc, "text": "one"}))
        .await?;
    ensure!(status == StatusCode::CREATED, "create: {status} {body}");
    // Both nodes keep the document open: each sees every change.
    let on_a = Client::connect_synced(&a.room_url(doc)).await?;
    let on_b = Client::connect_synced(&b.room_url(doc)).await?;
    api_a.wait_text(doc, "one").await?;
    api_b.put_text(doc, "one two").await?;
    api_a.wait_text(doc, "one two").await?;
    on_a.wait_text("B's edit on A", |t| t == "one two").await?;
    api_a.put_text(doc, "one two three").await?;
    api_b.wait_text(doc, "one two three").await?;
    let versions = settled(&api_a, &api_b, doc).await?;
    ids(&versions)?;
    let all = texts(&api_b, doc, &versions).await?;
    ensure!(
        all == ["one two three", "one two", "one"],
        "one version per change, each once: {all:?} {versions:?}"
    );
    ensure!(texts(&api_a, doc, &versions).await? == all);

    // A named version and a restore, both through B.
    let (status, named) = api_b
        .post(
            &format!("/api/docs/{doc}/versions"),
            json!({"name": "from B"}),
        )
        .await?;
    ensure!(
        status == StatusCode::CREATED,
        "named on B: {status} {named}"
    );
    let first = versions.last().context("no first version")?["id"].clone();
    let (status, restored) = api_b
        .post(
            &format!("/api/docs/{doc}/versions/{first}/restore"),
            json!({}),
        )
        .await?;
    ensure!(
        status == StatusCode::OK,
        "restore on B: {status} {restored}"
    );
    ensure!(
        restored["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("Restored from")),
        "{restored}"
    );
    on_a.wait_text("the restore on A", |t| t == "one").await?;
    on_b.wait_text("the restore on B", |t| t == "one").await?;
    let after = settled(&api_a, &api_b, doc).await?;
    let after_ids = ids(&after)?;
    ensure!(
        after
            .iter()
            .any(|v| v["id"] == named["id"] && v["name"] == "from B"),
        "the named version is listed through A: {after:?}"
    );
    ensure!(after[0]["id"] == restored["id"], "{after:?}");
    ensure!(api_a.text_of(doc, &restored["id"]).await? == "one");
    texts(&api_a, doc, &after).await?;
    drop((on_a, on_b));

    // Restarts: a node started afresh lists the same history.
    a.stop().await?;
    b.stop().await?;
    let c = node(&nats).await?;
    let api_c = Api::new(&c);
    let again = api_c.versions(doc).await?;
    ensure!(
        ids(&again)? == after_ids,
        "after restarts: {again:?} vs {after:?}"
    );
    ensure!(again == after);
    ensure!(api_c.text_of(doc, &restored["id"]).await? == "one");
    ensure!(
        api_c
            .text_of(doc, &json!(after_ids[after_ids.len() - 1]))
            .await?
            == "one"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_deletes_the_history_of_every_node() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster history") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let (a, b) = (node(&nats).await?, node(&nats).await?);
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let doc = "purged-history";
    let (status, body) = api_a
        .post("/api/docs", json!({"id": doc, "text": "old life"}))
        .await?;
    ensure!(status == StatusCode::CREATED, "create: {status} {body}");
    api_a.wait_text(doc, "old life").await?;
    api_a.put_text(doc, "old life, longer").await?;
    // B reads the history A records.
    api_b.wait_text(doc, "old life, longer").await?;
    ensure!(api_a
        .delete(&format!("/api/docs/{doc}"))
        .await?
        .is_success());
    ensure!(api_a
        .delete(&format!("/api/trash/{doc}"))
        .await?
        .is_success());
    let (status, body) = api_a
        .post("/api/docs", json!({"id": doc, "text": "new life"}))
        .await?;
    ensure!(
        status == StatusCode::CREATED,
        "create again: {status} {body}"
    );
    let versions = api_b.wait_text(doc, "new life").await?;
    let from_b = api_a.versions(doc).await?;
    ensure!(
        versions.len() == 1 && from_b == versions,
        "the old history went with the document: {versions:?} {from_b:?}"
    );
    let seen: HashSet<u64> = ids(&versions)?.into_iter().collect();
    ensure!(seen.len() == 1);
    Ok(())
}

/// A keyframe of a big document (too large for the key-value bucket: it goes to the object
/// store) reads back whole through the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_versions_read_back_through_every_node() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster history") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let (a, b) = (node(&nats).await?, node(&nats).await?);
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let doc = "big-history";
    // Characters deflate cannot shrink much: some 300 KB of UTF-8.
    let big: String = (0..100_000u32)
        .map(|i| char::from_u32(0x4e00 + (i.wrapping_mul(2_654_435_761) % 20_000)).unwrap_or('x'))
        .collect();
    let (status, body) = api_a
        .post("/api/docs", json!({"id": doc, "text": big}))
        .await?;
    ensure!(status == StatusCode::CREATED, "create: {status} {body}");
    let versions = api_b.wait_text(doc, &big).await?;
    ensure!(versions.len() == 1, "{versions:?}");
    let edited = format!("{big}, and more");
    api_b.put_text(doc, &edited).await?;
    let versions = api_a.wait_text(doc, &edited).await?;
    ensure!(api_b.text_of(doc, &versions[1]["id"]).await? == big);
    Ok(())
}
