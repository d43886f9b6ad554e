//! Version history over real HTTP and WebSockets: versions recorded when edits go quiet and on
//! request, their texts and diffs, restore seen live by a connected client, authors from tokens
//! and awareness names, every error, and versions that survive compaction, idle unload,
//! restart and SIGKILL.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{Client, TestServer, WeftProcess, WAIT};

/// An HTTP client bound to one server, with an optional bearer token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(base: String, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            token,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let res = self.req(reqwest::Method::GET, path).send().await?;
        Ok((res.status(), res.text().await?))
    }

    async fn json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(path).await?;
        anyhow::ensure!(status == StatusCode::OK, "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        let res = self
            .req(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        Ok((status, res.json().await.unwrap_or(Value::Null)))
    }

    async fn put_text(&self, doc: &str, text: &str) -> anyhow::Result<()> {
        let res = self
            .req(reqwest::Method::PUT, &format!("/api/docs/{doc}/text"))
            .body(text.to_owned())
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "PUT text: {}", res.status());
        Ok(())
    }

    async fn create(&self, doc: &str, text: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .post("/api/docs", json!({"id": doc, "text": text}))
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "create: {status} {body}");
        Ok(())
    }

    async fn versions(&self, doc: &str) -> anyhow::Result<Vec<Value>> {
        let page = self.json(&format!("/api/docs/{doc}/versions")).await?;
        Ok(page["versions"].as_array().cloned().unwrap_or_default())
    }

    async fn text_of(&self, doc: &str, v: &Value) -> anyhow::Result<String> {
        let (status, text) = self
            .get(&format!("/api/docs/{doc}/versions/{v}/text"))
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "version text: {status} {text}");
        Ok(text)
    }

    /// Polls until `doc` has at least `n` versions; returns them, newest first.
    async fn wait_versions(&self, doc: &str, n: usize) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let versions = self.versions(doc).await?;
            if versions.len() >= n {
                return Ok(versions);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} versions of {doc}: {versions:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The newer text of a diff: inserts applied, deletes skipped; and the older one.
fn sides(diff: &Value) -> (String, String) {
    let (mut old, mut new) = (String::new(), String::new());
    for c in diff["chunks"].as_array().into_iter().flatten() {
        let text = c["text"].as_str().unwrap_or_default();
        match c["op"].as_str() {
            Some("equal") => {
                old.push_str(text);
                new.push_str(text);
            }
            Some("insert") => new.push_str(text),
            Some("delete") => old.push_str(text),
            other => panic!("unknown op {other:?} in {diff}"),
        }
    }
    (old, new)
}

async fn quick_versions() -> anyhow::Result<TestServer> {
    TestServer::start_with(|c| {
        c.version_idle_secs = 1;
        c.version_every_secs = 3;
    })
    .await
}

/// Every route round-trips: automatic and named versions listed newest first with their
/// fields, paging, texts, default and explicit diffs, restore, and every error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_round_trip() -> anyhow::Result<()> {
    let server = quick_versions().await?;
    let api = Api::new(server.http_base(), None);
    api.create("notes", "hello world").await?;
    let first = api.wait_versions("notes", 1).await?;
    assert_eq!(first[0]["id"], 1, "{first:?}");
    assert_eq!(first[0]["size"], 11);
    assert_eq!(first[0]["inserted"], 11);
    assert_eq!(first[0]["authors"], json!(["anonymous"]));
    assert!(first[0]["name"].is_null());
    assert!(first[0]["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    api.put_text("notes", "hello brave new world").await?;
    let (status, named) = api
        .post("/api/docs/notes/versions", json!({"name": "draft"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    assert_eq!(named["name"], "draft");
    assert_eq!(named["inserted"], 10);
    // Named again without a change: still a new version.
    let (status, again) = api
        .post("/api/docs/notes/versions", json!({"name": "same text"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (again["inserted"].clone(), again["deleted"].clone()),
        (json!(0), json!(0))
    );

    let list = api.versions("notes").await?;
    let ids: Vec<u64> = list.iter().filter_map(|v| v["id"].as_u64()).collect();
    assert_eq!(ids, [3, 2, 1], "newest first");
    let page = api.json("/api/docs/notes/versions?limit=2").await?;
    assert_eq!(
        (page["total"].clone(), page["next_offset"].clone()),
        (json!(3), json!(2))
    );
    let page = api.json("/api/docs/notes/versions?offset=2").await?;
    assert_eq!(page["versions"][0]["id"], 1);
    assert!(page["next_offset"].is_null());

    assert_eq!(api.text_of("notes", &json!(1)).await?, "hello world");
    assert_eq!(
        api.text_of("notes", &json!(2)).await?,
        "hello brave new world"
    );
    let diff = api.json("/api/docs/notes/versions/2/diff").await?;
    assert_eq!(
        sides(&diff),
        ("hello world".into(), "hello brave new world".into())
    );
    assert!(diff["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["op"] == "insert" && c["author"] == "anonymous"));
    let back = api
        .json("/api/docs/notes/versions/1/diff?against=3")
        .await?;
    assert_eq!(
        sides(&back),
        ("hello brave new world".into(), "hello world".into())
    );
    let first_diff = api.json("/api/docs/notes/versions/1/diff").await?;
    assert_eq!(sides(&first_diff), (String::new(), "hello world".into()));

    // Restore: the text is version 1's again, recorded as a new named version.
    let (status, restored) = api
        .post("/api/docs/notes/versions/1/restore", json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["id"], 4);
    assert!(
        restored["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("Restored from ")),
        "{restored}"
    );
    let (_, now) = api.get("/api/docs/notes/text").await?;
    assert_eq!(now, "hello world");
    assert_eq!(api.text_of("notes", &json!(4)).await?, "hello world");

    // Edits not in any version yet are recorded before a restore replaces them: restoring the
    // version before the restore undoes it.
    api.put_text("notes", "hello world, one more thought")
        .await?;
    let (status, restored) = api
        .post("/api/docs/notes/versions/2/restore", json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{restored}");
    let before = restored["id"].as_u64().context("restored id")? - 1;
    assert_eq!(
        api.text_of("notes", &json!(before)).await?,
        "hello world, one more thought"
    );
    let (status, undone) = api
        .post(
            &format!("/api/docs/notes/versions/{before}/restore"),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{undone}");
    let (_, now) = api.get("/api/docs/notes/text").await?;
    assert_eq!(now, "hello world, one more thought");

    let spec = api.json("/api/openapi.json").await?;
    for path in [
        "/api/docs/{id}/versions",
        "/api/docs/{id}/versions/{v}/text",
        "/api/docs/{id}/versions/{v}/diff",
        "/api/docs/{id}/versions/{v}/restore",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} is in the OpenAPI document"
        );
    }
    errors(&api).await
}

/// Unknown documents and versions, another document's version, bad `against` and names.
async fn errors(api: &Api) -> anyhow::Result<()> {
    api.create("other", "x").await?;
    api.wait_versions("other", 1).await?;
    let code = |body: &str| -> String {
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    for (path, status, want) in [
        ("/api/docs/nope/versions", 404, "doc_not_found"),
        ("/api/docs/nope/versions/1/text", 404, "doc_not_found"),
        ("/api/docs/notes/versions/99/text", 404, "version_not_found"),
        (
            "/api/docs/notes/versions/abc/text",
            404,
            "version_not_found",
        ),
        ("/api/docs/other/versions/3/text", 404, "version_not_found"),
        ("/api/docs/notes/versions/99/diff", 404, "version_not_found"),
        (
            "/api/docs/notes/versions/2/diff?against=99",
            400,
            "invalid_against",
        ),
        (
            "/api/docs/notes/versions/2/diff?against=x",
            400,
            "invalid_against",
        ),
    ] {
        let (got, body) = api.get(path).await?;
        assert_eq!(got.as_u16(), status, "{path}: {body}");
        assert_eq!(code(&body), want, "{path}: {body}");
    }
    for (path, body, status, want) in [
        (
            "/api/docs/nope/versions",
            json!({"name": "n"}),
            404,
            "doc_not_found",
        ),
        (
            "/api/docs/notes/versions",
            json!({"name": "  "}),
            400,
            "invalid_name",
        ),
        (
            "/api/docs/notes/versions/99/restore",
            json!({}),
            404,
            "version_not_found",
        ),
        (
            "/api/docs/other/versions/4/restore",
            json!({}),
            404,
            "version_not_found",
        ),
    ] {
        let (got, answer) = api.post(path, body).await?;
        assert_eq!(got.as_u16(), status, "{path}: {answer}");
        assert_eq!(answer["code"], want, "{path}: {answer}");
    }
    Ok(())
}

/// The secret of the auth-mode server.
const SECRET: &str = "test-secret-0123456789abcdef";

fn token(role: Access, sub: &str) -> anyhow::Result<String> {
    let claims = Claims {
        scope: Scope::AllDocs,
        role,
        exp: unix_now() + 3600,
        sub: Some(sub.to_owned()),
    };
    Ok(mint(&SECRET.parse::<AuthSecret>()?, &claims))
}

/// With auth on, API writes are attributed to the token's `sub`; readers read history but may
/// not name or restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authors_from_tokens_and_roles() -> anyhow::Result<()> {
    let secret: AuthSecret = SECRET.parse()?;
    let server = TestServer::start_with(move |c| {
        c.auth_secret = Some(secret);
        c.version_idle_secs = 1;
    })
    .await?;
    let ada = Api::new(server.http_base(), Some(token(Access::Write, "ada")?));
    let bob = Api::new(server.http_base(), Some(token(Access::Write, "bob")?));
    let reader = Api::new(server.http_base(), Some(token(Access::Read, "rita")?));
    let nobody = Api::new(server.http_base(), None);
    ada.create("memo", "one").await?;
    ada.wait_versions("memo", 1).await?;
    ada.put_text("memo", "one two").await?;
    bob.put_text("memo", "one two three").await?;
    let (status, v) = bob
        .post("/api/docs/memo/versions", json!({"name": "both"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["authors"], json!(["ada", "bob"]));
    let versions = reader.versions("memo").await?;
    assert_eq!(versions[1]["authors"], json!(["ada"]), "{versions:?}");
    // A version with several authors: each inserted run names who typed it.
    let diff = reader.json("/api/docs/memo/versions/2/diff").await?;
    let inserted: Vec<(String, Value)> = diff["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["op"] == "insert")
        .map(|c| {
            (
                c["text"].as_str().unwrap_or_default().to_owned(),
                c["author"].clone(),
            )
        })
        .collect();
    assert_eq!(
        inserted,
        [
            (" two".to_owned(), json!("ada")),
            (" three".to_owned(), json!("bob"))
        ],
        "{diff}"
    );
    let diff = reader.json("/api/docs/memo/versions/1/diff").await?;
    assert!(diff["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["author"] == "ada"));

    let (status, body) = reader
        .post("/api/docs/memo/versions", json!({"name": "nope"}))
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = reader
        .post("/api/docs/memo/versions/1/restore", json!({}))
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = nobody.get("/api/docs/memo/versions").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}

/// A WebSocket writer is named by its awareness `user.name`; a restore reaches a connected
/// stock client live, without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_names_and_live_restore() -> anyhow::Result<()> {
    let server = quick_versions().await?;
    let api = Api::new(server.http_base(), None);
    api.create("live", "").await?;
    let writer = Client::connect_synced(&server.room_url("live")).await?;
    writer.set_awareness(1, r##"{"user":{"name":"Grace","color":"#f00"}}"##)?;
    writer.push("first draft")?;
    writer.wait_acked().await?;
    let versions = api.wait_versions("live", 1).await?;
    let v1 = versions
        .iter()
        .find(|v| v["size"] == 11)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no version of the first draft: {versions:?}"))?;
    assert_eq!(v1["authors"], json!(["Grace"]), "{versions:?}");

    writer.push(", then more")?;
    writer.wait_acked().await?;
    let watcher = Client::connect_synced(&server.room_url("live")).await?;
    watcher
        .wait_text("the edited text", |t| t == "first draft, then more")
        .await?;
    let (status, restored) = api
        .post(
            &format!("/api/docs/live/versions/{}/restore", v1["id"]),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{restored}");
    watcher
        .wait_text("the restored text", |t| t == "first draft")
        .await?;
    writer
        .wait_text("the restored text", |t| t == "first draft")
        .await?;
    Ok(())
}

/// Versions and their texts are the same after compaction and idle unload, an in-process
/// restart, and a SIGKILL of the real binary (after which the edits since the last version
/// are recorded as a version when the document loads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_survive_unload_restart_and_kill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let quick = |c: &mut weft_server::Config| {
        c.version_idle_secs = 1;
        c.idle_unload_secs = 1;
    };
    let server = TestServer::start_in(dir.path(), quick).await?;
    let api = Api::new(server.http_base(), None);
    api.create("keep", "alpha").await?;
    api.wait_versions("keep", 1).await?;
    api.put_text("keep", "alpha beta").await?;
    api.post("/api/docs/keep/versions", json!({"name": "two"}))
        .await?;
    let before = snapshot(&api, "keep").await?;
    // Idle unload compacts the document; the history is untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(snapshot(&api, "keep").await?, before, "after idle unload");
    server.stop().await?;

    let server = TestServer::start_in(dir.path(), quick).await?;
    let api = Api::new(server.http_base(), None);
    assert_eq!(snapshot(&api, "keep").await?, before, "after restart");
    api.put_text("keep", "alpha beta gamma").await?;
    // Shutdown records the change.
    server.stop().await?;
    let server = TestServer::start_in(dir.path(), quick).await?;
    let api = Api::new(server.http_base(), None);
    let after_stop = snapshot(&api, "keep").await?;
    assert_eq!(after_stop.len(), before.len() + 1, "{after_stop:?}");
    assert_eq!(
        after_stop.last().map(|v| v.1.as_str()),
        Some("alpha beta gamma")
    );
    server.stop().await?;

    let mut weft = WeftProcess::spawn(dir.path(), &["--version-idle-secs", "600"]).await?;
    let api = Api::new(weft.http_base(), None);
    assert_eq!(
        snapshot(&api, "keep").await?,
        after_stop,
        "in the real binary"
    );
    api.put_text("keep", "alpha beta gamma delta").await?;
    weft.kill()?;
    weft.wait_exit().await?;
    let weft = WeftProcess::spawn(dir.path(), &["--version-idle-secs", "600"]).await?;
    let api = Api::new(weft.http_base(), None);
    // Loading the document (any request does) records the change the kill left unversioned.
    let (_, text) = api.get("/api/docs/keep/text").await?;
    assert_eq!(text, "alpha beta gamma delta");
    let versions = api.wait_versions("keep", after_stop.len() + 1).await?;
    let newest = api.text_of("keep", &versions[0]["id"]).await?;
    assert_eq!(newest, "alpha beta gamma delta");
    let all = snapshot(&api, "keep").await?;
    assert_eq!(
        all[..after_stop.len()],
        after_stop[..],
        "older versions unchanged"
    );
    Ok(())
}

/// Every version of `doc` (oldest first) with its text.
async fn snapshot(api: &Api, doc: &str) -> anyhow::Result<Vec<(Value, String)>> {
    let mut out = Vec::new();
    for v in api.versions(doc).await?.into_iter().rev() {
        let text = api.text_of(doc, &v["id"]).await?;
        out.push((v, text));
    }
    Ok(out)
}

/// Deleting a document keeps its history in the trash; purging it deletes the history: created
/// again under the same id, it starts over.
/// A compaction (many small edits) leaves versions and texts as they were; versions also come
/// every `--version-every-secs` while edits never pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_compaction_and_steady_editing() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.version_idle_secs = 600;
        c.version_every_secs = 1;
        c.compact_every = 20;
    })
    .await?;
    let api = Api::new(server.http_base(), None);
    api.create("busy", "").await?;
    let client = Client::connect_synced(&server.room_url("busy")).await?;
    // Typing without a pause longer than the idle time: versions come from the periodic rule.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        client.push("x")?;
        client.wait_acked().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = api.wait_versions("busy", 2).await?;
    let before = snapshot(&api, "busy").await?;
    assert!(
        before.iter().all(|(_, t)| t.chars().all(|c| c == 'x')),
        "{during:?}"
    );
    // Past --compact-every: the log was merged into a snapshot; history unchanged.
    let meta = api.json("/api/docs/busy").await?;
    assert!(meta["update_count"].as_u64() > Some(20), "{meta}");
    assert_eq!(snapshot(&api, "busy").await?, before);

    let http = reqwest::Client::new();
    let res = http
        .delete(format!("{}/api/docs/busy", server.http_base()))
        .send()
        .await?;
    assert!(res.status().is_success(), "{}", res.status());
    let (status, _) = api.get("/api/docs/busy/versions").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let res = http
        .delete(format!("{}/api/trash/busy", server.http_base()))
        .send()
        .await?;
    assert!(res.status().is_success(), "{}", res.status());
    api.create("busy", "fresh").await?;
    let (status, named) = api
        .post("/api/docs/busy/versions", json!({"name": "new life"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    let versions = api.versions("busy").await?;
    assert_eq!(
        versions.len(),
        1,
        "the old history went with the document: {versions:?}"
    );
    assert_eq!(api.text_of("busy", &versions[0]["id"]).await?, "fresh");
    Ok(())
}

mod property {
    use proptest::prelude::*;

    use super::*;

    /// Texts from a small alphabet with multi-byte characters and newlines, so successive
    /// random texts share a lot.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop::sample::select(vec!["a", "b", "é", "👋", "\n", " ", "ab\n", "🎉x"]),
            0..40,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Over random edit histories written through the API, every diff (adjacent and against
        /// an arbitrary earlier or later version) turns the older text into the newer exactly.
        #[test]
        fn diffs_are_character_exact(history in proptest::collection::vec(text(), 2..6), pick in any::<prop::sample::Index>()) {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(check(history, pick)).expect("diff property");
        }
    }

    async fn check(history: Vec<String>, pick: prop::sample::Index) -> anyhow::Result<()> {
        let server = TestServer::start().await?;
        let api = Api::new(server.http_base(), None);
        api.create("p", "").await?;
        let mut ids = Vec::new();
        for (i, t) in history.iter().enumerate() {
            api.put_text("p", t).await?;
            let (status, v) = api
                .post("/api/docs/p/versions", json!({"name": format!("v{i}")}))
                .await?;
            anyhow::ensure!(status == StatusCode::CREATED, "{v}");
            ids.push(v["id"].as_u64().unwrap_or_default());
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(&api.text_of("p", &json!(id)).await?, &history[i]);
            let against = ids[pick.index(ids.len())];
            for (path, old) in [
                (format!("/api/docs/p/versions/{id}/diff"), i.checked_sub(1)),
                (
                    format!("/api/docs/p/versions/{id}/diff?against={against}"),
                    ids.iter().position(|x| *x == against),
                ),
            ] {
                let diff = api.json(&path).await?;
                let old = old.map_or("", |o| history[o].as_str());
                assert_eq!(sides(&diff), (old.to_owned(), history[i].clone()), "{path}");
            }
        }
        server.stop().await?;
        Ok(())
    }
}
