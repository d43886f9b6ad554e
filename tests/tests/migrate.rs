//! `weft migrate` with the real binary, real data directories and a real NATS JetStream
//! server: documents written by a single server (a pinned title, an automatic one, one in the
//! trash, one of about 1 MB, a token revocation) move into NATS, are served there by a cluster
//! node, and move back into a new data directory served by a single server again. A document
//! the destination has is refused without `--overwrite` and replaced with it; a data directory
//! a server is running on is refused. Skipped, visibly, without nats-server.

use std::ffi::OsStr;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_server::token::{mint, mint_at, unix_now, Access, AuthSecret, Claims, Scope};
use weft_server::Config;
use weft_tests::nats::{require_nats, NatsAuth, NatsServer};
use weft_tests::{run_weft, TestServer};

/// The test group named when nats-server is missing.
const GROUP: &str = "migrate";

/// The secret every server of these tests signs tokens with.
const SECRET: &str = "migrate-secret-0123456789abcdef";

/// The documents written by the first server, and what they must hold wherever they move.
struct Fixture {
    big: String,
    /// `notes`'s metadata as the first server had it.
    notes: Value,
    /// When `notes`'s tokens were revoked (Unix seconds).
    revoked: u64,
}

fn secret() -> anyhow::Result<AuthSecret> {
    Ok(SECRET.parse()?)
}

/// A token for every document with `role`, issued now.
fn token(role: Access) -> anyhow::Result<String> {
    let claims = Claims {
        scope: Scope::AllDocs,
        role,
        exp: unix_now() + 3600,
        sub: None,
    };
    Ok(mint(&secret()?, &claims))
}

/// Runs `weft migrate --from <from> --to <to> <extra>`: whether it succeeded, and its output.
async fn migrate(from: &str, to: &str, extra: &[&str]) -> anyhow::Result<(bool, String)> {
    let mut args = vec!["migrate", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let (status, out) = run_weft(&args).await?;
    Ok((status.success(), out))
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("temporary path is not UTF-8: {}", p.display()))
}

/// The line of `weft migrate`'s output about document `id` (empty if there is none).
fn line_of<'a>(out: &'a str, id: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with("  ") && l.split_whitespace().next() == Some(id))
        .unwrap_or_default()
}

/// `method path` on `base` with an admin token; the status and the body (JSON or text).
async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, String)> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token(Access::Admin)?);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    Ok((response.status(), response.text().await?))
}

/// `GET path` as JSON, which must succeed.
async fn get_json(base: &str, path: &str) -> anyhow::Result<Value> {
    let (status, body) = call(base, reqwest::Method::GET, path, None).await?;
    anyhow::ensure!(status.is_success(), "GET {path}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Writes the fixture through the API of a single server on `data`, then stops it.
async fn write_fixture(data: &Path) -> anyhow::Result<Fixture> {
    let s = secret()?;
    let server = TestServer::start_in(data, move |c| c.auth_secret = Some(s)).await?;
    let base = server.http_base();
    let big: String = (0..40_000)
        .map(|i| format!("line {i:06} of the big one\n"))
        .collect();
    assert!(big.len() >= 1_000_000, "{}", big.len());
    let docs = [
        json!({"id": "notes", "text": "Meeting notes\nagenda", "title": "Pinned notes"}),
        json!({"id": "auto", "text": "Automatic title\nbody"}),
        json!({"id": "trashed", "text": "gone for now"}),
        json!({"id": "big", "text": big}),
    ];
    for doc in docs {
        let (status, body) = call(&base, reqwest::Method::POST, "/api/docs", Some(doc)).await?;
        anyhow::ensure!(status == StatusCode::CREATED, "{status} {body}");
    }
    let (status, body) = call(&base, reqwest::Method::DELETE, "/api/docs/trashed", None).await?;
    anyhow::ensure!(status.is_success(), "{status} {body}");
    let revoke = call(&base, reqwest::Method::POST, "/api/docs/notes/revoke", None).await?;
    anyhow::ensure!(revoke.0.is_success(), "{revoke:?}");
    let revoked: Value = serde_json::from_str(&revoke.1)?;
    let revoked = revoked["revoked_before"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no revoked_before in {revoke:?}"))?;
    let notes = get_json(&base, "/api/docs/notes").await?;
    server.stop().await?;
    Ok(Fixture {
        big,
        notes,
        revoked,
    })
}

/// Checks through `base`'s API that the fixture's documents, titles, trash and revocation
/// are all there.
/// The ids and texts of `doc`'s versions through the History API.
async fn versions_of(base: &str, doc: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let (status, body) = call(
        base,
        reqwest::Method::GET,
        &format!("/api/docs/{doc}/versions"),
        None,
    )
    .await?;
    anyhow::ensure!(status.is_success(), "versions of {doc}: {status} {body}");
    let listed: serde_json::Value = serde_json::from_str(&body)?;
    let mut out = Vec::new();
    for v in listed["versions"].as_array().into_iter().flatten() {
        let id = v["id"].as_u64().unwrap_or_default();
        let (status, text) = call(
            base,
            reqwest::Method::GET,
            &format!("/api/docs/{doc}/versions/{id}/text"),
            None,
        )
        .await?;
        anyhow::ensure!(
            status.is_success(),
            "version {id} of {doc}: {status} {text}"
        );
        out.push((id, text));
    }
    out.sort();
    Ok(out)
}

async fn check_fixture(base: &str, fixture: &Fixture) -> anyhow::Result<()> {
    let text = |id: &'static str| async move {
        let (status, body) = call(
            base,
            reqwest::Method::GET,
            &format!("/api/docs/{id}/text"),
            None,
        )
        .await?;
        anyhow::ensure!(status.is_success(), "text of {id}: {status} {body}");
        anyhow::Ok(body)
    };
    assert_eq!(text("notes").await?, "Meeting notes\nagenda");
    assert_eq!(text("auto").await?, "Automatic title\nbody");
    assert!(
        text("big").await? == fixture.big,
        "the big document's text differs"
    );

    let notes = get_json(base, "/api/docs/notes").await?;
    assert_eq!(notes["title"], "Pinned notes", "{notes}");
    assert_eq!(notes["title_pinned"], true, "{notes}");
    for time in ["created_ms", "updated_ms"] {
        assert_eq!(notes[time], fixture.notes[time], "{notes}");
    }
    let auto = get_json(base, "/api/docs/auto").await?;
    assert_eq!(auto["title"], "Automatic title", "{auto}");
    assert_eq!(auto["title_pinned"], false, "{auto}");

    let (status, _) = call(base, reqwest::Method::GET, "/api/docs/trashed", None).await?;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a trashed document answers 404"
    );
    let trash = get_json(base, "/api/trash").await?;
    let ids: Vec<&str> = trash["docs"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["trashed"], "{trash}");
    let listed = get_json(base, "/api/docs").await?;
    assert_eq!(listed["total"], 3, "{listed}");

    // A token issued before the revocation is refused for `notes`, a later one is not.
    let claims = Claims {
        scope: Scope::Doc("notes".into()),
        role: Access::Read,
        exp: unix_now() + 3600,
        sub: None,
    };
    let old = mint_at(&secret()?, &claims, fixture.revoked - 10);
    let fresh = mint_at(&secret()?, &claims, fixture.revoked + 1);
    let url = format!("{base}/api/docs/notes/text");
    let client = reqwest::Client::new();
    let refused = client.get(&url).bearer_auth(&old).send().await?;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.text().await?.contains("token_revoked"));
    let allowed = client.get(&url).bearer_auth(&fresh).send().await?;
    assert_eq!(allowed.status(), StatusCode::OK);
    Ok(())
}

/// A cluster node on `nats`, with the tests' secret.
async fn cluster_node(nats: &NatsServer) -> anyhow::Result<TestServer> {
    let (url, s) = (nats.url(), secret()?);
    TestServer::start_with(move |c: &mut Config| {
        c.nats.urls = vec![url];
        c.auth_secret = Some(s);
    })
    .await
}

#[tokio::test]
async fn documents_move_into_a_cluster_and_back() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let dirs = tempfile::tempdir()?;
    let (single, back) = (dirs.path().join("single"), dirs.path().join("back"));
    let fixture = write_fixture(&single).await?;
    let nats = NatsServer::start().await?;

    let (ok, out) = migrate(path(&single)?, &nats.url(), &[]).await?;
    // For whoever reads a failure: what the command printed.
    println!("{out}");
    assert!(ok, "into NATS: {out}");
    assert!(
        out.contains("moved 4 documents (1.") && out.contains("MB), 1 in the trash"),
        "{out}"
    );
    assert!(out.contains("1 token revocation; 0 skipped"), "{out}");
    assert!(line_of(&out, "trashed").ends_with(", in trash"), "{out}");
    assert!(line_of(&out, "big").ends_with(" 1.1 MB"), "{out}");
    assert!(
        out.contains("and their history: 3 versions of 3 documents"),
        "{out}"
    );

    let node = cluster_node(&nats).await?;
    check_fixture(&node.http_base(), &fixture).await?;
    let in_cluster = versions_of(&node.http_base(), "notes").await?;
    assert!(!in_cluster.is_empty(), "the history moved into the cluster");
    node.stop().await?;

    let (ok, out) = migrate(&nats.url(), path(&back)?, &[]).await?;
    println!("{out}");
    assert!(ok, "out of NATS: {out}");
    assert!(out.contains("moved 4 documents"), "{out}");
    assert!(out.contains("1 token revocation; 0 skipped"), "{out}");
    assert!(out.contains("and their history: "), "{out}");

    let s = secret()?;
    let single_again = TestServer::start_in(&back, move |c| c.auth_secret = Some(s)).await?;
    check_fixture(&single_again.http_base(), &fixture).await?;
    let back_again = versions_of(&single_again.http_base(), "notes").await?;
    assert!(
        back_again.starts_with(&in_cluster),
        "every version came back, with its id and text: {back_again:?} vs {in_cluster:?}"
    );
    single_again.stop().await?;
    Ok(())
}

#[tokio::test]
async fn existing_documents_are_replaced_only_with_overwrite() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let auth = NatsAuth::UserPassword {
        user: "weft".into(),
        password: "migrate-pw".into(),
    };
    let nats = NatsServer::start_with_auth(auth).await?;
    let creds = ["--nats-user", "weft", "--nats-password", "migrate-pw"];
    let dirs = tempfile::tempdir()?;
    let data = dirs.path().join("single");
    // Creates `shared` with `text`, or replaces its text.
    let write = |text: &'static str, create: bool| {
        let data = data.clone();
        async move {
            let s = secret()?;
            let server = TestServer::start_in(&data, move |c| c.auth_secret = Some(s)).await?;
            let base = server.http_base();
            let client = reqwest::Client::new();
            let request = if create {
                let doc = json!({"id": "shared", "text": text});
                client.post(format!("{base}/api/docs")).json(&doc)
            } else {
                client
                    .put(format!("{base}/api/docs/shared/text"))
                    .body(text)
            };
            let answer = request.bearer_auth(token(Access::Admin)?).send().await?;
            anyhow::ensure!(answer.status().is_success(), "{answer:?}");
            server.stop().await?;
            anyhow::Ok(())
        }
    };
    write("first version", true).await?;
    let (ok, out) = migrate(path(&data)?, &nats.url(), &creds).await?;
    assert!(ok, "{out}");

    write("second version", false).await?;
    let (ok, out) = migrate(path(&data)?, &nats.url(), &creds).await?;
    assert!(!ok, "a document NATS has must be refused: {out}");
    assert!(out.contains("skipped \"shared\""), "{out}");
    assert!(
        out.contains("0 documents") && out.contains("1 skipped"),
        "{out}"
    );
    assert!(out.contains("--overwrite"), "{out}");

    let (ok, out) = migrate(
        path(&data)?,
        &nats.url(),
        &[&creds[..], &["--overwrite"]].concat(),
    )
    .await?;
    assert!(ok, "{out}");
    assert!(line_of(&out, "shared").ends_with(", replaced"), "{out}");

    let (url, s) = (nats.url(), secret()?);
    let node = TestServer::start_with(move |c: &mut Config| {
        c.nats.urls = vec![url];
        c.nats.user = Some("weft".into());
        c.nats.password = Some("migrate-pw".into());
        c.auth_secret = Some(s);
    })
    .await?;
    let (status, text) = call(
        &node.http_base(),
        reqwest::Method::GET,
        "/api/docs/shared/text",
        None,
    )
    .await?;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "second version"));
    node.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_data_directory_in_use_is_refused() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let (ok, out) = migrate(path(&server.data)?, "nats://127.0.0.1:1", &[]).await?;
    assert!(!ok, "{out}");
    assert!(out.contains("the source: data directory"), "{out}");
    assert!(out.contains("is locked"), "{out}");
    server.stop().await?;
    Ok(())
}
