//! The editor without the server, in real headless Chromium against the real server: edits typed
//! while the server is down survive a reload (the page comes from the service worker, the text
//! from the tab's IndexedDB copy) and reach the server when it is back; a deleted document stays
//! deleted (no "saved" status, no re-upload on reconnect or reload) and its text can be saved as
//! a new document.
//!
//! Same tools and rules as `browser.rs` (skipped without Chromium unless `CI` is set). The
//! offline test writes a screenshot of the offline status to
//! `target/browser-screenshots/…/offline-status.png`; with `WEFT_UPDATE_SCREENSHOTS=1` also to
//! `docs/screenshots/offline-status.png`, the picture the documentation shows.

#[allow(dead_code)] // Shared with browser.rs; this file uses only part of it.
#[path = "browser/harness.rs"]
mod harness;

use anyhow::{ensure, Context as _};
use harness::{doc_id, introduce, screenshot, Browsers, Session};
use serde_json::json;
use weft_tests::TestServer;

/// Opens the editor on `doc` and waits until it is connected and synced.
async fn open_doc(s: &Session, base: &str, doc: &str) -> anyhow::Result<()> {
    s.goto(&format!("{base}/d/{doc}")).await?;
    s.wait_connected().await
}

/// The document's text from the HTTP API, or `None` when the API answers 404.
async fn api_text(base: &str, doc: &str) -> anyhow::Result<Option<String>> {
    let res = reqwest::get(format!("{base}/api/docs/{doc}/text")).await?;
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    ensure!(
        res.status().is_success(),
        "GET text of {doc}: {}",
        res.status()
    );
    Ok(Some(res.text().await?))
}

/// Waits until the page's local copy records `fact` (see `frontend/src/offline.js`).
async fn wait_fact(s: &Session, fact: &str) -> anyhow::Result<()> {
    s.wait_js(
        &format!("the local copy to record `{fact}`"),
        "return window.weft.local.fact(arguments[0]).then((v) => v === true);",
        vec![json!(fact)],
    )
    .await
    .map(drop)
}

/// Waits until the page's local copy has committed every edit made so far to disk: a reload
/// ends the transactions still running, as closing a tab or a crash would.
async fn wait_settled(s: &Session) -> anyhow::Result<()> {
    s.wait_js(
        "the local copy to commit the edits",
        "return window.weft.local.settled();",
        vec![],
    )
    .await
    .map(drop)
}

/// The save indicator: (state hook, `data-saved`, text).
async fn save_indicator(s: &Session) -> anyhow::Result<(String, String, String)> {
    let v = s
        .js(
            "const e = document.getElementById('saved');
             return [e.dataset.saveState, e.dataset.saved, e.textContent];",
            vec![],
        )
        .await?;
    let parts: Vec<String> = serde_json::from_value(v)?;
    match parts.as_slice() {
        [a, b, c] => Ok((a.clone(), b.clone(), c.clone())),
        other => anyhow::bail!("unexpected save indicator {other:?}"),
    }
}

/// Fails when the page claims the deleted document is saved.
async fn ensure_not_saved(s: &Session, when: &str) -> anyhow::Result<()> {
    let (state, saved, text) = save_indicator(s).await?;
    ensure!(
        state == "deleted" && saved == "false" && !text.to_lowercase().contains("saved"),
        "{when}: the save indicator of a deleted document says {state}/{saved}/{text:?}"
    );
    Ok(())
}

/// Waits for the deleted-document banner and returns its text.
async fn wait_deleted_banner(s: &Session) -> anyhow::Result<String> {
    let v = s
        .wait_js(
            "the deleted-document banner",
            "const b = document.getElementById('banner');
             return !b.hidden && b.dataset.reason === 'deleted' && document.getElementById('save-copy')
                 ? b.textContent : null;",
            vec![],
        )
        .await?;
    Ok(v.as_str().unwrap_or_default().to_owned())
}

/// The service worker is served from the root with revalidation, and names the editor page.
#[tokio::test]
async fn service_worker_is_served_from_the_root() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let res = reqwest::get(format!("{}/sw.js", server.http_base())).await?;
    ensure!(res.status().is_success(), "GET /sw.js: {}", res.status());
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    ensure!(
        header("content-type").starts_with("text/javascript"),
        "content-type {}",
        header("content-type")
    );
    ensure!(
        header("cache-control") == "no-cache",
        "cache-control {}",
        header("cache-control")
    );
    let body = res.text().await?;
    let shell = body
        .split('\'')
        .find(|s| s.starts_with("/assets/editor-") && s.ends_with(".html"))
        .context("sw.js names no editor page")?;
    let page = reqwest::get(format!("{}{shell}", server.http_base())).await?;
    ensure!(page.status().is_success(), "GET {shell}: {}", page.status());
    let html = page.text().await?;
    let live = reqwest::get(format!("{}/d/anything", server.http_base()))
        .await?
        .text()
        .await?;
    ensure!(
        html == live,
        "the cached editor page differs from /d/{{id}}"
    );
    server.stop().await?;
    Ok(())
}

/// Edits typed while the server is down survive two reloads with no server (the page opens
/// from the service worker, says offline and that edits are kept on this device, and shows the
/// text), then reach the server when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_survive_a_reload_and_reach_the_server() -> anyhow::Result<()> {
    const TEST: &str = "offline_edits_survive_a_reload_and_reach_the_server";
    let Some(browsers) = Browsers::start(TEST).await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    // Declared before `server`, so the data directory outlives the restarted server.
    let mut dir_guard: Option<tempfile::TempDir> = None;
    let mut server = Some(server);
    let result = async {
        let doc = doc_id("offline");
        let srv = server.as_ref().context("server running")?;
        let base = srv.http_base();
        introduce(&ana, srv, "Ana", "#db2777").await?;
        open_doc(&ana, &base, &doc).await?;
        ana.type_in_editor("Typed online.").await?;
        ana.wait_saved().await?;
        ana.wait_js(
            "the service worker to control the page",
            "return !!navigator.serviceWorker.controller;",
            vec![],
        )
        .await?;
        wait_fact(&ana, "synced").await?;
        // Only hashed assets are cached: no page URL (ids, tokens), no API answer.
        let cached = ana
            .js(
                "return (async () => {
                     const urls = [];
                     for (const name of await caches.keys()) {
                         for (const r of await (await caches.open(name)).keys()) urls.push(new URL(r.url).pathname + new URL(r.url).search);
                     }
                     return urls;
                 })();",
                vec![],
            )
            .await?;
        let cached: Vec<String> = serde_json::from_value(cached)?;
        ensure!(
            !cached.is_empty() && cached.iter().all(|u| u.starts_with("/assets/") && !u.contains('?')),
            "the service worker's cache holds {cached:?}"
        );

        let addr = srv.addr;
        let (data, guard) = server.take().context("server running")?.stop().await?;
        dir_guard = guard;
        ana.wait_js(
            "the status to leave 'connected'",
            "return document.getElementById('status').dataset.status !== 'connected';",
            vec![],
        )
        .await?;
        ana.type_in_editor("\nTyped offline.").await?;
        ana.wait_js(
            "the save indicator to show unsent edits",
            "return document.getElementById('saved').dataset.saveState === 'unsaved';",
            vec![],
        )
        .await?;

        let offline = "Typed online.\nTyped offline.";
        ana.wait_text("the offline edit", |t| t == offline).await?;
        wait_settled(&ana).await?;
        ana.reload().await?;
        ana.wait_text("the text from this device after a reload", |t| t == offline)
            .await?;
        let status = ana
            .wait_js(
                "the offline status",
                "const s = document.getElementById('status');
                 const saved = document.getElementById('saved');
                 return s.dataset.status === 'offline' && /^Offline/.test(s.textContent.trim())
                     && saved.dataset.saveState === 'local' && /on this device/.test(saved.textContent)
                     ? [s.textContent.trim(), saved.textContent, document.getElementById('banner').textContent] : null;",
                vec![],
            )
            .await?;
        ensure!(
            status[2]
                .as_str()
                .is_some_and(|b| b.contains("kept on this device")),
            "the banner says where edits are kept: {status}"
        );
        screenshot(&ana, TEST, "offline-status.png").await?;

        ana.type_in_editor("\nAfter a reload.").await?;
        ana.wait_js(
            "the save indicator to say edits are kept on this device",
            "const e = document.getElementById('saved');
             return e.dataset.saveState === 'unsaved' && /on this device/.test(e.textContent);",
            vec![],
        )
        .await?;
        let expected = format!("{offline}\nAfter a reload.");
        ana.wait_text("the edit after the reload", |t| t == expected)
            .await?;
        wait_settled(&ana).await?;
        ana.reload().await?;
        ana.wait_text("every offline edit after a second reload", |t| {
            t == expected
        })
        .await?;

        server = Some(TestServer::start_on(addr, &data, |_| {}).await?);
        ana.wait_connected().await?;
        ana.wait_saved().await?;
        let base = format!("http://{addr}");
        let mut last = None;
        let reached = weft_tests::within("the offline edits reaching the server", harness::WAIT, async {
            loop {
                last = api_text(&base, &doc).await?;
                if last.as_deref() == Some(expected.as_str()) {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await;
        reached.with_context(|| format!("server text: {last:?}"))?;
        anyhow::Ok(())
    }
    .await;
    let result = browsers.finish(result, vec![ana]).await;
    drop(server);
    drop(dir_guard);
    result
}

/// A document deleted through the API while a tab has it open stays deleted: the tab says so,
/// never says saved, does not bring it back on a reload, and "Save a copy as a new document"
/// creates a new document with the tab's text. A document deleted while no tab had it open is
/// recognised when it is opened again from this device's copy, and not re-created either; nor
/// merged into a new document that took its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_document_stays_deleted_and_can_be_saved_as_a_copy() -> anyhow::Result<()> {
    const TEST: &str = "deleted_document_stays_deleted_and_can_be_saved_as_a_copy";
    let Some(browsers) = Browsers::start(TEST).await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let base = server.http_base();
        let http = reqwest::Client::new();
        let doc = doc_id("deleted");
        introduce(&ana, &server, "Ana", "#db2777").await?;
        open_doc(&ana, &base, &doc).await?;
        ana.type_in_editor("Keep this text.").await?;
        ana.wait_saved().await?;
        wait_fact(&ana, "synced").await?;

        let res = http.delete(format!("{base}/api/docs/{doc}")).send().await?;
        ensure!(res.status().is_success(), "DELETE: {}", res.status());
        let banner = wait_deleted_banner(&ana).await?;
        ensure!(banner.contains("deleted"), "banner: {banner}");
        ensure!(!banner.contains("Try again"), "banner offers a retry: {banner}");
        ensure_not_saved(&ana, "after the delete").await?;
        let status = ana
            .js("return document.getElementById('status-text').textContent.trim();", vec![])
            .await?;
        ensure!(status == json!("Deleted"), "status: {status}");
        // The tab does not bring the document back, by itself or after a reload.
        ana.reload().await?;
        wait_deleted_banner(&ana).await?;
        ana.wait_text("the deleted document's text after a reload", |t| {
            t == "Keep this text."
        })
        .await?;
        ensure_not_saved(&ana, "after a reload").await?;
        ensure!(
            api_text(&base, &doc).await?.is_none(),
            "the deleted document is back after a reload"
        );

        ana.click("#save-copy").await?;
        let copy = ana
            .wait_js(
                "the copy to open",
                "const m = /^\\/d\\/([^/]+)$/.exec(location.pathname);
                 return m && decodeURIComponent(m[1]) !== arguments[0] ? decodeURIComponent(m[1]) : null;",
                vec![json!(doc)],
            )
            .await?;
        let copy = copy.as_str().context("copy id")?.to_owned();
        ana.wait_connected().await?;
        ana.wait_text("the copy's text", |t| t == "Keep this text.")
            .await?;
        ana.wait_saved().await?;
        ensure!(
            api_text(&base, &copy).await?.as_deref() == Some("Keep this text."),
            "the copy's text on the server"
        );
        ensure!(
            api_text(&base, &doc).await?.is_none(),
            "the old id stays deleted"
        );

        // Deleted while no tab has it open: opening it again from this device's copy shows the
        // deleted banner instead of re-uploading the copy.
        wait_fact(&ana, "synced").await?;
        ana.goto(&format!("{base}/")).await?;
        let res = http.delete(format!("{base}/api/docs/{copy}")).send().await?;
        ensure!(res.status().is_success(), "DELETE copy: {}", res.status());
        ana.goto(&format!("{base}/d/{copy}")).await?;
        wait_deleted_banner(&ana).await?;
        ana.wait_text("the copy's text from this device", |t| t == "Keep this text.")
            .await?;
        ensure_not_saved(&ana, "opening a document deleted while away").await?;
        ensure!(
            api_text(&base, &copy).await?.is_none(),
            "a document deleted while away came back from this device's copy"
        );

        // Deleted (and purged from the trash) while away and created anew under the same name
        // by someone else: the old copy is not merged into the new document.
        let reused = doc_id("reused");
        open_doc(&ana, &base, &reused).await?;
        ana.type_in_editor("Mine.").await?;
        ana.wait_saved().await?;
        wait_fact(&ana, "synced").await?;
        ana.goto(&format!("{base}/")).await?;
        let res = http
            .delete(format!("{base}/api/docs/{reused}"))
            .send()
            .await?;
        ensure!(res.status().is_success(), "DELETE reused: {}", res.status());
        // Out of the trash for good, so its name is free to take again.
        let res = http
            .delete(format!("{base}/api/trash/{reused}"))
            .send()
            .await?;
        ensure!(res.status().is_success(), "purge reused: {}", res.status());
        let res = http
            .post(format!("{base}/api/docs"))
            .json(&json!({ "id": reused, "text": "Someone else's." }))
            .send()
            .await?;
        ensure!(res.status().is_success(), "POST reused: {}", res.status());
        ana.goto(&format!("{base}/d/{reused}")).await?;
        wait_deleted_banner(&ana).await?;
        ana.wait_text("the old copy's text", |t| t == "Mine.").await?;
        ensure!(
            api_text(&base, &reused).await?.as_deref() == Some("Someone else's."),
            "the old copy was merged into the new document of the same name"
        );
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}
