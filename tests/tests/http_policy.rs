//! The HTTP policy over real sockets, against faults nobody planned for: web pages reaching an
//! open server (unknown `Host` names, DNS rebinding, cross-site writes), request bodies read
//! before the token is checked, refused WebSockets that hold nothing or too much, clients that
//! reconnect hundreds of times a second and the log lines they cost, clients behind a reverse
//! proxy, and a readiness check anyone can make the server flush for.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weft_protocol::{encode_sync, CloseCode, SYNC_STEP1};
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{wait_until, TestServer, WeftProcess, WAIT};

/// The secret of the servers with tokens on.
const SECRET: &str = "test-secret-0123456789abcdef";

/// A token for every document with `role`, valid for an hour.
fn token(role: Access) -> anyhow::Result<String> {
    let claims = Claims {
        scope: Scope::AllDocs,
        role,
        exp: unix_now() + 3600,
        sub: None,
    };
    Ok(mint(&SECRET.parse()?, &claims))
}

/// A WebSocket client's view of an upgrade attempt.
enum Outcome {
    /// Admitted: the server answered sync step 1. The socket is held (and so its slot) for as
    /// long as the outcome lives.
    Admitted(#[allow(dead_code)] Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    /// Accepted and closed at once with this code and reason.
    Closed(u16, String),
    /// Refused with this HTTP status and JSON body.
    Http(u16, Value),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Admitted(_) => write!(f, "Admitted"),
            Self::Closed(code, reason) => write!(f, "Closed({code}, {reason:?})"),
            Self::Http(status, body) => write!(f, "Http({status}, {body})"),
        }
    }
}

/// Opens a WebSocket to `url` with extra `headers` and sends sync step 1; says what happened.
async fn open(url: &str, headers: &[(&'static str, &str)]) -> anyhow::Result<Outcome> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(HeaderName::from_static(name), HeaderValue::from_str(value)?);
    }
    let mut ws = match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Ok(Outcome::Http(response.status().as_u16(), json));
        }
        Err(e) => return Err(e.into()),
    };
    // A refused socket may already be closed: a failed send is not the answer, the read is.
    let _ = ws
        .send(WsMessage::binary(encode_sync(SYNC_STEP1, &[0])))
        .await;
    match tokio::time::timeout(WAIT, ws.next()).await? {
        Some(Ok(WsMessage::Binary(_))) => Ok(Outcome::Admitted(Box::new(ws))),
        Some(Ok(WsMessage::Close(Some(cf)))) => {
            Ok(Outcome::Closed(u16::from(cf.code), cf.reason.to_string()))
        }
        other => anyhow::bail!("unexpected answer to sync step 1: {other:?}"),
    }
}

/// Sends a raw HTTP/1.1 request head (plus `body`) and returns the status line, which must
/// arrive within `patience`.
async fn raw_status(
    server: &TestServer,
    head: &str,
    body: &[u8],
    patience: Duration,
) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(server.addr).await?;
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(patience, async {
        while !got.windows(2).any(|w| w == b"\r\n") {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok(())
    })
    .await;
    anyhow::ensure!(read.is_ok(), "no answer within {patience:?}");
    let text = String::from_utf8_lossy(&got).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// An open server answers only to the names it is known by: a page whose own DNS name points
/// at it (DNS rebinding) gets 421 for every API call, page, dashboard endpoint and WebSocket,
/// even "same origin"; loopback names on any port, `--allowed-host` names and health checks
/// pass. With tokens on, names are not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_answers_only_to_known_hosts() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.allowed_hosts = vec!["weft.test".into()]).await?;
    let base = server.http_base();
    let port = server.addr.port();
    let http = reqwest::Client::new();
    let rebound = format!("evil.example:{port}");
    for path in [
        "/api/docs",
        "/",
        "/d/notes",
        "/dashboard",
        "/metrics",
        "/api/nope",
    ] {
        let res = http
            .get(format!("{base}{path}"))
            .header("host", &rebound)
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
        let body: Value = res.json().await?;
        assert_eq!(body["code"], "host_not_allowed", "{path}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("--allowed-host"), "{message}");
    }
    let same_origin = format!("http://{rebound}");
    let ws = open(
        &server.room_url("notes"),
        &[("host", &rebound), ("origin", &same_origin)],
    )
    .await?;
    assert!(
        matches!(&ws, Outcome::Http(421, body) if body["code"] == "host_not_allowed"),
        "{ws:?}"
    );
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "127.0.0.1".to_owned(),
        format!("weft.test:{port}"),
    ] {
        let res = http
            .get(format!("{base}/api/docs"))
            .header("host", &host)
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK, "{host}");
    }
    let health = http
        .get(format!("{base}/healthz"))
        .header("host", &rebound)
        .send()
        .await?;
    assert_eq!(health.status(), StatusCode::OK);

    let secret: AuthSecret = SECRET.parse()?;
    let secured = TestServer::start_with(move |c| c.auth_secret = Some(secret)).await?;
    let res = http
        .get(format!("{}/api/docs", secured.http_base()))
        .header("host", format!("evil.example:{}", secured.addr.port()))
        .bearer_auth(token(Access::Read)?)
        .send()
        .await?;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "names are not checked with tokens"
    );
    Ok(())
}

/// A page of another site cannot change anything, even with a `text/plain` POST that needs no
/// CORS preflight and even holding a valid token; the server's own origin, listed origins and
/// clients without `Origin` can, and reads stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_are_refused() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await?;
    let base = server.http_base();
    let http = reqwest::Client::new();
    http.post(format!("{base}/api/docs"))
        .json(&serde_json::json!({ "id": "target", "text": "kept" }))
        .send()
        .await?
        .error_for_status()?;
    let append = format!("{base}/api/docs/target/append");
    let attack = http
        .post(&append)
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(" defaced")
        .send()
        .await?;
    assert_eq!(attack.status(), StatusCode::FORBIDDEN);
    let body: Value = attack.json().await?;
    assert_eq!(body["code"], "origin_not_allowed", "{body}");
    let delete = http
        .delete(format!("{base}/api/docs/target"))
        .header("origin", "null")
        .send()
        .await?;
    assert_eq!(delete.status(), StatusCode::FORBIDDEN);
    let own = format!("http://{}", server.addr);
    for origin in [Some(own.as_str()), Some("https://app.example.com"), None] {
        let mut req = http.post(&append).body("+");
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        assert_eq!(req.send().await?.status(), StatusCode::OK, "{origin:?}");
    }
    let read = http
        .get(format!("{base}/api/docs/target/text"))
        .header("origin", "https://evil.example")
        .send()
        .await?;
    assert_eq!(read.text().await?, "kept+++");

    let secret: AuthSecret = SECRET.parse()?;
    let secured = TestServer::start_with(move |c| c.auth_secret = Some(secret)).await?;
    let with_token = http
        .post(format!("{}/api/docs", secured.http_base()))
        .header("origin", "https://evil.example")
        .bearer_auth(token(Access::Admin)?)
        .json(&serde_json::json!({ "id": "x" }))
        .send()
        .await?;
    assert_eq!(
        with_token.status(),
        StatusCode::FORBIDDEN,
        "a token does not help"
    );
    Ok(())
}

/// With tokens on, a request that announces a 16 MiB body and sends a few bytes is refused
/// with 401 at once, on every route that takes a body: the server does not wait for (or read)
/// the body of a request whose token is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_not_read_before_the_token() -> anyhow::Result<()> {
    let secret: AuthSecret = SECRET.parse()?;
    let server = TestServer::start_with(move |c| {
        c.auth_secret = Some(secret);
        c.http_timeout_secs = 120;
    })
    .await?;
    let routes = [
        ("POST", "/api/docs"),
        ("POST", "/api/docs/d/update"),
        ("PUT", "/api/docs/d/text"),
        ("POST", "/api/docs/d/append"),
        ("POST", "/api/docs/d/notices"),
    ];
    for (method, path) in routes {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: 16777216\r\n\r\n"
        );
        let status = raw_status(&server, &head, b"{\"id\":", Duration::from_secs(5)).await?;
        assert!(
            status.starts_with("HTTP/1.1 401"),
            "{method} {path}: {status}"
        );
    }
    // A valid token that may write somewhere is let through to the body.
    let writer = token(Access::Write)?;
    let head = format!(
        "POST /api/docs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {writer}\r\n\
         Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
    );
    let status = raw_status(&server, &head, b"{\"id\":\"a\"}", WAIT).await?;
    assert!(status.starts_with("HTTP/1.1 201"), "{status}");
    Ok(())
}

/// A WebSocket refused for its token holds a connection slot while it closes, so refused
/// sockets count against `--max-connections-per-ip` like admitted ones; the slots free once the
/// close handshake is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sockets_count_against_the_caps() -> anyhow::Result<()> {
    let secret: AuthSecret = SECRET.parse()?;
    let server = TestServer::start_with(move |c| {
        c.auth_secret = Some(secret);
        c.max_connections_per_ip = 2;
    })
    .await?;
    let url = server.room_url("capped");
    // Two refused sockets whose close the client does not answer yet.
    let mut refused = Vec::new();
    for _ in 0..2 {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
        refused.push(ws);
    }
    let with_token = format!("{url}?token={}", token(Access::Write)?);
    let third = open(&with_token, &[]).await?;
    assert!(
        matches!(&third, Outcome::Http(429, body) if body["code"] == "too_many_connections_from_address"),
        "{third:?}"
    );
    for mut ws in refused {
        // Reading the close frame answers it.
        let close = tokio::time::timeout(WAIT, ws.next()).await?;
        assert!(
            matches!(close, Some(Ok(WsMessage::Close(Some(_))))),
            "{close:?}"
        );
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
    }
    // The slots free once the server has finished with the refused sockets.
    let deadline = Instant::now() + WAIT;
    loop {
        match open(&with_token, &[]).await? {
            Outcome::Admitted(_) => return Ok(()),
            other if Instant::now() > deadline => anyhow::bail!("still refused: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A socket being refused reads a few KiB at most: a frame announcing a megabyte ends it at
/// once, instead of the server waiting for the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_socket_reads_only_small_messages() -> anyhow::Result<()> {
    let secret: AuthSecret = SECRET.parse()?;
    let server = TestServer::start_with(move |c| c.auth_secret = Some(secret)).await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.room_url("big")).await?;
    // A masked binary frame header announcing 1 MiB, and a few bytes of it.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0]);
    let sent = Instant::now();
    ws.get_mut().write_all(&frame).await?;
    let ended =
        tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(ended.is_ok(), "the refused socket never ended");
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the server waited {took:?} for a payload it should have refused"
    );
    Ok(())
}

/// A client that reconnects at once after every close is held to `--max-connects-per-sec`
/// (bursts of twice that): past it, HTTP 429 `too_many_connects` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storms_are_rate_limited() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_connects_per_sec = 2).await?;
    let url = server.room_url("storm");
    for i in 0..4 {
        let outcome = open(&url, &[]).await?;
        assert!(matches!(outcome, Outcome::Admitted(_)), "{i}: {outcome:?}");
    }
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = serde_json::from_slice(&response.body().clone().unwrap_or_default())?;
            assert_eq!(body["code"], "too_many_connects", "{body}");
        }
        other => anyhow::bail!("the fifth connect in a burst was not refused: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = open(&url, &[]).await?;
    assert!(matches!(later, Outcome::Admitted(_)), "{later:?}");
    Ok(())
}

/// Behind a trusted proxy, the per-address caps count the client the proxy names, walking
/// `X-Forwarded-For` from the right so a client cannot pick its own address; without
/// `--trusted-proxy` the header is ignored and the caps count the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_name_the_client() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.max_connections_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    })
    .await?;
    let url = server.room_url("proxied");
    let a = open(&url, &[("x-forwarded-for", "198.51.100.1")]).await?;
    let b = open(&url, &[("x-forwarded-for", "198.51.100.2")]).await?;
    assert!(matches!(a, Outcome::Admitted(_)), "{a:?}");
    assert!(matches!(b, Outcome::Admitted(_)), "another client: {b:?}");
    let spoofed = open(&url, &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")]).await?;
    assert!(matches!(spoofed, Outcome::Http(429, _)), "{spoofed:?}");
    let forwarded = open(&url, &[("forwarded", "for=\"198.51.100.2:4711\"")]).await?;
    assert!(matches!(forwarded, Outcome::Http(429, _)), "{forwarded:?}");

    let direct = TestServer::start_with(|c| c.max_connections_per_ip = 1).await?;
    let url = direct.room_url("direct");
    let a = open(&url, &[("x-forwarded-for", "198.51.100.1")]).await?;
    let b = open(&url, &[("x-forwarded-for", "198.51.100.2")]).await?;
    assert!(matches!(a, Outcome::Admitted(_)), "{a:?}");
    assert!(
        matches!(b, Outcome::Http(429, _)),
        "untrusted header ignored: {b:?}"
    );
    Ok(())
}

/// A flood of identical refusals from one client costs one log line per interval, naming the
/// client behind the trusted proxy; the next line after the interval says how many were not
/// logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_refusals_are_logged_once_per_interval() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut weft = WeftProcess::spawn(
        dir.path(),
        &["--auth-secret", SECRET, "--trusted-proxy", "127.0.0.1"],
    )
    .await?;
    let url = weft.room_url("flood");
    let client = [("x-forwarded-for", "198.51.100.7")];
    for _ in 0..30 {
        let outcome = open(&url, &client).await?;
        assert!(
            matches!(&outcome, Outcome::Closed(code, reason)
                if *code == CloseCode::Unauthorized.code() && reason == "token_missing"),
            "{outcome:?}"
        );
    }
    let refusals = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WebSocket refused") && l.contains("token_missing"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = refusals(&weft.log());
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("198.51.100.7"), "{}", lines[0]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    open(&url, &client).await?;
    wait_until("the next refusal line", WAIT, || {
        refusals(&weft.log()).len() == 2
    })
    .await?;
    let lines = refusals(&weft.log());
    assert!(lines[1].contains("(29 more since)"), "{}", lines[1]);
    weft.terminate().await?;
    Ok(())
}

/// `/readyz` probes the store at most about once a second however often it is asked, and
/// callers arriving together share one probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_cached() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let url = format!("{}/readyz", server.http_base());
    let http = reqwest::Client::new();
    let started = Instant::now();
    let together = (0..50).map(|_| {
        let http = http.clone();
        let url = url.clone();
        async move { http.get(&url).send().await?.text().await }
    });
    for answer in futures_util::future::join_all(together).await {
        assert_eq!(answer?, "ready");
    }
    for _ in 0..50 {
        assert_eq!(http.get(&url).send().await?.text().await?, "ready");
    }
    let seconds = started.elapsed().as_secs_f64().ceil();
    let metrics = http
        .get(format!("{}/metrics", server.http_base()))
        .send()
        .await?
        .text()
        .await?;
    let probes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weft_readiness_probes_total "))
        .ok_or_else(|| anyhow::anyhow!("no probe counter in:\n{metrics}"))?
        .trim()
        .parse()?;
    assert!(
        probes >= 1.0 && probes <= seconds + 1.0,
        "{probes} probes for 100 requests in {seconds} s"
    );
    Ok(())
}

/// A client that speaks another protocol at `/ws/{doc}` and reconnects at once after every
/// 1007 leaves one "disconnected" line per interval in the log, not one (or three) per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_protocol_errors_are_logged_once_per_interval() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut weft = WeftProcess::spawn(dir.path(), &["--max-connects-per-sec", "0"]).await?;
    let url = weft.room_url("other-protocol");
    for _ in 0..20 {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        // A Hocuspocus message: the document name first, which is not a y-websocket message.
        ws.send(WsMessage::binary(vec![
            5, b'h', b'e', b'l', b'l', b'o', 0, 0,
        ]))
        .await?;
        let mut closed_with = None;
        while let Some(Ok(msg)) = ws.next().await {
            if let WsMessage::Close(Some(frame)) = msg {
                closed_with = Some(u16::from(frame.code));
            }
        }
        assert_eq!(closed_with, Some(CloseCode::InvalidData.code()));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = weft.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("disconnected") && l.contains("1007"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        !log.contains("undecodable frame"),
        "per-attempt warnings are gone"
    );
    weft.terminate().await?;
    Ok(())
}
