//! Managing documents in real headless Chromium against the real server: renaming from the
//! list and from the editor's header (shown in the list, the header and the tab's title, and in
//! another browser's open tab without a reload), deleting into the trash and restoring from the
//! trash view, importing files (the file control and drag-and-drop) as documents holding
//! exactly their bytes, and what the list page says when the server needs a token.
//!
//! Needs `chromium` and `chromium-driver` (see `browser.rs`). With `WEFT_UPDATE_SCREENSHOTS=1`
//! the list and trash views are also written to `docs/screenshots/`.

#[allow(dead_code)] // Shared with browser.rs; this file uses only part of it.
#[path = "browser/harness.rs"]
mod harness;

use anyhow::Context as _;
use fantoccini::Locator;
use harness::{doc_id, screenshot, wait_titled, Browsers, Session};
use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_tests::TestServer;

/// The Enter key, as WebDriver types it.
const ENTER: &str = "\u{E007}";

/// Creates `id` through the API with `text` (and `title` when given).
async fn create(
    server: &TestServer,
    id: &str,
    text: &str,
    title: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = json!({ "id": id, "text": text });
    if let Some(title) = title {
        body["title"] = json!(title);
    }
    reqwest::Client::new()
        .post(format!("{}/api/docs", server.http_base()))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// `GET /api/docs/{id}` (status and JSON body).
async fn meta(server: &TestServer, id: &str) -> anyhow::Result<(StatusCode, Value)> {
    let res = reqwest::get(format!("{}/api/docs/{id}", server.http_base())).await?;
    let status = res.status();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// The text of `id` through the API.
async fn text_of(server: &TestServer, id: &str) -> anyhow::Result<String> {
    Ok(
        reqwest::get(format!("{}/api/docs/{id}/text", server.http_base()))
            .await?
            .error_for_status()?
            .text()
            .await?,
    )
}

/// Types `keys` into the focused field matching `css` (its text is selected when it opens, so
/// the keys replace it). Not WebDriver's clear: that blurs the field, which ends a rename.
async fn type_into(s: &Session, css: &str, keys: &str) -> anyhow::Result<()> {
    let el = s
        .client
        .wait()
        .at_most(harness::WAIT)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("{css} did not appear"))?;
    el.send_keys(keys)
        .await
        .with_context(|| format!("{} typing into {css}", s.label))
}

/// Waits until the list row of `id` in `list` (`docs` or `trash`) shows `title`.
async fn wait_row_title(s: &Session, list: &str, id: &str, title: &str) -> anyhow::Result<()> {
    s.wait_js(
        &format!("{id} titled {title:?} in #{list}"),
        "const li = document.querySelector(`#${arguments[0]} li[data-doc-id=\"${CSS.escape(arguments[1])}\"]`);
         return !!li && li.querySelector('.doc-title')?.textContent === arguments[2];",
        vec![json!(list), json!(id), json!(title)],
    )
    .await
    .map(drop)
}

/// Waits until `s`'s tab title and header show `title`.
async fn wait_tab_title(s: &Session, title: &str) -> anyhow::Result<()> {
    s.wait_js(
        &format!("the tab and header titled {title:?}"),
        "return document.title === `${arguments[0]} · Weft`
             && document.getElementById('doc-title')?.textContent === arguments[0];",
        vec![json!(title)],
    )
    .await
    .map(drop)
}

/// Renames from the list (shown there and in the API), from the editor's header (Enter saves,
/// Escape cancels; the tab's title follows), and through the API while another browser has the
/// document open: its header and tab title change without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_show_in_the_list_the_header_and_other_tabs() -> anyhow::Result<()> {
    let name = "renames_show_in_the_list_the_header_and_other_tabs";
    let Some(browsers) = Browsers::start(name).await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        let doc = doc_id("plan");
        create(&server, &doc, "Monday plan\nstand-up at 9", None).await?;
        ana.goto(&format!("{}/", server.http_base())).await?;
        wait_row_title(&ana, "docs", &doc, "Monday plan").await?;
        ana.js(
            "document.querySelector(`#docs li[data-doc-id=\"${CSS.escape(arguments[0])}\"] [data-action=rename]`).click();",
            vec![json!(doc)],
        )
        .await?;
        type_into(&ana, ".rename-input", &format!("Weekly roadmap{ENTER}")).await?;
        wait_row_title(&ana, "docs", &doc, "Weekly roadmap").await?;
        anyhow::ensure!(meta(&server, &doc).await?.1["title"] == "Weekly roadmap");

        ben.goto(&format!("{}/d/{doc}", server.http_base())).await?;
        ben.wait_connected().await?;
        wait_tab_title(&ben, "Weekly roadmap").await?;
        ana.goto(&format!("{}/d/{doc}", server.http_base())).await?;
        ana.wait_connected().await?;
        wait_tab_title(&ana, "Weekly roadmap").await?;
        // Escape cancels.
        ana.click("#doc-title").await?;
        type_into(&ana, "#doc-title-input", "Never saved\u{E00C}").await?;
        wait_tab_title(&ana, "Weekly roadmap").await?;
        // Enter saves; the other browser's open tab follows without a reload.
        ana.click("#doc-title").await?;
        type_into(&ana, "#doc-title-input", &format!("Q3 roadmap{ENTER}")).await?;
        wait_tab_title(&ana, "Q3 roadmap").await?;
        wait_tab_title(&ben, "Q3 roadmap").await?;
        anyhow::ensure!(meta(&server, &doc).await?.1["title"] == "Q3 roadmap");
        anyhow::ensure!(
            ben.editor_text().await? == "Monday plan\nstand-up at 9",
            "a rename leaves the text alone"
        );
        Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// Delete from the list moves a document to the trash view; restore from there brings it back
/// with its text, and it opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_and_restore_from_the_list() -> anyhow::Result<()> {
    let name = "trash_and_restore_from_the_list";
    let Some(browsers) = Browsers::start(name).await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let (keep, gone) = (doc_id("keep"), doc_id("gone"));
        create(&server, &keep, "Team notes\nagenda", None).await?;
        create(&server, &gone, "Old draft\nto be deleted", Some("Old draft")).await?;
        create(&server, &doc_id("more"), "Reading list", None).await?;
        ana.goto(&format!("{}/", server.http_base())).await?;
        wait_row_title(&ana, "docs", &gone, "Old draft").await?;
        screenshot(&ana, name, "document-list.png").await?;
        ana.js(
            "document.querySelector(`#docs li[data-doc-id=\"${CSS.escape(arguments[0])}\"] [data-action=delete]`).click();",
            vec![json!(gone)],
        )
        .await?;
        ana.wait_js(
            "the row to leave the list",
            "return !document.querySelector(`#docs li[data-doc-id=\"${CSS.escape(arguments[0])}\"]`)
                 && document.getElementById('list-status').textContent.includes('trash');",
            vec![json!(gone)],
        )
        .await?;
        anyhow::ensure!(meta(&server, &gone).await?.0 == StatusCode::NOT_FOUND);
        ana.click("#view-trash").await?;
        wait_row_title(&ana, "trash", &gone, "Old draft").await?;
        screenshot(&ana, name, "trash.png").await?;
        ana.js(
            "document.querySelector(`#trash li[data-doc-id=\"${CSS.escape(arguments[0])}\"] [data-action=restore]`).click();",
            vec![json!(gone)],
        )
        .await?;
        ana.wait_js(
            "the trash to be empty",
            "return document.querySelector('#trash .empty')?.textContent.includes('trash is empty');",
            vec![],
        )
        .await?;
        anyhow::ensure!(text_of(&server, &gone).await? == "Old draft\nto be deleted");
        ana.click("#view-docs").await?;
        wait_row_title(&ana, "docs", &gone, "Old draft").await?;
        ana.goto(&format!("{}/d/{gone}", server.http_base())).await?;
        ana.wait_text("the restored text", |t| t == "Old draft\nto be deleted").await?;
        Ok(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}

/// A file picked with the Import control and one dropped on the list become documents titled
/// by their names that hold exactly their bytes (CRLF line ends, no final newline, a byte-order
/// mark all kept); a file of another type is refused with a message saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_files_become_documents_byte_for_byte() -> anyhow::Result<()> {
    let name = "imported_files_become_documents_byte_for_byte";
    let Some(browsers) = Browsers::start(name).await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let dir = tempfile::tempdir()?;
    let result = async {
        let picked = "# Meeting notes\r\n\r\n- é, 👋 and tabs\there\r\nno final newline";
        let path = dir.path().join("meeting-notes.md");
        std::fs::write(&path, picked)?;
        ana.goto(&format!("{}/", server.http_base())).await?;
        ana.wait_js("the list", "return document.getElementById('docs').dataset.state === 'ready';", vec![]).await?;
        let input = ana.client.find(Locator::Css("#import-file")).await?;
        input.send_keys(&path.display().to_string()).await.context("choosing the file")?;
        let id = wait_titled(&server, "meeting-notes").await?;
        anyhow::ensure!(text_of(&server, &id).await? == picked, "the picked file's text changed");

        // Dropped: a file with a byte-order mark, and one that is not text.
        let dropped = "\u{feff}Shopping\nmilk\n";
        ana.js(
            "const dt = new DataTransfer();
             dt.items.add(new File([arguments[0]], 'shopping.txt', { type: 'text/plain' }));
             const zone = document.getElementById('drop-zone');
             for (const type of ['dragover', 'drop']) {
               zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
             }",
            vec![json!(dropped)],
        )
        .await?;
        let id = wait_titled(&server, "shopping").await?;
        anyhow::ensure!(text_of(&server, &id).await? == dropped, "the dropped file's text changed");
        ana.js(
            "const dt = new DataTransfer();
             dt.items.add(new File([new Uint8Array([137, 80, 78, 71])], 'photo.png', { type: 'image/png' }));
             document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));",
            vec![],
        )
        .await?;
        ana.wait_js(
            "the refusal of photo.png",
            "const s = document.getElementById('list-status');
             return s.dataset.kind === 'error' && s.textContent.includes('photo.png') && s.textContent.includes('.md or .txt');",
            vec![],
        )
        .await?;
        Ok(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}

/// With a secret set and no token, the list says what is wrong and what to do instead of a raw
/// code, and stops asking; "New document" says the same instead of opening a broken editor;
/// "Open or create" refuses `..` and over-long names in the page with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_explains_a_missing_token_and_bad_names() -> anyhow::Result<()> {
    let name = "the_list_explains_a_missing_token_and_bad_names";
    let Some(browsers) = Browsers::start(name).await? else {
        return Ok(());
    };
    let secret = "test-secret-0123456789abcdef".parse()?;
    let server = TestServer::start_with(move |c| c.auth_secret = Some(secret)).await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let home = format!("{}/", server.http_base());
        ana.goto(&home).await?;
        let text = ana
            .wait_js(
                "the explanation",
                "const l = document.getElementById('docs');
                 return l.dataset.state === 'error' && l.dataset.error === 'token_missing' && l.textContent;",
                vec![],
            )
            .await?;
        let text = text.as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(text.contains("needs an access token") && text.contains("weft token"), "{text}");
        anyhow::ensure!(!text.contains("token_missing") && !text.contains("Retrying"), "{text}");
        ana.click("#new-doc").await?;
        ana.wait_js(
            "the explanation after New document",
            "return document.getElementById('list-status').textContent.includes('needs an access token');",
            vec![],
        )
        .await?;
        anyhow::ensure!(ana.client.current_url().await?.as_str() == home, "New document navigated");

        for (name, says) in [("..", "cannot be used"), (&*"x".repeat(300), "too long")] {
            ana.replace_input("#open-name", &format!("{name}{ENTER}")).await?;
            ana.wait_js(
                &format!("the message for {name:?}"),
                "return document.getElementById('open-error').textContent.includes(arguments[0]);",
                vec![json!(says)],
            )
            .await?;
            anyhow::ensure!(ana.client.current_url().await?.as_str() == home, "{name:?} navigated");
        }
        Ok(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}

/// Waits (bounded) until `GET /api/search?q=word` finds `doc`.
async fn indexed(server: &TestServer, word: &str, doc: &str) -> anyhow::Result<()> {
    let url = format!("{}/api/search?q={word}", server.http_base());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let body = reqwest::get(&url).await?.text().await?;
        if body.contains(&format!("\"{doc}\"")) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the search index did not find {doc} for {word:?} within 20 s: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The search box finds documents by title and by text, marks the matched words in a snippet,
/// and shows the whole list again when cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_by_title_and_by_text() -> anyhow::Result<()> {
    let name = "search_finds_by_title_and_by_text";
    let Some(browsers) = Browsers::start(name).await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let (plan, notes) = (doc_id("plan"), doc_id("notes"));
        create(&server, &plan, "Budget for the offsite\nvenue and travel", Some("Offsite planning")).await?;
        create(&server, &notes, "Standup notes\nthe venue is booked", None).await?;
        create(&server, &doc_id("misc"), "Reading list", None).await?;
        // The index follows the change feed a moment behind the edits: wait until it has them,
        // so what the page shows is the search itself and not the index catching up.
        for (word, doc) in [("offsite", &plan), ("venue", &notes)] {
            indexed(&server, word, doc).await?;
        }
        ana.goto(&format!("{}/", server.http_base())).await?;
        wait_row_title(&ana, "docs", &plan, "Offsite planning").await?;
        let results = "const r = document.getElementById('results');
             return r.dataset.state === 'ready' && !r.hidden
                 && JSON.stringify(Array.from(r.querySelectorAll('li[data-doc-id]'), (li) => [li.dataset.docId,
                      Array.from(li.querySelectorAll('.snippet mark'), (m) => m.textContent)]));";
        type_into(&ana, "#search", "offsite").await?;
        let by_title = ana.wait_js("results for offsite", results, vec![]).await?;
        anyhow::ensure!(
            by_title == json!(serde_json::to_string(&json!([[plan, ["offsite"]]]))?),
            "by title: {by_title}"
        );
        // Escape clears the box and shows the list again.
        type_into(&ana, "#search", "\u{E00C}").await?;
        ana.wait_js(
            "the list again",
            "return document.getElementById('results').hidden && !document.getElementById('docs').hidden;",
            vec![],
        )
        .await?;
        type_into(&ana, "#search", "venue").await?;
        let by_text = ana
            .wait_js(
                "two results for venue",
                &format!("const out = (() => {{ {results} }})(); return out && JSON.parse(out).length === 2 && out;"),
                vec![],
            )
            .await?;
        let hits: Value = serde_json::from_str(by_text.as_str().unwrap_or("[]"))?;
        let mut ids: Vec<&str> = hits.as_array().into_iter().flatten().filter_map(|h| h[0].as_str()).collect();
        ids.sort_unstable();
        let mut want = vec![plan.as_str(), notes.as_str()];
        want.sort_unstable();
        anyhow::ensure!(ids == want, "by text: {hits}");
        anyhow::ensure!(
            hits.as_array().into_iter().flatten().all(|h| h[1] == json!(["venue"])),
            "the snippets mark the word: {hits}"
        );
        screenshot(&ana, name, "document-search.png").await?;
        Ok(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}
