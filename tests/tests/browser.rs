//! The browser editor in real headless Chromium against the real server: two separate browser
//! sessions (separate profiles, so only the server can connect them) typing into one document,
//! reloads, a server restart, closing a tab, and the document list. Plus the pages and assets
//! over plain HTTP, which needs no browser.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages); without them the browser tests are
//! skipped with a printed reason, and fail when `CI` is set. On failure each session's screenshot
//! is written to `target/browser-screenshots/<test>/<session>.png` and the path printed.

#[allow(dead_code)] // Shared with the other browser test files; this one uses only part of it.
#[path = "browser/harness.rs"]
mod harness;

use harness::{doc_id, introduce, Browsers, Session};
use serde_json::json;
use weft_tests::TestServer;

/// How soon a closed tab's caret and presence entry must be gone from the others' screens. The
/// server removes a connection's awareness when its socket closes, so this is mostly Chromium's
/// shutdown time.
const LEAVE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the editor on `doc` and waits until it is connected and synced.
async fn open_doc(s: &Session, server: &TestServer, doc: &str) -> anyhow::Result<()> {
    s.goto(&format!("{}/d/{doc}", server.http_base())).await?;
    s.wait_connected().await
}

/// Waits until `s` shows a remote caret labelled `name`.
async fn wait_caret(s: &Session, name: &str) -> anyhow::Result<()> {
    s.wait_js(
        &format!("a remote caret labelled {name}"),
        "return Array.from(document.querySelectorAll('.cm-ySelectionCaret .cm-ySelectionInfo'))
                    .some((e) => e.textContent === arguments[0]);",
        vec![json!(name)],
    )
    .await
    .map(drop)
}

/// Waits until `s` lists `name` in its presence list.
async fn wait_present(s: &Session, name: &str) -> anyhow::Result<()> {
    s.wait_js(
        &format!("{name} in the presence list"),
        "return !!document.querySelector(`#presence [data-user-name=\"${CSS.escape(arguments[0])}\"]`);",
        vec![json!(name)],
    )
    .await
    .map(drop)
}

/// Two sessions type into one document: each sees the other's text, named caret and presence
/// entry, the typing hint names the typist, and the saved indicator turns on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_see_each_others_text_and_named_carets() -> anyhow::Result<()> {
    let Some(browsers) =
        Browsers::start("two_sessions_see_each_others_text_and_named_carets").await?
    else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        let doc = doc_id("pair");
        introduce(&ana, &server, "Ana", "#db2777").await?;
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        open_doc(&ana, &server, &doc).await?;
        open_doc(&ben, &server, &doc).await?;

        ana.type_in_editor("Hello from Ana.").await?;
        ben.wait_js(
            "the typing hint naming Ana",
            "return document.getElementById('typing').textContent === 'Ana is typing…';",
            vec![],
        )
        .await?;
        ben.wait_text("Ana's text", |t| t == "Hello from Ana.")
            .await?;

        ben.type_in_editor(" Ben here.").await?;
        let expected = "Hello from Ana. Ben here.";
        ana.wait_text("Ben's text after Ana's", |t| t == expected)
            .await?;
        ben.wait_text("both texts", |t| t == expected).await?;

        wait_caret(&ana, "Ben").await?;
        wait_caret(&ben, "Ana").await?;
        assert_eq!(
            ana.caret_labels().await?,
            ["Ben"],
            "Ana sees exactly Ben's caret"
        );
        assert_eq!(
            ben.caret_labels().await?,
            ["Ana"],
            "Ben sees exactly Ana's caret"
        );

        wait_present(&ana, "Ben").await?;
        wait_present(&ben, "Ana").await?;
        // Oneself first, then the others.
        assert_eq!(ana.presence().await?, ["Ana", "Ben"]);
        assert_eq!(ben.presence().await?, ["Ben", "Ana"]);

        ana.wait_saved().await?;
        ben.wait_saved().await?;

        // Ben renames himself in the "you" panel; Ana's caret label and list follow.
        ben.click("#me").await?;
        ben.replace_input("#me-name", "Benjamin\n").await?;
        wait_caret(&ana, "Benjamin").await?;
        wait_present(&ana, "Benjamin").await?;
        assert_eq!(ana.caret_labels().await?, ["Benjamin"]);
        let stored = ben
            .js(
                "return JSON.parse(localStorage.getItem('weft.user')).name;",
                vec![],
            )
            .await?;
        assert_eq!(
            stored,
            json!("Benjamin"),
            "the new name is kept in localStorage"
        );
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// A reload shows the whole document; a server restart on the same data directory and port is
/// survived by both open sessions: they reconnect, an edit made while the server was down
/// arrives, and edits after the restart reach the other side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_server_restart_are_survived() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("reload_and_server_restart_are_survived").await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    // Declared before `server`, so the data directory outlives the restarted server.
    let mut dir_guard: Option<tempfile::TempDir> = None;
    let mut server = Some(server);
    let result = async {
        let doc = doc_id("restart");
        let srv = server.as_ref().expect("server running");
        introduce(&ana, srv, "Ana", "#db2777").await?;
        introduce(&ben, srv, "Ben", "#2563eb").await?;
        open_doc(&ana, srv, &doc).await?;
        open_doc(&ben, srv, &doc).await?;

        ana.type_in_editor("First line by Ana.\nSecond line by Ana.")
            .await?;
        let before = "First line by Ana.\nSecond line by Ana.";
        ben.wait_text("Ana's two lines", |t| t == before).await?;
        ana.wait_saved().await?;

        ben.reload().await?;
        ben.wait_connected().await?;
        ben.wait_text("the full text after a reload", |t| t == before)
            .await?;

        // Stop the server; both tabs notice and wait to reconnect.
        let addr = srv.addr;
        let (data, guard) = server.take().expect("server running").stop().await?;
        for s in [&ana, &ben] {
            s.wait_js(
                "the status to leave 'connected'",
                "return document.getElementById('status').dataset.status !== 'connected';",
                vec![],
            )
            .await?;
        }
        // An edit while the server is down stays in the tab and is marked as not sent yet.
        ana.type_in_editor("\nWritten while the server was down.")
            .await?;
        ana.wait_js(
            "the save indicator to show unsent edits",
            "return document.getElementById('saved').dataset.saveState === 'unsaved';",
            vec![],
        )
        .await?;

        dir_guard = guard;
        server = Some(TestServer::start_on(addr, &data, |_| {}).await?);
        ana.wait_connected().await?;
        ben.wait_connected().await?;
        let offline = format!("{before}\nWritten while the server was down.");
        ben.wait_text("the edit made while the server was down", |t| t == offline)
            .await?;
        ana.wait_saved().await?;

        ben.type_in_editor("\nBen, after the restart.").await?;
        ana.type_in_editor(" Ana too.").await?;
        for s in [&ana, &ben] {
            s.wait_text("both edits made after the restart", |t| {
                t.starts_with(&offline)
                    && t.contains("Ben, after the restart.")
                    && t.contains(" Ana too.")
            })
            .await?;
        }
        let (a, b) = (ana.editor_text().await?, ben.editor_text().await?);
        anyhow::ensure!(a == b, "texts differ after the restart: {a:?} vs {b:?}");
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// Closing one session removes its caret and presence entry from the other within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_removes_its_caret_and_presence() -> anyhow::Result<()> {
    let Some(browsers) =
        Browsers::start("closing_a_session_removes_its_caret_and_presence").await?
    else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let mut sessions = Vec::new();
    let result = async {
        let doc = doc_id("leave");
        introduce(&ana, &server, "Ana", "#db2777").await?;
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        open_doc(&ana, &server, &doc).await?;
        open_doc(&ben, &server, &doc).await?;
        ana.type_in_editor("Ana was here.").await?;
        ben.type_in_editor(" So was Ben.").await?;
        wait_caret(&ana, "Ben").await?;
        wait_present(&ana, "Ben").await?;
        ben.wait_saved().await?;
        let problems = ben.console_problems().await?;
        anyhow::ensure!(problems.is_empty(), "ben's page logged: {problems:?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let result = match result {
        Ok(()) => {
            ben.close().await;
            sessions.push(ana);
            let ana = &sessions[0];
            async {
                let closed = std::time::Instant::now();
                ana.wait_js_for(
                    "Ben's caret and presence entry to disappear",
                    LEAVE_DEADLINE,
                    "return document.querySelectorAll('.cm-ySelectionCaret').length === 0
                        && !document.querySelector('#presence [data-user-name=\"Ben\"]')
                        && document.getElementById('presence').dataset.count === '1';",
                    vec![],
                )
                .await?;
                eprintln!(
                    "Ben's caret left Ana's editor {:?} after his browser closed",
                    closed.elapsed()
                );
                ana.wait_text("the text to stay", |t| t == "Ana was here. So was Ben.")
                    .await?;
                anyhow::Ok(())
            }
            .await
        }
        Err(e) => {
            sessions.push(ana);
            sessions.push(ben);
            Err(e)
        }
    };
    browsers.finish(result, sessions).await
}

/// "New document" on the list page opens a fresh document; after it is edited, the list shows
/// it, with the number of people in it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_list_shows_a_document_created_in_the_editor() -> anyhow::Result<()> {
    let Some(browsers) =
        Browsers::start("document_list_shows_a_document_created_in_the_editor").await?
    else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        introduce(&ana, &server, "Ana", "#db2777").await?;
        ana.wait_js(
            "the empty list",
            "return document.getElementById('docs').dataset.state === 'ready';",
            vec![],
        )
        .await?;
        ana.click("#new-doc").await?;
        let url = ana
            .wait_js(
                "the editor of a new document",
                "return /^\\/d\\/[0-9a-f-]{36}$/.test(location.pathname) ? location.href : null;",
                vec![],
            )
            .await?;
        let url = url.as_str().unwrap_or_default().to_owned();
        let id = url.rsplit('/').next().unwrap_or_default().to_owned();
        ana.wait_connected().await?;
        ana.type_in_editor("Shopping list\nmilk, bread").await?;
        ana.wait_saved().await?;

        // Ben stays in the document while Ana looks at the list.
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        open_doc(&ben, &server, &id).await?;
        ben.wait_text("Ana's list", |t| t == "Shopping list\nmilk, bread").await?;

        ana.goto(&format!("{}/", server.http_base())).await?;
        let found = ana
            .wait_js(
                "the new document in the list with one person in it",
                "const li = document.querySelector(`#docs li[data-doc-id=\"${arguments[0]}\"]`);
                 return li && li.dataset.users === '1' ? li.querySelector('a').getAttribute('href') : null;",
                vec![json!(id)],
            )
            .await?;
        anyhow::ensure!(found == json!(format!("/d/{id}")), "link of the listed document: {found}");
        ana.click(&format!("#docs li[data-doc-id=\"{id}\"] a")).await?;
        ana.wait_connected().await?;
        ana.wait_text("the document, opened from the list", |t| t == "Shopping list\nmilk, bread")
            .await?;
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// A connection the server refuses (a full room closes it with 1013) is explained on the page,
/// and the page gets in by itself once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_explained_and_retried() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("refused_connection_is_explained_and_retried").await?
    else {
        return Ok(());
    };
    let server = TestServer::start_with(|c| c.max_room_connections = 1).await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        let doc = doc_id("full");
        introduce(&ana, &server, "Ana", "#db2777").await?;
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        open_doc(&ana, &server, &doc).await?;
        ana.type_in_editor("Only one at a time.").await?;
        ana.wait_saved().await?;

        ben.goto(&format!("{}/d/{doc}", server.http_base())).await?;
        let banner = ben
            .wait_js(
                "a warning that the document is full",
                "const b = document.getElementById('banner');
                 return !b.hidden && b.dataset.kind === 'warning' && /room is full/.test(b.textContent)
                     ? b.textContent : null;",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            banner.as_str().unwrap_or_default().contains("busy"),
            "banner: {banner}"
        );
        let status = ben
            .js("return document.getElementById('status').dataset.synced;", vec![])
            .await?;
        anyhow::ensure!(status == json!("false"), "a refused page must not look synced");

        // Ana leaves; Ben's next attempt gets in and the warning goes away.
        ana.goto(&format!("{}/", server.http_base())).await?;
        ben.wait_connected().await?;
        ben.wait_text("the document once there is room", |t| t == "Only one at a time.")
            .await?;
        ben.wait_js(
            "the warning to go away",
            "return document.getElementById('banner').hidden;",
            vec![],
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// Pages and assets over plain HTTP: content types, cache headers, 304s, a readable 400 for an
/// invalid document name and a 404 page; the WebSocket and API routes are unaffected.
#[tokio::test]
async fn pages_and_assets_are_served() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let base = server.http_base();
    let http = reqwest::Client::new();

    let home = http.get(format!("{base}/")).send().await?;
    assert_eq!(home.status(), 200);
    assert_eq!(home.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(home.headers()["cache-control"], "no-cache");
    let etag = home.headers()["etag"].clone();
    let csp = home.headers()["content-security-policy"]
        .to_str()?
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = home.text().await?;
    assert!(html.contains("id=\"new-doc\""), "{html}");
    let again = http
        .get(format!("{base}/"))
        .header("if-none-match", etag)
        .send()
        .await?;
    assert_eq!(again.status(), 304);

    let editor = http.get(format!("{base}/d/some%20notes")).send().await?;
    assert_eq!(editor.status(), 200);
    let html = editor.text().await?;
    assert!(html.contains("id=\"editor\""), "{html}");

    // Every asset the editor page references is served, with a long cache lifetime.
    let mut assets = 0;
    for part in html.split("\"/assets/").skip(1) {
        let name = part.split('"').next().unwrap_or_default();
        let res = http.get(format!("{base}/assets/{name}")).send().await?;
        assert_eq!(res.status(), 200, "{name}");
        assert_eq!(
            res.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let want = match name.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset type {other:?}"),
        };
        assert_eq!(res.headers()["content-type"], want, "{name}");
        assets += 1;
    }
    assert!(assets >= 3, "editor page references {assets} assets");

    for (path, why) in [
        ("/d/%01x", "control character"),
        (&format!("/d/{}", "x".repeat(300)), "too long"),
        ("/d/%20lead", "whitespace"),
        ("/d/a%2Fb", "contains &#39;/&#39;"),
        ("/d/%FF", "UTF-8"),
    ] {
        let res = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(res.status(), 400, "{path}");
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
        let body = res.text().await?;
        assert!(
            body.contains("cannot be opened") && body.contains(why),
            "{path}: {body}"
        );
    }

    let missing = http.get(format!("{base}/no/such/page")).send().await?;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await?.contains("Page not found"));
    let missing_asset = http.get(format!("{base}/assets/nope.js")).send().await?;
    assert_eq!(missing_asset.status(), 404);
    let api_missing = http.get(format!("{base}/api/nope")).send().await?;
    assert_eq!(api_missing.status(), 404);
    assert_eq!(api_missing.headers()["content-type"], "application/json");

    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await?
            .text()
            .await?,
        "ok"
    );
    assert_eq!(
        http.get(format!("{base}/readyz")).send().await?.status(),
        200
    );
    let docs: serde_json::Value = http
        .get(format!("{base}/api/docs"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(docs["total"], 0);
    let client = weft_tests::Client::connect_synced(&server.room_url("still-works")).await?;
    client.push("ws still works")?;
    client.wait_acked().await?;
    Ok(())
}

/// With tokens on: a read-only link opens the document in a clearly read-only editor whose
/// typing never reaches the document, and a notice sent through the API appears as a toast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_links_and_notices() -> anyhow::Result<()> {
    use weft_server::token::Access;
    use weft_server::token::{mint, AuthSecret, Claims, Scope};
    let Some(browsers) = Browsers::start("read_only_links_and_notices").await? else {
        return Ok(());
    };
    let secret = AuthSecret::new(b"browser-test-secret-0123456789")?;
    let server = TestServer::start_with({
        let s = secret.clone();
        move |c| c.auth_secret = Some(s)
    })
    .await?;
    let doc = doc_id("readonly");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let token = |scope: Scope, role: Access| {
        mint(
            &secret,
            &Claims {
                scope,
                role,
                exp,
                sub: None,
            },
        )
    };
    let write = token(Scope::Doc(doc.clone()), Access::Write);
    let read = token(Scope::Doc(doc.clone()), Access::Read);
    let admin = token(Scope::AllDocs, Access::Admin);
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        introduce(&ana, &server, "Ana", "#db2777").await?;
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        let base = server.http_base();
        ana.goto(&format!("{base}/d/{doc}?token={write}")).await?;
        ana.wait_connected().await?;
        ana.type_in_editor("Ana writes.").await?;
        ana.wait_saved().await?;
        ben.goto(&format!("{base}/d/{doc}?token={read}")).await?;
        ben.wait_connected().await?;
        ben.wait_js(
            "the read-only mode to show",
            "return document.body.dataset.readonly === 'true';",
            vec![],
        )
        .await?;
        ben.wait_text("the document at the reader", |t| t == "Ana writes.")
            .await?;
        // Whatever the reader's keyboard does, the document does not change.
        let _ = ben.type_in_editor(" Ben tries.").await;
        ana.type_in_editor(" Ana again.").await?;
        ana.wait_saved().await?;
        ben.wait_text("Ana's later edit at the reader", |t| {
            t == "Ana writes. Ana again."
        })
        .await?;
        let http = reqwest::Client::new();
        let text = http
            .get(format!("{base}/api/docs/{doc}/text"))
            .bearer_auth(&admin)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        anyhow::ensure!(text == "Ana writes. Ana again.", "stored text {text:?}");
        // A notice from the backend reaches the editors as a toast.
        http.post(format!("{base}/api/docs/{doc}/notices"))
            .bearer_auth(&admin)
            .json(&json!({ "level": "info", "text": "Deploy at 5pm" }))
            .send()
            .await?
            .error_for_status()?;
        ana.wait_js(
            "the notice toast",
            "const t = document.getElementById('toast');
             return !t.hidden && t.textContent.includes('Deploy at 5pm');",
            vec![],
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// Pages and assets are gzip-compressed for clients that accept it, and sent plain otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_compressed_when_accepted() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let http = reqwest::Client::new();
    let url = format!("{}/d/compressed", server.http_base());
    let gz = http
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    assert_eq!(
        gz.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let bytes = gz.bytes().await?;
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip stream");
    let plain = http.get(&url).send().await?;
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(plain.text().await?.contains("<html"));
    Ok(())
}

/// The transport label and the numbers the dashboard shows.
async fn dashboard_state(s: &Session) -> anyhow::Result<(String, String, String)> {
    let v = s
        .js(
            "return [document.getElementById('transport').dataset.transport,
                     document.getElementById('transport-label').textContent,
                     document.getElementById('total-messages').textContent];",
            vec![],
        )
        .await?;
    let get = |i: usize| v[i].as_str().unwrap_or_default().to_owned();
    Ok((get(0), get(1), get(2)))
}

/// Waits until the dashboard says `label` and its message totals move past `after`.
async fn wait_dashboard(s: &Session, mode: &str, label: &str) -> anyhow::Result<String> {
    s.wait_js(
        &format!("the transport label '{label}'"),
        "const t = document.getElementById('transport');
         return t.dataset.transport === arguments[0]
             && document.getElementById('transport-label').textContent === arguments[1];",
        vec![json!(mode), json!(label)],
    )
    .await?;
    let (_, _, seen) = dashboard_state(s).await?;
    s.wait_js(
        &format!("the message totals to move past {seen} ({label})"),
        "const now = document.getElementById('total-messages').textContent;
         return now !== arguments[0] && now !== '–' ? now : null;",
        vec![json!(seen)],
    )
    .await?;
    let (mode_now, label_now, totals) = dashboard_state(s).await?;
    anyhow::ensure!(
        mode_now == mode && label_now == label,
        "transport changed while waiting: {mode_now} / {label_now}"
    );
    Ok(totals)
}

/// The dashboard in a real browser: pushed numbers move while a client types ("live"); when a
/// proxy starts refusing WebSockets the page falls back to polling ("live (polling)") and the
/// numbers keep moving; when the proxy lets WebSockets through again it returns to push.
/// A second page with `?transport=poll` polls from the start and stays on polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pushes_and_falls_back_to_polling() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("dashboard_pushes_and_falls_back_to_polling").await?
    else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let proxy = weft_tests::proxy::UpgradeBlocker::start(server.addr).await?;
    let typist = weft_tests::Client::connect_synced(&server.room_url("dash-typing")).await?;
    let typing = tokio::spawn(async move {
        // Bounded: two minutes of typing at most, far more than the test needs.
        for i in 0..1200 {
            if typist.push(&format!("{i} ")).is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let ops = browsers.session("ops").await?;
    let locked = browsers.session("locked").await?;
    let result = async {
        ops.goto(&format!("{}/dashboard", proxy.http_base()))
            .await?;
        wait_dashboard(&ops, "push", "live").await?;
        ops.wait_js(
            "the typing room in the rooms table",
            "return !!document.querySelector('#rooms tr[data-room=\"dash-typing\"]');",
            vec![],
        )
        .await?;

        proxy.block();
        wait_dashboard(&ops, "poll", "live (polling)").await?;

        proxy.unblock();
        wait_dashboard(&ops, "push", "live").await?;

        locked
            .goto(&format!("{}/dashboard?transport=poll", proxy.http_base()))
            .await?;
        wait_dashboard(&locked, "poll", "live (polling)").await?;
        // Forced polling never switches to push, even with WebSockets allowed.
        wait_dashboard(&locked, "poll", "live (polling)").await?;
        anyhow::Ok(())
    }
    .await;
    typing.abort();
    browsers.finish(result, vec![ops, locked]).await
}
