//! The editor's History panel in real headless Chromium against the real server: versions
//! recorded when typing pauses and named from the panel, a version's changes highlighted in
//! its author's colour, a restore that the editor and a second, separate browser see live, and
//! a read-only reader browsing history on a phone-sized window.
//!
//! Same tools and rules as `browser.rs` (skipped without Chromium unless `CI` is set). The test
//! that shows the panel writes its screenshot to `target/browser-screenshots/…/history-panel.png`;
//! with `WEFT_UPDATE_SCREENSHOTS=1` also to `docs/screenshots/history-panel.png`, the picture
//! the documentation shows.

#[allow(dead_code)] // Shared with browser.rs; this file uses only part of it.
#[path = "browser/harness.rs"]
mod harness;

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use harness::{doc_id, introduce, screenshot, Browsers, Session};
use serde_json::{json, Value};
use weft_tests::TestServer;

/// Seconds of quiet after which the server records a version. Short, so the test need not wait,
/// but longer than the gaps between the keystrokes of one `send_keys`.
const IDLE_SECS: u64 = 1;

/// The document's versions from the API, newest first.
async fn versions(
    http: &reqwest::Client,
    base: &str,
    doc: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let mut req = http.get(format!("{base}/api/docs/{doc}/versions"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let page: Value = req.send().await?.error_for_status()?.json().await?;
    match page["versions"].as_array() {
        Some(v) => Ok(v.clone()),
        None => bail!("no versions array in {page}"),
    }
}

/// A version's text from the API.
async fn version_text(
    http: &reqwest::Client,
    base: &str,
    doc: &str,
    id: &Value,
    token: Option<&str>,
) -> anyhow::Result<String> {
    let id = id_str(id);
    let mut req = http.get(format!("{base}/api/docs/{doc}/versions/{id}/text"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    Ok(req.send().await?.error_for_status()?.text().await?)
}

/// A version id as the page writes it into `data-version-id` (ids are strings or numbers).
fn id_str(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Waits until the newest version's text is `text` (a version recorded when typing paused, or a
/// named one); returns that version.
async fn wait_version_of(
    http: &reqwest::Client,
    base: &str,
    doc: &str,
    text: &str,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + harness::WAIT;
    let mut last = String::new();
    loop {
        if let Some(newest) = versions(http, base, doc, None).await?.first() {
            last = version_text(http, base, doc, &newest["id"], None).await?;
            if last == text {
                return Ok(newest.clone());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no version of {text:?} within {:?}; newest version's text: {last:?}",
                harness::WAIT
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens the History panel and waits for its timeline.
async fn open_history(s: &Session) -> anyhow::Result<()> {
    s.click("#history-button").await?;
    s.wait_js(
        "the History panel with its timeline",
        "return document.getElementById('history-panel').dataset.state === 'open'
            && document.getElementById('history-list').dataset.state === 'ready';",
        vec![],
    )
    .await
    .map(drop)
}

/// Clicks the timeline entry of version `id` and waits until its text is shown.
async fn show_version(s: &Session, id: &str) -> anyhow::Result<()> {
    s.click(&format!("#history-list li[data-version-id=\"{id}\"]"))
        .await?;
    s.wait_js(
        &format!("version {id} shown"),
        "const v = document.getElementById('history-view');
         return v.dataset.versionId === arguments[0] && v.dataset.state === 'ready';",
        vec![json!(id)],
    )
    .await
    .map(drop)
}

/// What the version view shows: inserted and deleted runs (with author and colour), and the
/// version's text (everything but the deletions).
async fn highlighted(s: &Session) -> anyhow::Result<Value> {
    s.js(
        "const t = document.getElementById('history-text');
         const runs = (sel) => Array.from(t.querySelectorAll(sel), (e) => ({
             text: e.textContent,
             author: e.dataset.author ?? null,
             color: e.style.getPropertyValue('--author-color'),
         }));
         const copy = t.cloneNode(true);
         copy.querySelectorAll('del').forEach((d) => d.remove());
         return { ins: runs('ins.hist-ins'), del: runs('del.hist-del'), text: copy.textContent };",
        vec![],
    )
    .await
}

/// Initials and colour of the first author avatar on version `id`'s timeline entry.
async fn first_avatar(s: &Session, id: &str) -> anyhow::Result<Value> {
    s.js(
        "const a = document.querySelector(`#history-list li[data-version-id=\"${arguments[0]}\"] .avatar`);
         return a ? [a.textContent, a.style.getPropertyValue('--user-color')] : null;",
        vec![json!(id)],
    )
    .await
}

/// Joins the texts of a list of runs from [`highlighted`].
fn joined(runs: &Value) -> String {
    runs.as_array()
        .map(|a| a.iter().filter_map(|r| r["text"].as_str()).collect())
        .unwrap_or_default()
}

/// Ana types, pauses (a version), changes a word, pauses (another); Ben adds a sentence (a
/// version of his); Ana names the current text from the panel. She opens the middle version: the replaced word shows as a
/// deletion and the new one as an insertion, in her caret colour. She restores it after a
/// confirm: her editor and Ben's, in another browser, show that version's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_panel_shows_changes_and_restores() -> anyhow::Result<()> {
    const TEST: &str = "history_panel_shows_changes_and_restores";
    let Some(browsers) = Browsers::start(TEST).await? else {
        return Ok(());
    };
    let server = TestServer::start_with(|c| c.version_idle_secs = IDLE_SECS).await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        let doc = doc_id("history");
        let base = server.http_base();
        let http = reqwest::Client::new();
        introduce(&ana, &server, "Ana", "#db2777").await?;
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        for s in [&ana, &ben] {
            s.goto(&format!("{base}/d/{doc}")).await?;
            s.wait_connected().await?;
        }

        let first = "The quick brown fox jumps.";
        ana.type_in_editor(first).await?;
        ana.wait_saved().await?;
        wait_version_of(&http, &base, &doc, first).await?;

        // "brown" becomes "sly": Home, ten steps right, select five characters, type over them.
        // The two words share no letter, so the change is exactly one deletion and one insertion.
        let keys = format!(
            "\u{E011}{}\u{E008}{}\u{E000}sly",
            "\u{E014}".repeat(10),
            "\u{E014}".repeat(5)
        );
        ana.type_in_editor(&keys).await?;
        let second = "The quick sly fox jumps.";
        ana.wait_text("the changed word", |t| t == second).await?;
        ana.wait_saved().await?;
        let middle = wait_version_of(&http, &base, &doc, second).await?;
        let middle_id = id_str(&middle["id"]);
        ensure!(
            middle["authors"] == json!(["Ana"]),
            "authors of the middle version: {middle}"
        );

        // Ben adds a sentence at the end: a version of his.
        let third = "The quick sly fox jumps. Then it naps.";
        ben.wait_text("Ana's text at Ben", |t| t == second).await?;
        ben.type_in_editor("\u{E010} Then it naps.").await?;
        ben.wait_text("Ben's sentence", |t| t == third).await?;
        ben.wait_saved().await?;
        ana.wait_text("Ben's sentence at Ana", |t| t == third).await?;
        let bens = wait_version_of(&http, &base, &doc, third).await?;
        ensure!(
            bens["authors"] == json!(["Ben"]),
            "authors of Ben's version: {bens}"
        );

        // Name the current text from the panel; it appears on top of the timeline, selected.
        open_history(&ana).await?;
        ana.click("#history-name").await?;
        ana.replace_input("#history-name-input", "With a nap\n")
            .await?;
        let named = ana
            .wait_js(
                "the named version on top of the timeline, selected",
                "const li = document.querySelector('#history-list li[data-version-id]');
                 return li && li.dataset.named === 'true' && li.getAttribute('aria-selected') === 'true'
                     && li.querySelector('.hist-title').textContent === 'With a nap'
                     ? li.dataset.versionId : null;",
                vec![],
            )
            .await?;
        let newest = versions(&http, &base, &doc, None).await?;
        ensure!(
            newest.first().map(|v| (id_str(&v["id"]), v["name"].clone()))
                == Some((id_str(&named), json!("With a nap"))),
            "newest version from the API: {:?}",
            newest.first()
        );
        ensure!(
            version_text(&http, &base, &doc, &newest[0]["id"], None).await? == third,
            "the named version holds the current text"
        );

        // "Named only" leaves just that one.
        ana.click("#history-named-only").await?;
        let shown = ana
            .js(
                "return Array.from(document.querySelectorAll('#history-list li[data-version-id]'), (li) => li.dataset.named);",
                vec![],
            )
            .await?;
        ensure!(shown == json!(["true"]), "named-only timeline: {shown}");
        ana.click("#history-named-only").await?;

        show_version(&ana, &middle_id).await?;
        let marks = highlighted(&ana).await?;
        ensure!(joined(&marks["del"]) == "brown", "deleted runs: {marks}");
        ensure!(joined(&marks["ins"]) == "sly", "inserted runs: {marks}");
        ensure!(marks["text"] == json!(second), "shown text: {marks}");
        for run in marks["ins"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(marks["del"].as_array().into_iter().flatten())
        {
            ensure!(
                run["color"] == json!("#db2777"),
                "a change in Ana's caret colour: {run}"
            );
        }
        // The timeline shows Ana's avatar in her colour on that version.
        let avatar = first_avatar(&ana, &middle_id).await?;
        ensure!(avatar == json!(["A", "#db2777"]), "Ana's avatar: {avatar}");
        // Ben is in the document: his avatar has the colour of his caret.
        let avatar = first_avatar(&ana, &id_str(&bens["id"])).await?;
        ensure!(avatar == json!(["B", "#2563eb"]), "Ben's avatar: {avatar}");
        screenshot(&ana, TEST, "history-panel.png").await?;

        ana.click("#history-restore").await?;
        ana.wait_js(
            "the confirm dialog",
            "return document.getElementById('history-confirm').open;",
            vec![],
        )
        .await?;
        ana.click("#history-confirm-ok").await?;
        ana.wait_js(
            "the panel to close after the restore",
            "return document.getElementById('history-panel').dataset.state === 'closed'
                && !document.getElementById('history-confirm').open;",
            vec![],
        )
        .await?;
        let want = version_text(&http, &base, &doc, &middle["id"], None).await?;
        ensure!(want == second, "the middle version's text: {want:?}");
        ana.wait_text("the restored text in the editor", |t| t == want)
            .await?;
        ben.wait_text("the restored text, live, in another browser", |t| {
            t == want
        })
        .await?;
        let stored = http
            .get(format!("{base}/api/docs/{doc}/text"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        ensure!(stored == want, "stored text after the restore: {stored:?}");

        // Back in live editing: typing goes on from the restored text.
        ana.type_in_editor("\u{E010}!").await?;
        ben.wait_text("an edit after the restore", |t| t == format!("{want}!"))
            .await?;

        // Escape closes the panel too.
        open_history(&ana).await?;
        ana.client.active_element().await?.send_keys("\u{E00C}").await?;
        ana.wait_js(
            "Escape to close the panel",
            "return document.getElementById('history-panel').dataset.state === 'closed';",
            vec![],
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// A reader (read-only link) on a 375 px wide window: the panel covers the screen, lists the
/// versions, shows one with its changes and a way back, and offers neither naming nor
/// restoring; the arrow keys move through the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_browses_history_on_a_phone() -> anyhow::Result<()> {
    use weft_server::token::{mint, Access, AuthSecret, Claims, Scope};
    const TEST: &str = "reader_browses_history_on_a_phone";
    let Some(browsers) = Browsers::start(TEST).await? else {
        return Ok(());
    };
    let secret = AuthSecret::new(b"browser-history-secret-0123456789")?;
    let server = TestServer::start_with({
        let s = secret.clone();
        move |c| c.auth_secret = Some(s)
    })
    .await?;
    let doc = doc_id("reader");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let token = |scope: Scope, role: Access, sub: Option<&str>| {
        mint(
            &secret,
            &Claims {
                scope,
                role,
                exp,
                sub: sub.map(str::to_owned),
            },
        )
    };
    let write = token(Scope::Doc(doc.clone()), Access::Write, Some("ana"));
    let read = token(Scope::Doc(doc.clone()), Access::Read, Some("ben"));
    let ben = browsers.session_sized("ben", Some((375, 812))).await?;
    let result = async {
        let base = server.http_base();
        let http = reqwest::Client::new();
        // Two named versions written through the API by "ana" (the token's subject).
        http.post(format!("{base}/api/docs"))
            .bearer_auth(&write)
            .json(&json!({ "id": doc, "text": "Plan: walk." }))
            .send()
            .await?
            .error_for_status()?;
        let name = |n: &str| {
            http.post(format!("{base}/api/docs/{doc}/versions"))
                .bearer_auth(&write)
                .json(&json!({ "name": n }))
                .send()
        };
        ensure!(name("Draft").await?.status() == 201, "naming Draft");
        http.put(format!("{base}/api/docs/{doc}/text"))
            .bearer_auth(&write)
            .body("Plan: walk, then swim.")
            .send()
            .await?
            .error_for_status()?;
        ensure!(name("Final").await?.status() == 201, "naming Final");
        let list = versions(&http, &base, &doc, Some(&read)).await?;
        let final_id = list
            .iter()
            .find(|v| v["name"] == json!("Final"))
            .map(|v| id_str(&v["id"]))
            .context("the Final version in the list")?;

        ben.goto(&format!("{base}/d/{doc}?token={read}")).await?;
        ben.wait_connected().await?;
        ben.wait_js(
            "the read-only mode",
            "return document.body.dataset.readonly === 'true';",
            vec![],
        )
        .await?;
        open_history(&ben).await?;
        let layout = ben
            .js(
                "const p = document.getElementById('history-panel').getBoundingClientRect();
                 const visible = (id) => { const e = document.getElementById(id); return !!e && e.getClientRects().length > 0; };
                 return { width: p.width, inner: window.innerWidth, left: p.left,
                          list: visible('history-list'), name: visible('history-name'),
                          names: Array.from(document.querySelectorAll('#history-list .hist-title'), (e) => e.textContent) };",
                vec![],
            )
            .await?;
        ensure!(
            layout["inner"].as_f64() == Some(375.0),
            "a phone-sized window: {layout}"
        );
        ensure!(
            layout["width"].as_f64() == Some(375.0) && layout["left"].as_f64() == Some(0.0),
            "the panel covers the width: {layout}"
        );
        ensure!(layout["list"] == json!(true), "the timeline is shown: {layout}");
        ensure!(layout["name"] == json!(false), "no naming for a reader: {layout}");
        let names = layout["names"].as_array().cloned().unwrap_or_default();
        ensure!(
            names.contains(&json!("Final"))
                && names.contains(&json!("Draft"))
                && names.iter().position(|n| n == "Final") < names.iter().position(|n| n == "Draft"),
            "newest first: {layout}"
        );

        // Keyboard: focus the first entry, Arrow Down moves on, Enter shows the focused one.
        let first = ben
            .js(
                "const li = document.querySelector('#history-list li[data-version-id]'); li.focus(); return li.dataset.versionId;",
                vec![],
            )
            .await?;
        ben.client.active_element().await?.send_keys("\u{E015}").await?;
        let focused = ben
            .js("return document.activeElement.dataset.versionId ?? null;", vec![])
            .await?;
        ensure!(
            focused != first && !focused.is_null(),
            "Arrow Down moved from {first} to {focused}"
        );
        ben.client.active_element().await?.send_keys("\u{E007}").await?;
        ben.wait_js(
            "the focused version to be shown",
            "const v = document.getElementById('history-view');
             return v.dataset.versionId === arguments[0] && v.dataset.state === 'ready';",
            vec![focused.clone()],
        )
        .await?;

        ben.click("#history-back").await?;
        show_version(&ben, &final_id).await?;
        let view = ben
            .js(
                "const visible = (id) => document.getElementById(id).getClientRects().length > 0;
                 return { list: visible('history-list'), restore: visible('history-restore'),
                          back: visible('history-back') };",
                vec![],
            )
            .await?;
        ensure!(
            view == json!({ "list": false, "restore": false, "back": true }),
            "a reader's version view on a phone: {view}"
        );
        let marks = highlighted(&ben).await?;
        ensure!(
            joined(&marks["ins"]) == ", then swim",
            "inserted runs: {marks}"
        );
        ensure!(
            marks["text"] == json!("Plan: walk, then swim."),
            "shown text: {marks}"
        );
        ben.click("#history-back").await?;
        ben.click("#history-close").await?;
        ben.wait_js(
            "the panel to close",
            "return document.getElementById('history-panel').dataset.state === 'closed';",
            vec![],
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ben]).await
}
