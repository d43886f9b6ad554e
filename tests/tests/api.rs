//! The JSON API over real HTTP: documents created, read, rewritten and deleted with live
//! editors connected, Yjs state in and out, notices, the OpenAPI description, and listing with
//! metadata and live user counts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_protocol::{CloseCode, Control};
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{wait_until, Client, TestServer, WAIT};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Assoc, GetString, IndexedSequence, ReadTxn, Text, Transact, Update};

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

/// Text of a fresh Utf16 yrs document built from one update.
fn doc_from(update: &[u8]) -> anyhow::Result<yrs::Doc> {
    let doc = yrs::Doc::with_options(yrs::Options {
        offset_kind: yrs::OffsetKind::Utf16,
        ..yrs::Options::default()
    });
    doc.transact_mut()
        .apply_update(Update::decode_v1(update)?)?;
    Ok(doc)
}

fn text_of(doc: &yrs::Doc) -> String {
    let text = doc.get_or_insert_text("content");
    let txn = doc.transact();
    text.get_string(&txn)
}

/// Create, inspect, rewrite, append, read and write Yjs state, and delete a document through
/// the API, with a live client seeing every change and being disconnected by the delete; the
/// deleted document cannot be written back by a later append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_lifecycle_with_a_live_editor() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let base = format!("{}/api/docs", server.http_base());
    let created: Value = http
        .post(&base)
        .json(&json!({ "text": "Hello wörld 👋", "title": "Greeting" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["version"], 1, "{created}");
    let doc_url = format!("{base}/{id}");
    let meta: Value = http
        .get(&doc_url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        (meta["id"].as_str(), meta["title"].as_str()),
        (Some(id.as_str()), Some("Greeting"))
    );

    let live = Client::connect_synced(&server.room_url(&id)).await?;
    assert_eq!(live.text(), "Hello wörld 👋");
    let put: Value = http
        .put(format!("{doc_url}/text"))
        .body("Hello brave wörld 👋🎉")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(put["changed"], true, "{put}");
    live.wait_text("the replaced text", |t| t == "Hello brave wörld 👋🎉")
        .await?;
    let same: Value = http
        .put(format!("{doc_url}/text"))
        .body("Hello brave wörld 👋🎉")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(same["changed"], false, "same text is no change: {same}");
    http.post(format!("{doc_url}/append"))
        .body("\nP.S.")
        .send()
        .await?
        .error_for_status()?;
    live.wait_text("the appended text", |t| t.ends_with("\nP.S."))
        .await?;
    let text = http
        .get(format!("{doc_url}/text"))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(text, "Hello brave wörld 👋🎉\nP.S.");

    // Yjs state: whole, then only what a state vector lacks; then a binary update back in.
    let whole = http
        .get(format!("{doc_url}/update"))
        .send()
        .await?
        .bytes()
        .await?;
    let local = doc_from(&whole)?;
    assert_eq!(text_of(&local), text);
    let sv = local.transact().state_vector().encode_v1();
    live.push(" (live)")?;
    live.wait_acked().await?;
    let diff = http
        .get(format!("{doc_url}/update"))
        .query(&[("state_vector", URL_SAFE_NO_PAD.encode(&sv))])
        .send()
        .await?
        .bytes()
        .await?;
    assert!(
        diff.len() < whole.len(),
        "the diff carries only the new edit"
    );
    local
        .transact_mut()
        .apply_update(Update::decode_v1(&diff)?)?;
    assert_eq!(text_of(&local), format!("{text} (live)"));
    let update = {
        let t = local.get_or_insert_text("content");
        let mut txn = local.transact_mut();
        t.insert(&mut txn, 0, ">> ");
        txn.encode_update_v1()
    };
    http.post(format!("{doc_url}/update"))
        .body(update)
        .send()
        .await?
        .error_for_status()?;
    live.wait_text("the binary update", |t| t.starts_with(">> Hello"))
        .await?;
    let bad = http
        .post(format!("{doc_url}/update"))
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<Value>().await?["code"], "invalid_update");

    // Delete: the live client is told with 4410 and the document is in the trash: not served,
    // not listed, not writable, its socket refused, until it is purged for good.
    let deleted: Value = http
        .delete(&doc_url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(deleted["disconnected"], 1, "{deleted}");
    let (code, reason) = live.wait_close().await?;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Deleted.code(), "document deleted")
    );
    for response in [
        http.get(&doc_url).send().await?,
        http.get(format!("{doc_url}/text")).send().await?,
        http.post(format!("{doc_url}/append"))
            .body("zombie")
            .send()
            .await?,
        http.delete(&doc_url).send().await?,
    ] {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.json::<Value>().await?["code"], "doc_not_found");
    }
    let page: Value = http.get(&base).send().await?.json().await?;
    assert_eq!(page["total"], 0, "{page}");
    let refused = Client::connect(&server.room_url(&id)).await?;
    let (code, reason) = refused.wait_close().await?;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Deleted.code(), "doc_in_trash")
    );
    let trash_url = format!("{}/api/trash/{id}", server.http_base());
    http.delete(&trash_url).send().await?.error_for_status()?;
    let fresh = Client::connect_synced(&server.room_url(&id)).await?;
    assert_eq!(
        fresh.text(),
        "",
        "nothing of the deleted document is served"
    );
    Ok(())
}

/// Seeding a document that exists is refused with 409, also when two seeds race: the text is
/// never duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_never_duplicates() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let base = format!("{}/api/docs", server.http_base());
    let seed = || {
        http.post(&base)
            .json(&json!({ "id": "welcome", "text": "Welcome!" }))
            .send()
    };
    let (a, b) = tokio::join!(seed(), seed());
    let mut statuses = [a?.status().as_u16(), b?.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409]);
    let again = seed().await?;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.json::<Value>().await?["code"], "doc_exists");
    let text = http
        .get(format!("{base}/welcome/text"))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(text, "Welcome!");
    // A document that came into being through a WebSocket counts as existing too.
    let c = Client::connect_synced(&server.room_url("typed")).await?;
    c.push("typed")?;
    c.wait_acked().await?;
    let r = http
        .post(&base)
        .json(&json!({ "id": "typed", "text": "typed" }))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    Ok(())
}

/// `PUT .../text` is a minimal diff: a cursor (sticky index) held by another editor stays on the
/// same character when text before and after it changes, emoji included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_text_keeps_cursors() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let doc_url = format!("{}/api/docs/cursor", server.http_base());
    http.post(format!("{}/api/docs", server.http_base()))
        .json(&json!({ "id": "cursor", "text": "🙂 one two three" }))
        .send()
        .await?
        .error_for_status()?;
    let whole = http
        .get(format!("{doc_url}/update"))
        .send()
        .await?
        .bytes()
        .await?;
    let editor = doc_from(&whole)?;
    let text = editor.get_or_insert_text("content");
    // The cursor sits before "two": "🙂" is two UTF-16 units, so index 7.
    let cursor = text
        .sticky_index(&editor.transact(), 7, Assoc::After)
        .expect("cursor");
    let sv = editor.transact().state_vector().encode_v1();
    http.put(format!("{doc_url}/text"))
        .body("🙂🙂 ONE two three four")
        .send()
        .await?
        .error_for_status()?;
    let diff = http
        .get(format!("{doc_url}/update"))
        .query(&[("state_vector", URL_SAFE_NO_PAD.encode(&sv))])
        .send()
        .await?
        .bytes()
        .await?;
    editor
        .transact_mut()
        .apply_update(Update::decode_v1(&diff)?)?;
    assert_eq!(text_of(&editor), "🙂🙂 ONE two three four");
    let at = cursor.get_offset(&editor.transact()).expect("offset").index;
    let before: String = char::decode_utf16(text_of(&editor).encode_utf16().take(at as usize))
        .collect::<Result<_, _>>()?;
    assert_eq!(before, "🙂🙂 ONE ", "the cursor still sits before \"two\"");
    Ok(())
}

/// A notice reaches every editor that listens, or only the connections of the user named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_everyone_or_one_user() -> anyhow::Result<()> {
    let secret: AuthSecret = "notice-secret-0123456789".parse()?;
    let s = secret.clone();
    let server = TestServer::start_with(move |c| c.auth_secret = Some(s)).await?;
    let mint_for = |scope: Scope, role, sub: Option<&str>| {
        mint(
            &secret,
            &Claims {
                scope,
                role,
                exp: unix_now() + 600,
                sub: sub.map(str::to_owned),
            },
        )
    };
    let admin = mint_for(Scope::AllDocs, Access::Admin, None);
    let http = reqwest::Client::new();
    let base = format!("{}/api/docs", server.http_base());
    http.post(&base)
        .bearer_auth(&admin)
        .json(&json!({ "id": "standup" }))
        .send()
        .await?
        .error_for_status()?;
    let join = |user: &str| {
        let t = mint_for(Scope::Doc("standup".into()), Access::Write, Some(user));
        format!("{}?token={t}", server.room_url("standup"))
    };
    let ana = Client::connect_synced(&join("ana")).await?;
    let bo = Client::connect_synced(&join("bo")).await?;
    for c in [&ana, &bo] {
        c.send_control(Control::Hello { user: None })?;
    }
    wait_until("both welcomed", WAIT, || {
        [&ana, &bo].iter().all(|c| {
            c.controls()
                .iter()
                .any(|m| matches!(m, Control::Welcome { .. }))
        })
    })
    .await?;
    let notify = |body: Value| {
        http.post(format!("{base}/standup/notices"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let only_ana: Value =
        notify(json!({ "level": "warning", "text": "Ana, please review", "user": "ana" }))
            .await?
            .error_for_status()?
            .json()
            .await?;
    assert_eq!(only_ana["delivered"], 1);
    let all: Value = notify(json!({ "level": "info", "text": "Standup in 5 minutes" }))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(all["delivered"], 2);
    let notices = |c: &Client| -> Vec<String> {
        c.controls()
            .into_iter()
            .filter_map(|m| match m {
                Control::Notice { text, .. } => Some(text),
                _ => None,
            })
            .collect()
    };
    wait_until("both to get the room-wide notice", WAIT, || {
        notices(&ana).len() == 2 && notices(&bo).len() == 1
    })
    .await?;
    assert_eq!(
        notices(&ana),
        ["Ana, please review", "Standup in 5 minutes"]
    );
    assert_eq!(notices(&bo), ["Standup in 5 minutes"]);
    let write_only = mint_for(Scope::Doc("standup".into()), Access::Write, None);
    let refused = http
        .post(format!("{base}/standup/notices"))
        .bearer_auth(write_only)
        .json(&json!({ "level": "info", "text": "spam" }))
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    Ok(())
}

/// The OpenAPI description is served and lists every API operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_operation() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spec: Value = reqwest::get(format!("{}/api/openapi.json", server.http_base()))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{spec}"
    );
    let paths = &spec["paths"];
    for (path, method) in [
        ("/api/docs", "get"),
        ("/api/docs", "post"),
        ("/api/docs/{id}", "get"),
        ("/api/docs/{id}", "delete"),
        ("/api/docs/{id}", "patch"),
        ("/api/docs/{id}/restore", "post"),
        ("/api/trash", "get"),
        ("/api/search", "get"),
        ("/api/trash/{id}", "delete"),
        ("/api/docs/{id}/text", "get"),
        ("/api/docs/{id}/text", "put"),
        ("/api/docs/{id}/append", "post"),
        ("/api/docs/{id}/update", "get"),
        ("/api/docs/{id}/update", "post"),
        ("/api/docs/{id}/notices", "post"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    Ok(())
}

/// Malformed requests get 400 with a specific code, unknown documents 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_have_codes() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let base = format!("{}/api/docs", server.http_base());
    let cases = [
        (
            http.post(&base)
                .body("{not json")
                .header("content-type", "application/json"),
            400,
            "invalid_body",
        ),
        (
            http.post(&base).json(&json!({ "id": " padded " })),
            400,
            "invalid_doc_id",
        ),
        (
            http.get(format!("{base}/missing/text")),
            404,
            "doc_not_found",
        ),
        (
            http.get(format!("{base}/missing/update?state_vector=!!")),
            400,
            "invalid_state_vector",
        ),
        (
            http.put(format!("{base}/missing/text"))
                .body(vec![0xc3, 0x28]),
            400,
            "invalid_body",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await?;
        let got = response.status().as_u16();
        let body: Value = response.json().await?;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{body}");
    }
    Ok(())
}

/// Request bodies may be as large as a WebSocket message (so a big document can be written
/// through the API), and one over the limit gets a JSON 413 `body_too_large`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_follows_max_message() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_message = 4 * 1024 * 1024).await?;
    let http = reqwest::Client::new();
    let url = format!("{}/api/docs/big/text", server.http_base());
    let created = http
        .post(format!("{}/api/docs", server.http_base()))
        .json(&serde_json::json!({ "id": "big" }))
        .send()
        .await?;
    assert!(created.status().is_success(), "{}", created.text().await?);
    // 3 MiB: above axum's 2 MiB default, below the configured limit.
    let big = "x".repeat(3 * 1024 * 1024);
    let put = http.put(&url).body(big.clone()).send().await?;
    assert!(put.status().is_success(), "{}", put.text().await?);
    let text = http.get(&url).send().await?.text().await?;
    assert_eq!(text.len(), big.len());
    let too_big = http
        .put(&url)
        .body("y".repeat(5 * 1024 * 1024))
        .send()
        .await?;
    assert_eq!(too_big.status().as_u16(), 413);
    let body: Value = too_big.json().await?;
    assert_eq!(body["code"], "body_too_large", "{body}");
    Ok(())
}
