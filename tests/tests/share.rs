//! `POST /api/tokens`, the API behind the editor's share buttons, over real sockets: an admin
//! mints read and write links that work as their role says (on the API and on the WebSocket),
//! writers and readers cannot mint, lifetimes are honoured and capped by the minting token,
//! bad bodies get clear 400s, and open mode answers plain links.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_protocol::{Control, Role};
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{wait_until, Client, TestServer, WAIT};

/// The secret the secured test servers are started with.
const SECRET: &str = "share-test-secret-0123456789";

fn secret() -> anyhow::Result<AuthSecret> {
    Ok(SECRET.parse()?)
}

/// A token for `doc` (or every document) with `role`, expiring at `exp`.
fn token_until(doc: Option<&str>, role: Access, exp: u64) -> anyhow::Result<String> {
    let claims = Claims {
        scope: doc.map_or(Scope::AllDocs, |d| Scope::Doc(d.to_owned())),
        role,
        exp,
        sub: None,
    };
    Ok(mint(&secret()?, &claims))
}

/// [`token_until`], valid for an hour.
fn token(doc: Option<&str>, role: Access) -> anyhow::Result<String> {
    token_until(doc, role, unix_now() + 3600)
}

async fn secured() -> anyhow::Result<TestServer> {
    let s = secret()?;
    TestServer::start_with(move |c| c.auth_secret = Some(s)).await
}

/// Posts `body` (raw JSON text) to `/api/tokens` with `bearer`; returns the status and the JSON
/// answer.
async fn post_mint(
    server: &TestServer,
    bearer: Option<&str>,
    body: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/tokens", server.http_base()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let res = req.send().await?;
    let status = res.status();
    let json = res.json().await.unwrap_or(Value::Null);
    Ok((status, json))
}

/// Mints with `bearer` and expects success; returns the answer.
async fn mint_ok(server: &TestServer, bearer: &str, body: Value) -> anyhow::Result<Value> {
    let (status, json) = post_mint(server, Some(bearer), &body.to_string()).await?;
    anyhow::ensure!(status == StatusCode::OK, "mint {body}: {status} {json}");
    Ok(json)
}

/// Creates `doc` holding `text`.
async fn create(server: &TestServer, admin: &str, doc: &str, text: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .post(format!("{}/api/docs", server.http_base()))
        .bearer_auth(admin)
        .json(&json!({ "id": doc, "text": text }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// `PUT /api/docs/{doc}/text` with `bearer`: the status and the error code, if any.
async fn put_text(
    server: &TestServer,
    bearer: &str,
    doc: &str,
    text: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let res = reqwest::Client::new()
        .put(format!("{}/api/docs/{doc}/text", server.http_base()))
        .bearer_auth(bearer)
        .body(text.to_owned())
        .send()
        .await?;
    let status = res.status();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// `GET /api/docs/{doc}/text` with `bearer`: the status and the body.
async fn get_text(server: &TestServer, bearer: &str, doc: &str) -> anyhow::Result<(u16, String)> {
    let res = reqwest::Client::new()
        .get(format!("{}/api/docs/{doc}/text", server.http_base()))
        .bearer_auth(bearer)
        .send()
        .await?;
    Ok((res.status().as_u16(), res.text().await?))
}

/// An admin mints a write link and a read link: the answer carries the token and the editor
/// link; the write token edits, the read token reads but cannot write through the API or the
/// WebSocket; a document-scoped admin may mint for its document only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mints_links_that_work_as_their_role_says() -> anyhow::Result<()> {
    let server = secured().await?;
    let admin = token(None, Access::Admin)?;
    let doc = "shared notes";
    create(&server, &admin, doc, "hello").await?;

    let write = mint_ok(
        &server,
        &admin,
        json!({ "doc": doc, "role": "write", "ttl_secs": 3600 }),
    )
    .await?;
    let write_token = write["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(write["doc"], doc);
    assert_eq!(write["role"], "write");
    assert_eq!(
        write["link"],
        format!("/d/shared%20notes?token={write_token}")
    );
    assert_eq!(write["capped"], false);
    let exp = write["expires_at"].as_u64().unwrap_or(0);
    let now = unix_now();
    assert!(
        exp > now + 3500 && exp <= now + 3600,
        "expires_at {exp}, now {now}"
    );

    let read = mint_ok(&server, &admin, json!({ "doc": doc, "role": "read" })).await?;
    let read_token = read["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(read["role"], "read");

    // The write token edits; the read token reads and is refused writing.
    let doc_path = "shared%20notes";
    assert_eq!(
        put_text(&server, &write_token, doc_path, "by the writer")
            .await?
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get_text(&server, &read_token, doc_path).await?,
        (200, "by the writer".into())
    );
    let (status, err) = put_text(&server, &read_token, doc_path, "by the reader").await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("token_insufficient_role"))
    );
    // Neither token is good for another document, nor for minting.
    let (status, err) = get_text(&server, &write_token, "other").await?;
    assert_eq!(status, 403, "{err}");
    let (status, err) = post_mint(
        &server,
        Some(&write_token),
        &json!({ "doc": doc, "role": "read" }).to_string(),
    )
    .await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("token_insufficient_role"))
    );

    // Over the WebSocket the minted read token is a reader: its edits never land.
    let url = format!("{}?token={read_token}", server.room_url(doc_path));
    let reader = Client::connect_synced(&url).await?;
    reader.send_control(Control::Hello { user: None })?;
    reader
        .wait_text("the stored text", |t| t == "by the writer")
        .await?;
    reader.push(" READER EDIT")?;
    wait_until("the reader to be told it is read-only", WAIT, || {
        reader
            .controls()
            .iter()
            .any(|c| matches!(c, Control::Error { code, .. } if code == "read_only"))
    })
    .await?;
    assert!(reader.controls().iter().any(|c| matches!(
        c,
        Control::Welcome {
            role: Role::Read,
            ..
        }
    )));
    let writer_url = format!("{}?token={write_token}", server.room_url(doc_path));
    let writer = Client::connect_synced(&writer_url).await?;
    writer.push(" and more")?;
    writer.wait_acked().await?;
    // The reader keeps its own rejected edit locally; the server and the writer never see it.
    reader
        .wait_text("the writer's later edit", |t| t.contains("and more"))
        .await?;
    assert_eq!(writer.text(), "by the writer and more");
    assert_eq!(
        get_text(&server, &admin, doc_path).await?.1,
        "by the writer and more"
    );

    // An admin of one document mints for it, and only for it.
    let doc_admin = token(Some(doc), Access::Admin)?;
    mint_ok(&server, &doc_admin, json!({ "doc": doc, "role": "write" })).await?;
    let (status, err) = post_mint(
        &server,
        Some(&doc_admin),
        &json!({ "doc": "other", "role": "write" }).to_string(),
    )
    .await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("token_wrong_document"))
    );
    Ok(())
}

/// Without the admin role nothing is minted: no token is 401, a write or read token 403, each
/// with its code; the token is checked before the body is looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_mint() -> anyhow::Result<()> {
    let server = secured().await?;
    let body = json!({ "doc": "notes", "role": "read" }).to_string();
    let (status, err) = post_mint(&server, None, &body).await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_missing"))
    );
    for role in [Access::Write, Access::Read] {
        for scope in [None, Some("notes")] {
            let t = token(scope, role)?;
            let (status, err) = post_mint(&server, Some(&t), &body).await?;
            assert_eq!(
                (status, err["code"].as_str()),
                (StatusCode::FORBIDDEN, Some("token_insufficient_role")),
                "{role:?} {scope:?}: {err}"
            );
            // Even with a broken body, the role is what is refused.
            let (status, _) = post_mint(&server, Some(&t), "{not json").await?;
            assert_eq!(status, StatusCode::FORBIDDEN);
        }
    }
    let expired = token_until(None, Access::Admin, unix_now() - 1)?;
    let (status, err) = post_mint(&server, Some(&expired), &body).await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
    Ok(())
}

/// A minted token expires when its `ttl_secs` is over (on the API and the WebSocket), and never
/// outlives the admin token that minted it: a longer lifetime, or none, is cut to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_honoured_and_capped() -> anyhow::Result<()> {
    let server = secured().await?;
    let admin = token(None, Access::Admin)?;
    create(&server, &admin, "brief", "text").await?;
    let short = mint_ok(
        &server,
        &admin,
        json!({ "doc": "brief", "role": "read", "ttl_secs": 1 }),
    )
    .await?;
    let short_token = short["token"].as_str().unwrap_or_default().to_owned();
    let exp = short["expires_at"].as_u64().unwrap_or(0);
    assert!(exp > 0 && exp <= unix_now() + 1, "expires_at {exp}");
    // Good until it expires, then refused: wait for the clock, not for a fixed time.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get_text(&server, &short_token, "brief").await?;
        if unix_now() < exp {
            assert_eq!(status, 200, "before expiry: {body}");
        } else if status == 401 {
            assert!(body.contains("token_expired"), "{body}");
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never expired: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("{}?token={short_token}", server.room_url("brief"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    use futures_util::StreamExt as _;
    let first = tokio::time::timeout(WAIT, ws.next()).await?;
    match first {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(cf)))) => {
            assert_eq!(u16::from(cf.code), 4401, "{cf:?}");
        }
        other => anyhow::bail!("an expired minted token was let in: {other:?}"),
    }

    // An admin token good for a minute mints nothing that lasts longer.
    let admin_exp = unix_now() + 60;
    let brief_admin = token_until(None, Access::Admin, admin_exp)?;
    for body in [
        json!({ "doc": "brief", "role": "write", "ttl_secs": 86_400 }),
        json!({ "doc": "brief", "role": "write", "ttl_secs": null }),
        json!({ "doc": "brief", "role": "write" }),
    ] {
        let m = mint_ok(&server, &brief_admin, body.clone()).await?;
        assert_eq!(
            (m["expires_at"].as_u64(), &m["capped"]),
            (Some(admin_exp), &json!(true)),
            "{body}: {m}"
        );
    }
    let m = mint_ok(
        &server,
        &brief_admin,
        json!({ "doc": "brief", "role": "write", "ttl_secs": 5 }),
    )
    .await?;
    assert_eq!(m["capped"], false, "{m}");
    Ok(())
}

/// Bodies that are not a mint request are refused with 400 and a message that names the
/// problem; the server keeps minting for good requests afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_clear_400s() -> anyhow::Result<()> {
    let server = secured().await?;
    let admin = token(None, Access::Admin)?;
    let cases: [(&str, &str, &str); 9] = [
        ("{not json", "invalid_body", ""),
        ("[]", "invalid_body", ""),
        (r#"{"role":"read"}"#, "invalid_body", "doc"),
        (r#"{"doc":"notes"}"#, "invalid_body", "role"),
        (r#"{"doc":"notes","role":"admin"}"#, "invalid_body", "admin"),
        (
            r#"{"doc":"notes","role":"read","ttl_secs":-5}"#,
            "invalid_body",
            "ttl_secs",
        ),
        (
            r#"{"doc":"notes","role":"read","ttl_secs":0}"#,
            "invalid_ttl",
            "at least 1",
        ),
        (
            r#"{"doc":"notes","role":"read","expires":"never"}"#,
            "invalid_body",
            "expires",
        ),
        (r#"{"doc":"a/b","role":"read"}"#, "invalid_doc_id", ""),
    ];
    for (body, code, mentions) in cases {
        let (status, err) = post_mint(&server, Some(&admin), body).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["code"], code, "{body}: {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && message.contains(mentions),
            "{body}: {message}"
        );
    }
    mint_ok(&server, &admin, json!({ "doc": "notes", "role": "read" })).await?;
    Ok(())
}

/// In open mode every link edits: the answer is the plain editor link, with no token and no
/// expiry. The route is in the OpenAPI description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_answers_plain_links() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (status, m) = post_mint(
        &server,
        None,
        &json!({ "doc": "café", "role": "read", "ttl_secs": 60 }).to_string(),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(
        m,
        json!({ "doc": "café", "role": "read", "token": null, "link": "/d/caf%C3%A9", "expires_at": null, "capped": false })
    );
    // The route is in the OpenAPI description, with its request body.
    let spec: Value = reqwest::get(format!("{}/api/openapi.json", server.http_base()))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let op = &spec["paths"]["/api/tokens"]["post"];
    assert!(
        op["requestBody"].is_object() && op["responses"]["200"].is_object(),
        "{op}"
    );
    assert!(spec["components"]["schemas"]["MintRequest"].is_object());
    Ok(())
}
