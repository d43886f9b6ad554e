//! Managing documents over real HTTP and sockets: titles given and renamed (and editors told
//! at once), the trash (a deleted document answers 404 to its text and its socket until it is
//! restored with content and history, or purged for good, by hand or after the keep period),
//! and who may do each.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_protocol::{CloseCode, Control};
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{wait_until, Client, TestServer, WAIT};

/// A JSON request's status and body (`Null` when the body is not JSON).
async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// The listing's entry for `id`, if listed.
async fn listed(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<Option<Value>> {
    let page: Value = http
        .get(format!("{base}/api/docs"))
        .send()
        .await?
        .json()
        .await?;
    let docs = page["docs"].as_array().cloned().unwrap_or_default();
    Ok(docs.into_iter().find(|d| d["id"] == id))
}

/// Polls `GET url` until `pred` holds for the JSON body, failing with `what` and the last body.
async fn poll_json(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body: Value = http
            .get(url)
            .send()
            .await?
            .json()
            .await
            .unwrap_or(Value::Null);
        if pred(&body) {
            return Ok(body);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {WAIT:?} waiting for {what}; last: {body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A title is the first line until one is given; a rename is trimmed, listed, returned by
/// `GET /api/docs/{id}`, kept when the text changes, and reaches open editors at once. Bad
/// titles get 400 `invalid_title` saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_are_given_and_renamed() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (http, base) = (reqwest::Client::new(), server.http_base());
    let (status, _) = send(
        http.post(format!("{base}/api/docs"))
            .json(&json!({"id": "plan", "text": "Shopping list\nmilk"})),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED);
    let entry = listed(&http, &base, "plan").await?.unwrap_or_default();
    assert_eq!(entry["title"], "Shopping list", "{entry}");
    assert_eq!(entry["title_pinned"], false, "{entry}");

    let editor = Client::connect_synced(&server.room_url("plan")).await?;
    editor.hello().await?;
    let doc_url = format!("{base}/api/docs/plan");
    let (status, renamed) = send(
        http.patch(&doc_url)
            .json(&json!({"title": "  Groceries  "})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["title"], "Groceries", "{renamed}");
    assert_eq!(renamed["title_pinned"], true, "{renamed}");
    wait_until("the editor to be told the title", WAIT, || {
        editor
            .controls()
            .iter()
            .any(|c| matches!(c, Control::Title { title } if title == "Groceries"))
    })
    .await?;
    let (_, got) = send(http.get(&doc_url)).await?;
    assert_eq!(got["title"], "Groceries", "{got}");
    assert_eq!(
        listed(&http, &base, "plan")
            .await?
            .map(|d| d["title"].clone()),
        Some(json!("Groceries"))
    );
    // Editing the first line no longer changes the title.
    editor.insert(0, "Weekly ")?;
    editor.wait_acked().await?;
    let (_, text) = (
        (),
        http.get(format!("{doc_url}/text"))
            .send()
            .await?
            .text()
            .await?,
    );
    assert_eq!(text, "Weekly Shopping list\nmilk");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, got) = send(http.get(&doc_url)).await?;
    assert_eq!(got["title"], "Groceries", "{got}");

    let long = "x".repeat(201);
    for body in [
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": "two\nlines"}),
        json!({"title": long}),
    ] {
        let (status, error) = send(http.patch(&doc_url).json(&body)).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["code"], "invalid_title", "{body}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, error) = send(http.patch(&doc_url).json(&json!({"name": "x"}))).await?;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_body"))
    );
    let (status, error) = send(
        http.patch(format!("{base}/api/docs/nothing"))
            .json(&json!({"title": "x"})),
    )
    .await?;
    assert_eq!(
        (status, error["code"].clone()),
        (StatusCode::NOT_FOUND, json!("doc_not_found"))
    );
    Ok(())
}

/// Delete moves a document to the trash: its text, metadata, history and socket answer as for
/// a missing document (404, close 4410), it is not listed but is in `GET /api/trash`, its id
/// cannot be created again; restore brings back the same text and history; a purge removes it
/// for good, after which the id starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_restore_and_purge() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.feed_debounce_ms = 50).await?;
    let (http, base) = (reqwest::Client::new(), server.http_base());
    let text = "Minutes\nline two, é 👋";
    http.post(format!("{base}/api/docs"))
        .json(&json!({"id": "minutes", "text": text, "title": "Board minutes"}))
        .send()
        .await?
        .error_for_status()?;
    let doc_url = format!("{base}/api/docs/minutes");
    let (status, version) = send(
        http.post(format!("{doc_url}/versions"))
            .json(&json!({"name": "kept"})),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{version}");
    let (_, versions_before) = send(http.get(format!("{doc_url}/versions"))).await?;

    let live = Client::connect_synced(&server.room_url("minutes")).await?;
    let (status, deleted) = send(http.delete(&doc_url)).await?;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["disconnected"], 1, "{deleted}");
    let (code, _) = live.wait_close().await?;
    assert_eq!(code, CloseCode::Deleted.code());

    for path in ["", "/text", "/update", "/versions"] {
        let (status, body) = send(http.get(format!("{doc_url}{path}"))).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}: {body}");
        assert_eq!(body["code"], "doc_not_found", "GET {path}: {body}");
    }
    let (status, _) = send(http.put(format!("{doc_url}/text")).body("overwrite")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(http.patch(&doc_url).json(&json!({"title": "x"}))).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(listed(&http, &base, "minutes").await?, None);
    let refused = Client::connect(&server.room_url("minutes")).await?;
    let (code, reason) = refused.wait_close().await?;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Deleted.code(), "doc_in_trash")
    );
    let (status, body) = send(
        http.post(format!("{base}/api/docs"))
            .json(&json!({"id": "minutes", "text": "imposter"})),
    )
    .await?;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::CONFLICT, json!("doc_in_trash"))
    );

    let (_, trash) = send(http.get(format!("{base}/api/trash"))).await?;
    let entry = &trash["docs"][0];
    assert_eq!(entry["id"], "minutes", "{trash}");
    assert_eq!(entry["title"], "Board minutes", "{trash}");
    let (deleted_ms, purge_ms) = (entry["deleted_ms"].as_u64(), entry["purge_ms"].as_u64());
    assert_eq!(
        purge_ms.zip(deleted_ms).map(|(p, d)| p - d),
        Some(30 * 86_400_000),
        "kept 30 days by default: {trash}"
    );

    let (status, restored) = send(http.post(format!("{doc_url}/restore"))).await?;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["restored"], true);
    assert_eq!(
        http.get(format!("{doc_url}/text"))
            .send()
            .await?
            .text()
            .await?,
        text
    );
    let (_, versions_after) = send(http.get(format!("{doc_url}/versions"))).await?;
    assert_eq!(
        versions_after, versions_before,
        "the history came back with it"
    );
    let (_, got) = send(http.get(&doc_url)).await?;
    assert_eq!(got["title"], "Board minutes");
    let back = Client::connect_synced(&server.room_url("minutes")).await?;
    assert_eq!(back.text(), text);
    let (_, trash) = send(http.get(format!("{base}/api/trash"))).await?;
    assert_eq!(trash["docs"], json!([]), "{trash}");
    let (status, _) = send(http.post(format!("{doc_url}/restore"))).await?;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "only a document in the trash is restored"
    );
    let (status, _) = send(http.delete(format!("{base}/api/trash/minutes"))).await?;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "only a document in the trash is purged"
    );
    poll_json(
        &http,
        &format!("{base}/api/changes?since=0"),
        "document.restored",
        |page| {
            page["events"].as_array().is_some_and(|ev| {
                ev.iter()
                    .any(|e| e["type"] == "document.restored" && e["doc"] == "minutes")
            })
        },
    )
    .await?;

    // Deleted again and purged: nothing is left, and the id starts over.
    send(http.delete(&doc_url)).await?;
    back.wait_close().await?;
    let (status, purged) = send(http.delete(format!("{base}/api/trash/minutes"))).await?;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["restored"], false);
    let (_, trash) = send(http.get(format!("{base}/api/trash"))).await?;
    assert_eq!(trash["docs"], json!([]), "{trash}");
    let (status, _) = send(http.post(format!("{doc_url}/restore"))).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let fresh = Client::connect_synced(&server.room_url("minutes")).await?;
    assert_eq!(fresh.text(), "", "nothing of the purged document is served");
    fresh.push("new life")?;
    fresh.wait_acked().await?;
    let (_, versions) = send(http.get(format!("{doc_url}/versions"))).await?;
    assert!(
        versions["versions"]
            .as_array()
            .is_none_or(|v| v.iter().all(|v| v["name"] != "kept")),
        "the purged history is gone: {versions}"
    );
    Ok(())
}

/// With a short `--trash-keep-days`, a deleted document is purged on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trash_is_emptied_after_the_keep_period() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.trash_keep_days = 1.0 / 86_400.0).await?;
    let (http, base) = (reqwest::Client::new(), server.http_base());
    http.post(format!("{base}/api/docs"))
        .json(&json!({"id": "brief", "text": "short-lived"}))
        .send()
        .await?
        .error_for_status()?;
    send(http.delete(format!("{base}/api/docs/brief"))).await?;
    poll_json(&http, &format!("{base}/api/trash"), "the purge", |t| {
        t["docs"] == json!([])
    })
    .await?;
    let fresh = Client::connect_synced(&server.room_url("brief")).await?;
    assert_eq!(fresh.text(), "", "the purged text is gone");
    Ok(())
}

/// Renaming, deleting and restoring need write access to the document; listing the trash needs
/// read access to every document; purging needs the admin role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_and_titles_respect_tokens() -> anyhow::Result<()> {
    let secret: AuthSecret = "test-secret-0123456789abcdef".parse()?;
    let token = |doc: Option<&str>, role| {
        mint(
            &secret,
            &Claims {
                scope: doc.map_or(Scope::AllDocs, |d| Scope::Doc(d.to_owned())),
                role,
                exp: unix_now() + 3600,
                sub: None,
            },
        )
    };
    let s = secret.clone();
    let server = TestServer::start_with(move |c| c.auth_secret = Some(s)).await?;
    let (http, base) = (reqwest::Client::new(), server.http_base());
    let admin = token(None, Access::Admin);
    let read = token(Some("memo"), Access::Read);
    let write = token(Some("memo"), Access::Write);
    http.post(format!("{base}/api/docs"))
        .bearer_auth(&admin)
        .json(&json!({"id": "memo", "text": "memo"}))
        .send()
        .await?
        .error_for_status()?;
    let doc_url = format!("{base}/api/docs/memo");
    let (status, _) = send(
        http.patch(&doc_url)
            .bearer_auth(&read)
            .json(&json!({"title": "x"})),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(http.delete(&doc_url).bearer_auth(&read)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(
        http.patch(&doc_url)
            .bearer_auth(&write)
            .json(&json!({"title": "Memo"})),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(http.delete(&doc_url).bearer_auth(&write)).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(http.get(format!("{base}/api/trash")).bearer_auth(&write)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = send(http.get(format!("{base}/api/trash"))).await?;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("token_missing"))
    );
    let (status, _) = send(
        http.delete(format!("{base}/api/trash/memo"))
            .bearer_auth(&write),
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(http.post(format!("{doc_url}/restore")).bearer_auth(&read)).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(http.post(format!("{doc_url}/restore")).bearer_auth(&write)).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, got) = send(http.get(&doc_url).bearer_auth(&read)).await?;
    assert_eq!(
        (status, got["title"].clone()),
        (StatusCode::OK, json!("Memo"))
    );
    Ok(())
}

/// Polls `GET /api/search?q=` (with `token` when given) until the matched ids are `want`, in
/// that order.
async fn wait_search(
    http: &reqwest::Client,
    base: &str,
    q: &str,
    token: Option<&str>,
    want: &[&str],
) -> anyhow::Result<Value> {
    let url = format!("{base}/api/search?q={}", q.replace(' ', "%20"));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, body) = send(request).await?;
        let ids: Vec<&str> = body["hits"]
            .as_array()
            .map(|h| h.iter().filter_map(|h| h["id"].as_str()).collect())
            .unwrap_or_default();
        if status == StatusCode::OK && ids == want {
            return Ok(body);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "timed out waiting for {want:?} from a search for {q:?}: {status} {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Search finds documents by title and by text, title matches first, with a snippet whose
/// highlights (UTF-16 offsets) cover the match; it follows edits, renames, deletes and
/// restores, and documents written before a restart are found after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_title_and_text_follows_changes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_in(dir.path(), |_| {}).await?;
    let (http, base) = (reqwest::Client::new(), server.http_base());
    for (id, text, title) in [
        (
            "garden",
            "Tomatoes by the fence.\nWater them daily.",
            Some("Garden plan"),
        ),
        (
            "journal",
            "Went to the garden: the émigré 👋 tomatoes are ripe.",
            Some("Diary"),
        ),
        ("recipes", "Soup, bread, salad.", None),
    ] {
        let mut body = json!({"id": id, "text": text});
        if let Some(title) = title {
            body["title"] = json!(title);
        }
        http.post(format!("{base}/api/docs"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
    }
    let found = wait_search(&http, &base, "garden", None, &["garden", "journal"]).await?;
    let hit = &found["hits"][1];
    let snippet: Vec<u16> = hit["snippet"]
        .as_str()
        .unwrap_or_default()
        .encode_utf16()
        .collect();
    let [start, end] = [&hit["highlights"][0][0], &hit["highlights"][0][1]]
        .map(|v| usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(0));
    assert_eq!(
        String::from_utf16_lossy(&snippet[start..end]),
        "garden",
        "{hit}"
    );
    let found = wait_search(&http, &base, "tomatoes ripe", None, &["journal"]).await?;
    let hit = &found["hits"][0];
    let snippet: Vec<u16> = hit["snippet"]
        .as_str()
        .unwrap_or_default()
        .encode_utf16()
        .collect();
    let marked: Vec<String> = hit["highlights"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let at = |i: usize| usize::try_from(r[i].as_u64().unwrap_or(0)).unwrap_or(0);
            String::from_utf16_lossy(&snippet[at(0)..at(1)])
        })
        .collect();
    assert_eq!(
        marked,
        ["tomatoes", "ripe"],
        "UTF-16 offsets after multi-unit characters: {hit}"
    );

    // Edits, a rename, a delete and a restore reach the index.
    http.post(format!("{base}/api/docs/recipes/append"))
        .body(" Garden herbs.")
        .send()
        .await?
        .error_for_status()?;
    wait_search(&http, &base, "herbs", None, &["recipes"]).await?;
    send(
        http.patch(format!("{base}/api/docs/recipes"))
            .json(&json!({"title": "Kitchen"})),
    )
    .await?;
    wait_search(&http, &base, "kitchen", None, &["recipes"]).await?;
    send(http.delete(format!("{base}/api/docs/journal"))).await?;
    wait_search(&http, &base, "ripe", None, &[]).await?;
    send(http.post(format!("{base}/api/docs/journal/restore"))).await?;
    wait_search(&http, &base, "ripe", None, &["journal"]).await?;
    let (status, body) = send(http.get(format!("{base}/api/search?q={}", "x".repeat(501)))).await?;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );
    let (status, body) = send(http.get(format!("{base}/api/search?q=%22unbalanced"))).await?;
    assert_eq!(status, StatusCode::OK, "any text is a query: {body}");

    // Rebuilt at start: a fresh process finds what the last one stored.
    server.stop().await?;
    let server = TestServer::start_in(dir.path(), |_| {}).await?;
    wait_search(&http, &server.http_base(), "herbs", None, &["recipes"]).await?;
    Ok(())
}

/// Search returns only documents the token may read: a token for one document finds at most
/// that one; no token on a server with a secret is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_respects_tokens() -> anyhow::Result<()> {
    let secret: AuthSecret = "test-secret-0123456789abcdef".parse()?;
    let token = |doc: Option<&str>| {
        mint(
            &secret,
            &Claims {
                scope: doc.map_or(Scope::AllDocs, |d| Scope::Doc(d.to_owned())),
                role: Access::Read,
                exp: unix_now() + 3600,
                sub: None,
            },
        )
    };
    let admin = mint(
        &secret,
        &Claims {
            scope: Scope::AllDocs,
            role: Access::Admin,
            exp: unix_now() + 3600,
            sub: None,
        },
    );
    let s = secret.clone();
    let server = TestServer::start_with(move |c| c.auth_secret = Some(s)).await?;
    let (http, base) = (reqwest::Client::new(), server.http_base());
    for id in ["public-minutes", "secret-minutes"] {
        http.post(format!("{base}/api/docs"))
            .bearer_auth(&admin)
            .json(&json!({"id": id, "text": "Minutes of the board meeting"}))
            .send()
            .await?
            .error_for_status()?;
    }
    let all = token(None);
    let found = wait_search(
        &http,
        &base,
        "board",
        Some(&all),
        &["public-minutes", "secret-minutes"],
    );
    if found.await.is_err() {
        // Equal scores tie-break by index order; both must be there in some order.
        wait_search(
            &http,
            &base,
            "board",
            Some(&all),
            &["secret-minutes", "public-minutes"],
        )
        .await?;
    }
    let one = token(Some("public-minutes"));
    wait_search(&http, &base, "board", Some(&one), &["public-minutes"]).await?;
    let (status, body) = send(http.get(format!("{base}/api/search?q=board"))).await?;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("token_missing"))
    );
    Ok(())
}
