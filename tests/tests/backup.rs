//! Online backup and restore with the real `weft` binary: `weft backup` against a server under
//! load keeps every edit acknowledged before it began, `weft restore` brings it back into a new
//! data directory; the backup endpoint needs an admin token; restore refuses to replace
//! documents without `--overwrite` and refuses a data directory a server is running on; a
//! stream cut short is detected.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{run_weft, wait_until, weft_binary, Client, TestServer, WAIT};

/// The secret of the authenticated test server.
const SECRET: &str = "backup-secret-0123456789abcdef";

/// Writers editing at once during the load test.
const WRITERS: usize = 3;
/// Most edits one writer makes (it stops earlier once the backup is done).
const MAX_EDITS: usize = 400;
/// Edits a writer makes in one document before it opens a new one.
const EDITS_PER_DOC: usize = 8;
/// Acknowledged edits to wait for before the backup starts, so it runs under load.
const EDITS_BEFORE_BACKUP: usize = 40;

/// Runs `weft` with `args`; returns whether it succeeded and what it printed.
async fn weft(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let (status, out) = run_weft(&args).await?;
    Ok((status.success(), out))
}

/// `weft backup --to <to> --url <url> <extra>`.
async fn backup(to: &Path, url: &str, extra: &[&str]) -> anyhow::Result<(bool, String)> {
    let mut args = vec!["backup", "--to", path(to)?, "--url", url];
    args.extend_from_slice(extra);
    weft(&args).await
}

/// `weft restore --from <from> --data <data> <extra>`.
async fn restore(from: &Path, data: &Path, extra: &[&str]) -> anyhow::Result<(bool, String)> {
    let mut args = vec!["restore", "--from", path(from)?, "--data", path(data)?];
    args.extend_from_slice(extra);
    weft(&args).await
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("temporary path is not UTF-8: {}", p.display()))
}

/// The text of `id` through the API.
async fn text_of(base: &str, id: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("{base}/api/docs/{id}/text"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The metadata of `id` through the API.
async fn meta_of(base: &str, id: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{base}/api/docs/{id}"))
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Creates a document through the API (`body` is the `POST /api/docs` JSON).
async fn create(base: &str, token: Option<&str>, body: Value) -> anyhow::Result<()> {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/docs"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await?.error_for_status()?;
    Ok(())
}

/// Edits acknowledged by the server, as (document, unique token), in the order acknowledged.
type Acked = Arc<Mutex<Vec<(String, String)>>>;

fn acked_now(acked: &Acked) -> Vec<(String, String)> {
    acked.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// One writer: appends unique tokens to a series of documents, recording each once the server
/// acknowledged it, until `stop` or [`MAX_EDITS`].
async fn write_load(
    server: String,
    writer: usize,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut client: Option<(String, Client)> = None;
    for n in 0..MAX_EDITS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let doc = format!("load-w{writer}-d{}", n / EDITS_PER_DOC);
        if client.as_ref().is_none_or(|(d, _)| *d != doc) {
            let c = Client::connect_synced(&format!("{server}/{doc}")).await?;
            client = Some((doc.clone(), c));
        }
        let Some((_, c)) = &client else { continue };
        let token = format!("<w{writer}e{n}>");
        c.push(&token)?;
        c.wait_acked().await?;
        acked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((doc, token));
    }
    Ok(())
}

/// Starts the writers against `server`, waits until they have edits acknowledged, runs `weft
/// backup` into `to` while they go on, then stops them. Returns the edits acknowledged before
/// the backup began.
async fn backup_under_load(
    server: &TestServer,
    to: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write_load(server.ws_base(), w, acked.clone(), stop.clone())))
        .collect();
    wait_until("the writers to have edits acknowledged", WAIT, || {
        acked.lock().map_or(0, |a| a.len()) >= EDITS_BEFORE_BACKUP
    })
    .await?;
    // Everything acknowledged up to here must be in the backup; writers keep going meanwhile.
    let before = acked_now(&acked);
    let (ok, out) = backup(to, &server.http_base(), &[]).await?;
    let during = acked_now(&acked).len() - before.len();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await??;
    }
    assert!(ok, "weft backup failed: {out}");
    assert!(out.contains("backed up"), "{out}");
    assert!(to.join("weft-backup.json").is_file());
    // For whoever reads a failure: how much load the backup ran under.
    println!(
        "{} edits acknowledged before the backup, {during} while it ran",
        before.len()
    );
    Ok(before)
}

/// A backup taken while writers keep editing, restored into a fresh data directory, holds every
/// document and every edit acknowledged before the backup began, and the documents' titles and
/// creation times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_everything_acknowledged_before_it() -> anyhow::Result<()> {
    // Built (or found fresh) now, so the backup starts as soon as the test asks for it.
    tokio::task::spawn_blocking(weft_binary).await??;
    let server = TestServer::start().await?;
    let base = server.http_base();
    create(
        &base,
        None,
        json!({ "id": "plain", "text": "first line\nsecond" }),
    )
    .await?;
    let titled = json!({ "id": "titled", "text": "body", "title": "Chosen title" });
    create(&base, None, titled).await?;
    let titled_before = meta_of(&base, "titled").await?;
    let dir = tempfile::tempdir()?;
    let backup_dir = dir.path().join("backup");
    let before = backup_under_load(&server, &backup_dir).await?;
    drop(server);

    let restored_dir = dir.path().join("restored");
    let (ok, out) = restore(&backup_dir, &restored_dir, &[]).await?;
    assert!(ok, "weft restore failed: {out}");
    assert!(out.contains("restored"), "{out}");

    let restored = TestServer::start_in(&restored_dir, |_| {}).await?;
    let base = restored.http_base();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (doc, token) in before {
        expected.entry(doc).or_default().push(token);
    }
    let docs: Value = reqwest::get(format!("{base}/api/docs?limit=1000"))
        .await?
        .json()
        .await?;
    let ids: BTreeSet<&str> = docs["docs"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["id"].as_str()).collect())
        .unwrap_or_default();
    for (doc, tokens) in &expected {
        assert!(ids.contains(doc.as_str()), "{doc} is not listed: {docs}");
        let text = text_of(&base, doc).await?;
        for token in tokens {
            assert!(
                text.contains(token.as_str()),
                "{doc}: {token} was acknowledged before the backup but is not in {text:?}"
            );
        }
    }
    assert_eq!(text_of(&base, "plain").await?, "first line\nsecond");
    let titled = meta_of(&base, "titled").await?;
    assert_eq!(titled["title"], "Chosen title", "{titled}");
    assert_eq!(
        titled["created_ms"], titled_before["created_ms"],
        "{titled}"
    );
    Ok(())
}

fn secret() -> anyhow::Result<AuthSecret> {
    Ok(SECRET.parse()?)
}

fn token(scope: Scope, role: Access) -> anyhow::Result<String> {
    let claims = Claims {
        scope,
        role,
        exp: unix_now() + 3600,
        sub: None,
    };
    Ok(mint(&secret()?, &claims))
}

/// `GET /api/backup` status and error code with `token`.
async fn backup_status(base: &str, token: Option<&str>) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = reqwest::Client::new().get(format!("{base}/api/backup"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = if status.is_success() {
        Value::Null
    } else {
        response.json().await?
    };
    Ok((status, body))
}

/// A server with an auth secret and one document, and an admin token for every document.
async fn secured() -> anyhow::Result<(TestServer, String)> {
    let s = secret()?;
    let server = TestServer::start_with(move |c| c.auth_secret = Some(s)).await?;
    let admin = token(Scope::AllDocs, Access::Admin)?;
    let doc = json!({ "id": "secret-doc", "text": "classified" });
    create(&server.http_base(), Some(&admin), doc).await?;
    Ok((server, admin))
}

/// With an auth secret, `GET /api/backup` needs an admin token for every document: 401 without
/// a token, 403 for a writer or an admin of one document. It is in the OpenAPI description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_endpoint_needs_an_admin_token() -> anyhow::Result<()> {
    let (server, admin) = secured().await?;
    let base = server.http_base();
    let writer = token(Scope::AllDocs, Access::Write)?;
    let one_doc_admin = token(Scope::Doc("secret-doc".into()), Access::Admin)?;
    for (token, status, code) in [
        (None, StatusCode::UNAUTHORIZED, "token_missing"),
        (
            Some(&writer),
            StatusCode::FORBIDDEN,
            "token_insufficient_role",
        ),
        (
            Some(&one_doc_admin),
            StatusCode::FORBIDDEN,
            "token_wrong_document",
        ),
    ] {
        let (got, body) = backup_status(&base, token.map(String::as_str)).await?;
        assert_eq!((got, &body["code"]), (status, &json!(code)), "{body}");
    }
    let (got, _) = backup_status(&base, Some(&admin)).await?;
    assert_eq!(got, StatusCode::OK);
    let spec: Value = reqwest::get(format!("{base}/api/openapi.json"))
        .await?
        .json()
        .await?;
    assert!(spec["paths"]["/api/backup"]["get"].is_object(), "{spec}");
    Ok(())
}

/// `weft backup` without an admin token exits non-zero with the server's reason and leaves no
/// directory behind; with an admin token, or with the secret itself, it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_command_says_why_it_was_refused() -> anyhow::Result<()> {
    let (server, admin) = secured().await?;
    let base = server.http_base();
    let writer = token(Scope::AllDocs, Access::Write)?;
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("refused");
    let (ok, out) = backup(&target, &base, &[]).await?;
    assert!(!ok, "a backup without a token succeeded: {out}");
    assert!(
        out.contains("HTTP 401") && out.contains("token_missing") && out.contains("--token"),
        "{out}"
    );
    assert!(
        !target.exists(),
        "the failed backup left {}",
        target.display()
    );
    let (ok, out) = backup(&target, &base, &["--token", &writer]).await?;
    assert!(!ok, "a backup with a write token succeeded: {out}");
    assert!(
        out.contains("HTTP 403") && out.contains("admin role"),
        "{out}"
    );

    let (ok, out) = backup(&target, &base, &["--token", &admin]).await?;
    assert!(ok, "{out}");
    assert!(out.contains("backed up 1 documents"), "{out}");
    let minted = dir.path().join("minted");
    let (ok, out) = backup(&minted, &base, &["--auth-secret", SECRET]).await?;
    assert!(ok, "a token minted from the secret was refused: {out}");
    Ok(())
}

/// Restore refuses a data directory a server is running on, and, without `--overwrite`,
/// documents that exist there (writing nothing); with it, it replaces them and keeps the
/// others. A directory that is not a finished backup is refused, and so is backing up into a
/// directory that already holds documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_existing_documents_and_a_running_server() -> anyhow::Result<()> {
    let source = TestServer::start().await?;
    let shared = json!({ "id": "shared", "text": "from the backup" });
    create(&source.http_base(), None, shared).await?;
    let dir = tempfile::tempdir()?;
    let backup_dir = dir.path().join("backup");
    let (ok, out) = backup(&backup_dir, &source.http_base(), &[]).await?;
    assert!(ok, "{out}");
    let (ok, out) = backup(&backup_dir, &source.http_base(), &[]).await?;
    assert!(!ok && out.contains("already holds 1 documents"), "{out}");
    drop(source);

    let target = TestServer::start().await?;
    let base = target.http_base();
    create(
        &base,
        None,
        json!({ "id": "shared", "text": "local edits" }),
    )
    .await?;
    create(&base, None, json!({ "id": "local-only", "text": "stays" })).await?;
    let (ok, out) = restore(&backup_dir, &target.data, &[]).await?;
    assert!(
        !ok,
        "restore into a running server's data directory succeeded: {out}"
    );
    assert!(out.contains("in use: stop the server first"), "{out}");
    let (data, _guard) = target.stop().await?;

    let (ok, out) = restore(&backup_dir, &data, &[]).await?;
    assert!(
        !ok,
        "restore replaced a document without --overwrite: {out}"
    );
    assert!(
        out.contains("\"shared\"") && out.contains("--overwrite") && out.contains("nothing"),
        "{out}"
    );
    let check = TestServer::start_in(&data, |_| {}).await?;
    assert_eq!(text_of(&check.http_base(), "shared").await?, "local edits");
    check.stop().await?;

    let (ok, out) = restore(&backup_dir, &data, &["--overwrite"]).await?;
    assert!(ok, "{out}");
    assert!(out.contains("restored 1 documents (1 replaced)"), "{out}");
    let after = TestServer::start_in(&data, |_| {}).await?;
    let base = after.http_base();
    assert_eq!(text_of(&base, "shared").await?, "from the backup");
    assert_eq!(text_of(&base, "local-only").await?, "stays");
    drop(after);

    let not_a_backup = tempfile::tempdir()?;
    let (ok, out) = restore(not_a_backup.path(), &data, &[]).await?;
    assert!(!ok && out.contains("not a complete weft backup"), "{out}");
    Ok(())
}

/// A stream that ends before its trailer (a server that stopped mid-backup) fails the command
/// with a clear message, and leaves no half-written backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_stream_fails_the_backup() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // The start of a real stream: magic, version, a header announcing three documents; then
    // the connection closes (no length, so the end of the body is the end of the connection).
    let header = br#"{"started_ms":1,"documents":3}"#;
    let mut body = b"weft-backup\n\x01H".to_vec();
    body.extend_from_slice(&(header.len() as u64).to_be_bytes());
    body.extend_from_slice(header);
    let serve = tokio::spawn(serve_once(listener, body));
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("cut");
    let (ok, out) = backup(&target, &url, &[]).await?;
    serve.await??;
    assert!(!ok, "a truncated backup succeeded: {out}");
    assert!(out.contains("ended early, after 0 of 3 documents"), "{out}");
    assert!(
        !target.exists(),
        "the failed backup left {}",
        target.display()
    );
    Ok(())
}

/// Answers one HTTP request on `listener` with `body`, delimited by closing the connection.
async fn serve_once(listener: tokio::net::TcpListener, body: Vec<u8>) -> anyhow::Result<()> {
    let (mut socket, _) = listener.accept().await?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.weft.backup\r\n\
              connection: close\r\n\r\n",
        )
        .await?;
    socket.write_all(&body).await?;
    socket.shutdown().await?;
    Ok(())
}
