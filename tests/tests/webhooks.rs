//! Webhooks against a real receiver (a small HTTP server in the test on 127.0.0.1):
//! signatures that verify as the Standard Webhooks specification says (checked against its test
//! vector), retries with the same `webhook-id`, undelivered events surviving a SIGKILL, a
//! receiver down during 200 edits getting every document's final state, giving up after the
//! retry window, redelivery, and admin-only endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use weft_server::config::WebhookSecret;
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{wait_until, TestServer, WeftProcess, WAIT};

/// The secret every server here signs with (24 random bytes, base64).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn key() -> Vec<u8> {
    STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap_or_default()
}

/// The receiver's check, written from the specification: some `v1,` signature in the header
/// equals base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
fn verifies(key: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    json: Value,
}

/// A webhook receiver that records every POST and answers 500 to the first `fail` ones.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    fail: Arc<AtomicUsize>,
}

impl Receiver {
    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves on `addr` (port 0: any) until the test ends; returns where.
    async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context("binding the receiver"),
            }
        };
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }

    /// Serves https on a free loopback port with this certificate and key (PEM) until the
    /// test ends; returns where.
    async fn serve_tls(&self, cert: &str, key: &str) -> anyhow::Result<SocketAddr> {
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.as_bytes().to_vec(),
            key.as_bytes().to_vec(),
        )
        .await?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone());
        let server = axum_server::from_tcp_rustls(listener, config);
        tokio::spawn(async move { server.serve(app.into_make_service()).await });
        Ok(addr)
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let got = Got {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body: body.to_vec(),
    };
    r.got.lock().unwrap_or_else(|p| p.into_inner()).push(got);
    let failing = r
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// An address nothing listens on (yet): connections are refused until a receiver binds it.
fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A server posting to `addr`, retrying from `base_ms`, with `adjust` on top.
async fn server_for(
    addr: SocketAddr,
    adjust: impl FnOnce(&mut weft_server::Config),
) -> anyhow::Result<TestServer> {
    TestServer::start_with(move |c| {
        c.feed_debounce_ms = 10;
        c.webhook_urls = vec![format!("http://{addr}/hook")];
        c.webhook_secret = Some(WebhookSecret(key()));
        c.webhook_retry_base_ms = 20;
        adjust(c);
    })
    .await
}

async fn create(base: &str, doc: &str, text: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .post(format!("{base}/api/docs"))
        .json(&json!({ "id": doc, "text": text }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// The verifier above agrees with the specification's published example, so the deliveries it
/// accepts below are ones any Standard Webhooks library accepts.
#[test]
fn the_receivers_check_matches_the_specification_vector() {
    let key = key();
    let body = br#"{"test": 2432232314}"#;
    let header = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert!(verifies(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        body,
        header
    ));
    assert!(!verifies(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265331",
        body,
        header
    ));
}

/// A receiver that answers 500 twice then 200 gets the event three times with the same
/// `webhook-id` and body, each attempt signed; the endpoint's state and `/metrics` say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_event_again_with_the_same_id() -> anyhow::Result<()> {
    let receiver = Receiver::default();
    receiver.fail.store(2, Ordering::SeqCst);
    let addr = receiver
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let server = server_for(addr, |c| {
        c.webhook_events = vec!["document.created".into()];
    })
    .await?;
    let base = server.http_base();
    create(&base, "retried", "hello").await?;
    wait_until("three attempts", WAIT, || receiver.got().len() >= 3).await?;
    let got = receiver.got();
    assert_eq!(got.len(), 3, "{got:#?}");
    for g in &got {
        assert_eq!(g.id, got[0].id, "webhook-id changed across retries");
        assert_eq!(g.body, got[0].body);
        assert!(
            verifies(&key(), &g.id, &g.timestamp, &g.body, &g.signature),
            "{g:#?}"
        );
        let ts: u64 = g.timestamp.parse()?;
        assert!(ts.abs_diff(unix_now()) < 60);
    }
    assert_eq!(got[0].json["type"], "document.created");
    assert_eq!(got[0].json["doc"], "retried");
    let listed: Value = reqwest::get(format!("{base}/api/webhooks"))
        .await?
        .json()
        .await?;
    let endpoint = &listed["endpoints"][0];
    assert_eq!(endpoint["state"], "ok", "{listed}");
    assert_eq!(endpoint["delivered"], 1);
    assert_eq!(endpoint["failed_attempts"], 2);
    assert!(endpoint["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("500")));
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("weft_webhook_deliveries_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_webhook_failures_total 2"),
        "{metrics}"
    );
    Ok(())
}

/// Per document, the deliveries' `seq`s increase, and the last `document.updated` is the
/// document's final length.
fn final_lengths(got: &[Got]) -> std::collections::HashMap<String, u64> {
    let mut last_seq = std::collections::HashMap::<String, u64>::new();
    let mut lengths = std::collections::HashMap::new();
    for g in got {
        let doc = g.json["doc"].as_str().unwrap_or_default().to_owned();
        let seq = g.json["seq"].as_u64().unwrap_or_default();
        let before = last_seq.insert(doc.clone(), seq).unwrap_or(0);
        assert!(
            seq >= before,
            "out of order for {doc}: {seq} after {before}"
        );
        if let Some(n) = g.json["text_length"].as_u64() {
            lengths.insert(doc, n);
        }
    }
    lengths
}

/// A receiver that is down while 200 edits are made gets, once it is back, every document's
/// final state, in order per document, with valid signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_during_200_edits_gets_every_final_state() -> anyhow::Result<()> {
    let addr = free_addr()?;
    let server = server_for(addr, |_| {}).await?;
    let base = server.http_base();
    let http = reqwest::Client::new();
    let docs = ["d0", "d1", "d2", "d3"];
    for doc in docs {
        create(&base, doc, "").await?;
    }
    for i in 0..200 {
        http.post(format!("{base}/api/docs/{}/append", docs[i % docs.len()]))
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await?
            .error_for_status()?;
    }
    let listed: Value = reqwest::get(format!("{base}/api/webhooks"))
        .await?
        .json()
        .await?;
    assert_eq!(listed["endpoints"][0]["state"], "retrying", "{listed}");
    let receiver = Receiver::default();
    receiver.serve(addr).await?;
    wait_until("every document's final state", WAIT, || {
        let lengths = final_lengths(&receiver.got());
        docs.iter().all(|d| lengths.get(*d) == Some(&50))
    })
    .await?;
    for g in receiver.got() {
        assert!(verifies(&key(), &g.id, &g.timestamp, &g.body, &g.signature));
    }
    Ok(())
}

/// Events recorded but not delivered when the server is SIGKILLed, and an edit acknowledged
/// just before (its event still owed), reach the receiver after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_events_are_delivered_after_a_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let url = format!("http://{addr}/hook");
    let args = [
        "--webhook-url",
        url.as_str(),
        "--webhook-secret",
        SECRET,
        "--webhook-retry-base-ms",
        "20",
        "--feed-debounce-ms",
        "10",
    ];
    let mut weft = WeftProcess::spawn(dir.path(), &args).await?;
    let base = weft.http_base();
    create(&base, "k1", "first").await?;
    create(&base, "k2", "second").await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page: Value = reqwest::get(format!("{base}/api/changes"))
            .await?
            .json()
            .await?;
        if page["events"].as_array().map_or(0, Vec::len) >= 4 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("events not recorded: {page}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An edit acknowledged, then the process killed before its debounce window closes.
    let slow: Vec<&str> = args[..6]
        .iter()
        .copied()
        .chain(["--feed-debounce-ms", "60000"])
        .collect();
    weft.kill()?;
    let mut weft = WeftProcess::spawn(dir.path(), &slow).await?;
    let base = weft.http_base();
    reqwest::Client::new()
        .post(format!("{base}/api/docs/k2/append"))
        .header("content-type", "text/plain")
        .body(" edit")
        .send()
        .await?
        .error_for_status()?;
    weft.kill()?;
    let receiver = Receiver::default();
    receiver.serve(addr).await?;
    let _weft = WeftProcess::spawn(dir.path(), &args).await?;
    wait_until("both documents delivered", WAIT, || {
        let lengths = final_lengths(&receiver.got());
        lengths.get("k1") == Some(&5) && lengths.get("k2") == Some(&11)
    })
    .await?;
    let kinds: Vec<String> = receiver
        .got()
        .iter()
        .filter(|g| g.json["doc"] == "k1")
        .map(|g| g.json["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds[..2], ["document.created", "document.updated"]);
    Ok(())
}

/// An event no attempt delivers within `--webhook-retry-hours` is given up on, listed as
/// failed, and the endpoint shown failing; a redelivery sends it again with its original id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_never_accepted_is_given_up_listed_and_redelivered() -> anyhow::Result<()> {
    let receiver = Receiver::default();
    receiver.fail.store(usize::MAX, Ordering::SeqCst);
    let addr = receiver
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let server = server_for(addr, |c| {
        c.webhook_retry_hours = 0.0001;
        c.webhook_events = vec!["document.created".into()];
    })
    .await?;
    let base = server.http_base();
    create(&base, "lost", "").await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let listed: Value = reqwest::get(format!("{base}/api/webhooks"))
            .await?
            .json()
            .await?;
        if listed["endpoints"][0]["state"] == "failing" {
            break listed;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("never gave up: {listed}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let endpoint = &listed["endpoints"][0];
    assert_eq!(endpoint["failed"][0]["seq"], 1, "{listed}");
    assert_eq!(endpoint["pending"], 0);
    let tries = receiver.got().len();
    assert!(tries >= 2, "retried only {tries} times");
    receiver.fail.store(0, Ordering::SeqCst);
    let replay: Value = reqwest::Client::new()
        .post(format!("{base}/api/webhooks/redeliver?since=0"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(replay["endpoints"], 1);
    wait_until("the redelivery", WAIT, || receiver.got().len() > tries).await?;
    let got = receiver.got();
    assert_eq!(got.last().map(|g| &g.id), got.first().map(|g| &g.id));
    Ok(())
}

/// With auth on, the webhook endpoints need an admin token for every document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_endpoints_are_admin_only() -> anyhow::Result<()> {
    let secret: AuthSecret = "hook-secret-0123456789".parse()?;
    let s = secret.clone();
    let addr = free_addr()?;
    let server = server_for(addr, move |c| c.auth_secret = Some(s)).await?;
    let token = |role| {
        mint(
            &secret,
            &Claims {
                scope: Scope::AllDocs,
                role,
                exp: unix_now() + 600,
                sub: None,
            },
        )
    };
    let base = server.http_base();
    let http = reqwest::Client::new();
    let list = format!("{base}/api/webhooks");
    let replay = format!("{base}/api/webhooks/redeliver?since=0");
    assert_eq!(
        http.get(&list).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    let writer = token(Access::Write);
    assert_eq!(
        http.get(&list).bearer_auth(&writer).send().await?.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        http.post(&replay)
            .bearer_auth(&writer)
            .send()
            .await?
            .status(),
        StatusCode::FORBIDDEN
    );
    let admin = token(Access::Admin);
    let listed: Value = http
        .get(&list)
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(listed["endpoints"][0]["url"], format!("http://{addr}/hook"));
    http.post(&replay)
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// An `https://` receiver gets signed events once its certificate is trusted
/// (`--webhook-ca-file`); while it is not, nothing is sent and the endpoint's last error says
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_are_verified() -> anyhow::Result<()> {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    let cert = made.cert.pem();
    let receiver = Receiver::default();
    let addr = receiver
        .serve_tls(&cert, &made.key_pair.serialize_pem())
        .await?;
    let url = format!("https://localhost:{}/hook", addr.port());

    let untrusted = {
        let url = url.clone();
        server_for(addr, move |c| c.webhook_urls = vec![url]).await?
    };
    create(&untrusted.http_base(), "untrusted", "hello").await?;
    let base = untrusted.http_base();
    let deadline = tokio::time::Instant::now() + WAIT;
    let error = loop {
        let listed: Value = reqwest::get(format!("{base}/api/webhooks"))
            .await?
            .json()
            .await?;
        let error = listed["endpoints"][0]["last_error"].as_str();
        if let Some(e) = error.filter(|e| !e.is_empty()) {
            break e.to_owned();
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no delivery error for an untrusted https receiver: {listed}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(error.contains("certificate"), "{error}");
    assert!(receiver.got().is_empty(), "{:#?}", receiver.got());
    drop(untrusted);

    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("receiver.pem");
    std::fs::write(&ca, &cert)?;
    let trusted = server_for(addr, move |c| {
        c.webhook_urls = vec![url];
        c.webhook_ca_file = Some(ca);
    })
    .await?;
    create(&trusted.http_base(), "trusted", "hello").await?;
    wait_until("the event over https", WAIT, || {
        receiver
            .got()
            .iter()
            .any(|g| g.json["doc"] == "trusted" && g.json["type"] == "document.created")
    })
    .await?;
    for g in receiver.got() {
        assert!(
            verifies(&key(), &g.id, &g.timestamp, &g.body, &g.signature),
            "{g:#?}"
        );
    }
    Ok(())
}
