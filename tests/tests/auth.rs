//! Access control over real sockets: signed tokens on WebSockets and the API, each failure with
//! its own status and code, read-only connections, the origin policy, `weft token`, open-mode
//! refusal on network addresses, and tokens kept out of logs.

use std::ffi::OsStr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use weft_protocol::{CloseCode, Control, Role};
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{run_weft, wait_until, Client, TestServer, WeftProcess, WAIT};

/// The secret every test server here is started with.
const SECRET: &str = "test-secret-0123456789abcdef";

fn secret() -> anyhow::Result<AuthSecret> {
    Ok(SECRET.parse()?)
}

/// A token for `doc` (or every document) with `role`, valid for an hour.
fn token(doc: Option<&str>, role: Access, sub: Option<&str>) -> anyhow::Result<String> {
    let claims = Claims {
        scope: doc.map_or(Scope::AllDocs, |d| Scope::Doc(d.to_owned())),
        role,
        exp: unix_now() + 3600,
        sub: sub.map(str::to_owned),
    };
    Ok(mint(&secret()?, &claims))
}

async fn secured() -> anyhow::Result<TestServer> {
    let s = secret()?;
    TestServer::start_with(move |c| c.auth_secret = Some(s)).await
}

/// Tries a WebSocket upgrade and returns the refusal's status and JSON body, or `None` when the
/// upgrade succeeded.
async fn ws_refusal(url: &str, origin: Option<&str>) -> anyhow::Result<Option<(u16, Value)>> {
    let mut request = url.into_client_request()?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin)?);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(None),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Ok(Some((response.status().as_u16(), json)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Connects to `url` and returns the close frame the server sends first, or `None` when a
/// document message arrives instead (the connection was admitted).
async fn ws_close(url: &str) -> anyhow::Result<Option<(u16, String)>> {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let first = tokio::time::timeout(WAIT, ws.next()).await?;
    match first {
        Some(Ok(WsMessage::Close(Some(cf)))) => {
            Ok(Some((u16::from(cf.code), cf.reason.to_string())))
        }
        Some(Ok(_)) => Ok(None),
        other => anyhow::bail!("neither a close frame nor a message: {other:?}"),
    }
}

/// Missing, malformed, forged, expired and wrong-document tokens are each refused on the
/// WebSocket with their own code: accepted and closed with 4000 + the HTTP status (4401, 4403)
/// and the error code as the reason, which stock y-websocket clients understand as "do not
/// reconnect"; a valid one connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_token_failures_are_specific() -> anyhow::Result<()> {
    let server = secured().await?;
    let url = server.room_url("secret-doc");
    let forged = {
        let other: AuthSecret = "some-other-secret-entirely".parse()?;
        let claims = Claims {
            scope: Scope::Doc("secret-doc".into()),
            role: Access::Write,
            exp: unix_now() + 3600,
            sub: None,
        };
        mint(&other, &claims)
    };
    let expired = mint(
        &secret()?,
        &Claims {
            scope: Scope::Doc("secret-doc".into()),
            role: Access::Write,
            exp: unix_now() - 1,
            sub: None,
        },
    );
    let cases = [
        (url.clone(), 401, "token_missing"),
        (format!("{url}?token=garbage"), 401, "token_malformed"),
        (format!("{url}?token={forged}"), 401, "token_bad_signature"),
        (format!("{url}?token={expired}"), 401, "token_expired"),
        (
            format!(
                "{url}?token={}",
                token(Some("other-doc"), Access::Admin, None)?
            ),
            403,
            "token_wrong_document",
        ),
    ];
    for (attempt, status, code) in cases {
        let close = ws_close(&attempt).await?;
        let (got, reason) = close.ok_or_else(|| anyhow::anyhow!("{code}: admitted"))?;
        assert_eq!((got, reason.as_str()), (4000 + status, code));
    }
    let ok = format!(
        "{url}?token={}",
        token(Some("secret-doc"), Access::Write, None)?
    );
    let c = Client::connect_synced(&ok).await?;
    c.push("allowed")?;
    c.wait_acked().await?;
    // A token for every document works too, also in the Authorization header.
    let all = token(None, Access::Read, None)?;
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {all}"))?,
    );
    tokio_tungstenite::connect_async(request).await?;
    Ok(())
}

/// A read-only connection receives the document and awareness and may show its cursor, but its
/// edits never reach the stored document or the other client; it is told once, in the control
/// channel, and its welcome says `read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_edits_never_land() -> anyhow::Result<()> {
    let server = secured().await?;
    let room = "shared-notes";
    let url = |role| -> anyhow::Result<String> {
        Ok(format!(
            "{}?token={}",
            server.room_url(room),
            token(Some(room), role, None)?
        ))
    };
    let writer = Client::connect_synced(&url(Access::Write)?).await?;
    writer.push("from the writer. ")?;
    writer.wait_acked().await?;
    let reader = Client::connect_synced(&url(Access::Read)?).await?;
    reader.send_control(Control::Hello { user: None })?;
    reader
        .wait_text("the writer's text", |t| t == "from the writer. ")
        .await?;

    reader.push("READER EDIT")?;
    reader.push("SECOND READER EDIT")?;
    reader.set_awareness(1, r#"{"user":{"name":"Reader"},"cursor":null}"#)?;
    wait_until("the writer to see the reader's cursor", WAIT, || {
        writer.awareness_of(reader.client_id()).is_some()
    })
    .await?;
    writer.push("more.")?;
    writer.wait_acked().await?;
    reader
        .wait_text("the writer's later edit", |t| t.contains("more."))
        .await?;

    let controls = reader.controls();
    assert!(
        controls.iter().any(|c| matches!(
            c,
            Control::Welcome {
                role: Role::Read,
                ..
            }
        )),
        "{controls:?}"
    );
    let told = controls
        .iter()
        .filter(|c| matches!(c, Control::Error { code, .. } if code == "read_only"))
        .count();
    assert_eq!(told, 1, "told once: {controls:?}");
    assert!(
        reader.permission_denied().is_empty(),
        "told in the control channel only"
    );
    assert_eq!(writer.text(), "from the writer. more.");
    // The server's copy, through the API and through a fresh client.
    let http = reqwest::Client::new();
    let text = http
        .get(format!("{}/api/docs/{room}/text", server.http_base()))
        .bearer_auth(token(Some(room), Access::Read, None)?)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    assert_eq!(text, "from the writer. more.");
    let fresh = Client::connect_synced(&url(Access::Read)?).await?;
    assert_eq!(fresh.text(), "from the writer. more.");
    Ok(())
}

/// A WebSocket upgrade from another site's page is refused with 403 `origin_not_allowed`; the
/// server's own origin, a listed origin, and clients that send no Origin are let in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_upgrade_is_refused() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await?;
    let url = server.room_url("origins");
    let refusal = ws_refusal(&url, Some("https://evil.example")).await?;
    let (status, body) = refusal.ok_or_else(|| anyhow::anyhow!("cross-origin accepted"))?;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    let same = format!("http://{}", server.addr);
    assert!(
        ws_refusal(&url, Some(&same)).await?.is_none(),
        "same origin"
    );
    assert!(ws_refusal(&url, Some("https://app.example.com"))
        .await?
        .is_none());
    assert!(ws_refusal(&url, None).await?.is_none(), "no Origin header");
    Ok(())
}

/// Every API failure has its own status and code: missing, malformed, forged, expired,
/// wrong-document and insufficient-role tokens; listing needs a token for all documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_failures_are_specific() -> anyhow::Result<()> {
    let server = secured().await?;
    let http = reqwest::Client::new();
    let base = server.http_base();
    let admin = token(None, Access::Admin, None)?;
    let created = http
        .post(format!("{base}/api/docs"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "id": "report", "text": "Quarterly report" }))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);

    let text_url = format!("{base}/api/docs/report/text");
    let expired = mint(
        &secret()?,
        &Claims {
            scope: Scope::AllDocs,
            role: Access::Admin,
            exp: unix_now() - 10,
            sub: None,
        },
    );
    let forged = mint(
        &"not-the-server-secret!!".parse()?,
        &Claims {
            scope: Scope::AllDocs,
            role: Access::Admin,
            exp: unix_now() + 60,
            sub: None,
        },
    );
    let read = token(Some("report"), Access::Read, None)?;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (http.get(&text_url), 401, "token_missing"),
        (
            http.get(&text_url).bearer_auth("v1.x"),
            401,
            "token_malformed",
        ),
        (
            http.get(&text_url).bearer_auth(&forged),
            401,
            "token_bad_signature",
        ),
        (
            http.get(&text_url).bearer_auth(&expired),
            401,
            "token_expired",
        ),
        (
            http.get(&text_url)
                .bearer_auth(token(Some("other"), Access::Admin, None)?),
            403,
            "token_wrong_document",
        ),
        (
            http.put(&text_url).bearer_auth(&read).body("overwritten"),
            403,
            "token_insufficient_role",
        ),
        (
            http.delete(format!("{base}/api/docs/report"))
                .bearer_auth(&read),
            403,
            "token_insufficient_role",
        ),
        (
            http.delete(format!("{base}/api/trash/report"))
                .bearer_auth(token(Some("report"), Access::Write, None)?),
            403,
            "token_insufficient_role",
        ),
        (
            http.get(format!("{base}/api/docs")).bearer_auth(&read),
            403,
            "token_wrong_document",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await?;
        let got = response.status().as_u16();
        let body: Value = response.json().await?;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{body}");
    }
    let text = http.get(&text_url).bearer_auth(&read).send().await?;
    assert_eq!(
        text.text().await?,
        "Quarterly report",
        "the denied PUT changed nothing"
    );
    Ok(())
}

/// `weft token` prints a token the server accepts for exactly what it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_token_mints_accepted_tokens() -> anyhow::Result<()> {
    let server = secured().await?;
    let args = [
        "token", "--doc", "minted", "--role", "write", "--ttl", "10m", "--sub", "ana",
    ];
    let mut argv: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    argv.extend([OsStr::new("--auth-secret"), OsStr::new(SECRET)]);
    let (status, out) = run_weft(&argv).await?;
    assert!(status.success(), "{out}");
    let minted = out.trim();
    let claims = weft_server::token::verify(&secret()?, minted, unix_now())?;
    assert_eq!(claims.scope, Scope::Doc("minted".into()));
    assert_eq!(
        (claims.role, claims.sub.as_deref()),
        (Access::Write, Some("ana"))
    );
    assert!(claims.exp > unix_now() + 500 && claims.exp <= unix_now() + 600);
    let c =
        Client::connect_synced(&format!("{}?token={minted}", server.room_url("minted"))).await?;
    c.push("hello")?;
    c.wait_acked().await?;
    let (status, out) =
        run_weft(&[OsStr::new("token"), OsStr::new("--doc"), OsStr::new("x")]).await?;
    assert!(!status.success(), "a token without a secret: {out}");
    Ok(())
}

/// Without a secret the binary refuses a non-loopback address unless `--allow-open`, saying
/// why; on loopback it starts and warns that it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_is_loud_and_loopback_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (status, out) = run_weft(&[
        OsStr::new("--bind"),
        OsStr::new("0.0.0.0:0"),
        OsStr::new("--data"),
        dir.path().as_os_str(),
    ])
    .await?;
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("--allow-open") && out.contains("--auth-secret"),
        "{out}"
    );
    let mut weft = WeftProcess::spawn(dir.path(), &[]).await?;
    wait_until("the open-mode warning", WAIT, || {
        weft.log().contains("OPEN MODE")
    })
    .await?;
    weft.terminate().await?;
    Ok(())
}

/// Tokens never appear in the server's logs, for accepted and refused connections alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_out_of_logs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut weft = WeftProcess::spawn(dir.path(), &["--auth-secret", SECRET]).await?;
    let good = token(Some("logged"), Access::Write, None)?;
    let wrong = token(Some("elsewhere"), Access::Write, None)?;
    let c = Client::connect_synced(&format!("{}?token={good}", weft.room_url("logged"))).await?;
    c.push("x")?;
    c.wait_acked().await?;
    let refused = ws_close(&format!("{}?token={wrong}", weft.room_url("logged"))).await?;
    assert_eq!(
        refused.map(|(code, _)| code),
        Some(CloseCode::Forbidden.code())
    );
    let http = reqwest::Client::new();
    http.get(format!("http://{}/api/docs/logged/text", weft.addr))
        .bearer_auth(&wrong)
        .send()
        .await?;
    c.close().await;
    wait_until("the disconnect to be logged", WAIT, || {
        weft.log().contains("disconnected")
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = weft.log();
    for t in [&good, &wrong] {
        let signature = t.rsplit('.').next().unwrap_or(t);
        assert!(
            !log.contains(signature),
            "a token leaked into the log:\n{log}"
        );
    }
    weft.terminate().await?;
    Ok(())
}

/// A page (a request with an allowed Origin) is refused in a close frame it can read, 4000 plus
/// the HTTP status with the error code as reason, since browsers hide refused upgrades' status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_told_why_in_a_close_frame() -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let server = secured().await?;
    let origin = format!("http://{}", server.addr);
    let cases = [
        (
            server.room_url("page"),
            CloseCode::Unauthorized,
            "token_missing",
        ),
        (
            format!(
                "{}?token={}",
                server.room_url("page"),
                token(Some("other"), Access::Write, None)?
            ),
            CloseCode::Forbidden,
            "token_wrong_document",
        ),
    ];
    for (url, code, reason) in cases {
        let mut request = url.as_str().into_client_request()?;
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(&origin)?);
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
        let close = tokio::time::timeout(WAIT, async {
            while let Some(msg) = ws.next().await {
                if let WsMessage::Close(Some(cf)) = msg? {
                    return anyhow::Ok((u16::from(cf.code), cf.reason.to_string()));
                }
            }
            anyhow::bail!("stream ended without a close frame")
        })
        .await??;
        assert_eq!(close, (code.code(), reason.to_owned()), "{url}");
    }
    Ok(())
}
