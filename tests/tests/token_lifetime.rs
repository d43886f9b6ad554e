//! Token lifetime on live connections: a socket is closed with 4401 `token_expired` when its
//! token expires, and `POST /api/docs/{id}/revoke` refuses the document's tokens issued before
//! it (on the API and on sockets), closes the connections admitted with one, and survives a
//! restart. Every wait is a bounded poll.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{Client, TestServer, WAIT};

/// The secret every test server here is started with.
const SECRET: &str = "token-lifetime-secret-0123456789";

fn secret() -> anyhow::Result<AuthSecret> {
    Ok(SECRET.parse()?)
}

/// A token for `doc` (or every document) with `role`, valid for `ttl` seconds.
fn token(doc: Option<&str>, role: Access, ttl: u64) -> anyhow::Result<String> {
    let claims = Claims {
        scope: doc.map_or(Scope::AllDocs, |d| Scope::Doc(d.to_owned())),
        role,
        exp: unix_now() + ttl,
        sub: None,
    };
    Ok(mint(&secret()?, &claims))
}

async fn secured_in(dir: &std::path::Path) -> anyhow::Result<TestServer> {
    let s = secret()?;
    TestServer::start_in(dir, move |c| c.auth_secret = Some(s)).await
}

/// Connects to `url` and returns the close frame the server sends first, or `None` when a
/// document message arrives instead (the connection was admitted).
async fn ws_close(url: &str) -> anyhow::Result<Option<(u16, String)>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    match tokio::time::timeout(WAIT, ws.next()).await? {
        Some(Ok(WsMessage::Close(Some(cf)))) => {
            Ok(Some((u16::from(cf.code), cf.reason.to_string())))
        }
        Some(Ok(_)) => Ok(None),
        other => anyhow::bail!("neither a close frame nor a message: {other:?}"),
    }
}

/// Waits (bounded) until the Unix second has changed: a revocation covers tokens issued
/// before its second, and those minted in the same second stay valid.
async fn next_second() -> anyhow::Result<()> {
    let start = unix_now();
    weft_tests::wait_until("the next second", WAIT, || unix_now() > start).await
}

/// `POST /api/docs/{doc}/revoke` with `token`, in a later second than every token minted
/// so far: the status and JSON body.
async fn revoke(server: &TestServer, doc: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    next_second().await?;
    let response = reqwest::Client::new()
        .post(format!("{}/api/docs/{doc}/revoke", server.http_base()))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// `GET /api/docs/{doc}/text` with `token`: the status and the body's `code` (if JSON).
async fn get_text(server: &TestServer, doc: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let response = reqwest::Client::new()
        .get(format!("{}/api/docs/{doc}/text", server.http_base()))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or(body);
    Ok((status, code))
}

/// Creates `doc` with `text`, with an all-docs admin token.
async fn create(server: &TestServer, doc: &str, text: &str) -> anyhow::Result<()> {
    let created = reqwest::Client::new()
        .post(format!("{}/api/docs", server.http_base()))
        .bearer_auth(token(None, Access::Admin, 3600)?)
        .json(&serde_json::json!({ "id": doc, "text": text }))
        .send()
        .await?;
    anyhow::ensure!(
        created.status() == StatusCode::CREATED,
        "create: {created:?}"
    );
    Ok(())
}

/// A socket whose token expires is closed with 4401 `token_expired` once it has expired (not
/// before), and the same token cannot connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_its_socket() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = secured_in(dir.path()).await?;
    let short = token(Some("expiring"), Access::Write, 2)?;
    let exp = unix_now() + 2;
    let url = format!("{}?token={short}", server.room_url("expiring"));
    let c = Client::connect_synced(&url).await?;
    c.push("before expiry")?;
    c.wait_acked().await?;
    let (code, reason) = c.wait_close().await?;
    assert_eq!((code, reason.as_str()), (4401, "token_expired"));
    assert!(
        unix_now() + 1 >= exp,
        "closed well before the token expired"
    );
    let again = ws_close(&url).await?;
    assert_eq!(again, Some((4401, "token_expired".to_owned())));
    // A connection in open mode or with a long token is not affected.
    let long = token(Some("expiring"), Access::Read, 3600)?;
    let fresh =
        Client::connect_synced(&format!("{}?token={long}", server.room_url("expiring"))).await?;
    assert_eq!(fresh.text(), "before expiry");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        fresh.close_frame().is_none(),
        "a valid token's socket closed"
    );
    Ok(())
}

/// Revoking closes the document's token connections with 4401 `token_revoked`; their tokens
/// (and all-docs tokens, for this document) are refused afterwards on the API (401) and the
/// socket (4401); a token minted after the revocation works; other documents are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_closes_connections_and_refuses_old_tokens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = secured_in(dir.path()).await?;
    create(&server, "leaked", "secret plans").await?;
    create(&server, "other", "unrelated").await?;
    let writer_token = token(Some("leaked"), Access::Write, 3600)?;
    let admin = token(None, Access::Admin, 3600)?;
    let url = |t: &str| format!("{}?token={t}", server.room_url("leaked"));
    let writer = Client::connect_synced(&url(&writer_token)).await?;
    let reader = Client::connect_synced(&url(&token(Some("leaked"), Access::Read, 3600)?)).await?;
    let other_token = token(Some("other"), Access::Write, 3600)?;
    let bystander =
        Client::connect_synced(&format!("{}?token={other_token}", server.room_url("other")))
            .await?;

    let (status, body) = revoke(&server, "leaked", &admin).await?;
    assert_eq!(status, 200, "{body}");
    let before = body["revoked_before"].as_u64().unwrap_or(0);
    assert!(before > 0 && before <= unix_now(), "{body}");
    assert_eq!(body["closed"].as_u64(), Some(2), "{body}");
    for c in [&writer, &reader] {
        let (code, reason) = c.wait_close().await?;
        assert_eq!((code, reason.as_str()), (4401, "token_revoked"));
    }
    assert!(
        bystander.close_frame().is_none(),
        "another document's socket closed"
    );

    for old in [&writer_token, &admin] {
        let refused = get_text(&server, "leaked", old).await?;
        assert_eq!(refused, (401, "token_revoked".to_owned()));
    }
    assert_eq!(
        ws_close(&url(&writer_token)).await?,
        Some((4401, "token_revoked".to_owned()))
    );
    // The all-docs token still works on the other document.
    assert_eq!(
        get_text(&server, "other", &admin).await?,
        (200, "unrelated".to_owned())
    );

    let fresh = token(Some("leaked"), Access::Write, 3600)?;
    assert_eq!(
        get_text(&server, "leaked", &fresh).await?,
        (200, "secret plans".to_owned())
    );
    let c = Client::connect_synced(&url(&fresh)).await?;
    assert_eq!(c.text(), "secret plans");
    Ok(())
}

/// A revocation is durable: after a restart the old token is still refused, a new one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_survives_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = secured_in(dir.path()).await?;
    create(&server, "kept", "durable").await?;
    let old = token(Some("kept"), Access::Read, 3600)?;
    assert_eq!(
        get_text(&server, "kept", &old).await?,
        (200, "durable".to_owned())
    );
    let (status, body) =
        revoke(&server, "kept", &token(Some("kept"), Access::Admin, 3600)?).await?;
    assert_eq!(status, 200, "{body}");
    server.stop().await?;

    let server = secured_in(dir.path()).await?;
    assert_eq!(
        get_text(&server, "kept", &old).await?,
        (401, "token_revoked".to_owned())
    );
    let url = format!("{}?token={old}", server.room_url("kept"));
    assert_eq!(
        ws_close(&url).await?,
        Some((4401, "token_revoked".to_owned()))
    );
    let fresh = token(Some("kept"), Access::Read, 3600)?;
    assert_eq!(
        get_text(&server, "kept", &fresh).await?,
        (200, "durable".to_owned())
    );
    Ok(())
}

/// Only the admin role may revoke: a write or read token is 403, no token 401, and nothing is
/// revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_revoke() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = secured_in(dir.path()).await?;
    create(&server, "guarded", "text").await?;
    let write = token(Some("guarded"), Access::Write, 3600)?;
    for role in [Access::Write, Access::Read] {
        let (status, body) =
            revoke(&server, "guarded", &token(Some("guarded"), role, 3600)?).await?;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("token_insufficient_role"))
        );
    }
    let other_doc = token(Some("elsewhere"), Access::Admin, 3600)?;
    let (status, body) = revoke(&server, "guarded", &other_doc).await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("token_wrong_document"))
    );
    let anonymous = reqwest::Client::new()
        .post(format!("{}/api/docs/guarded/revoke", server.http_base()))
        .send()
        .await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_text(&server, "guarded", &write).await?,
        (200, "text".to_owned())
    );
    Ok(())
}
