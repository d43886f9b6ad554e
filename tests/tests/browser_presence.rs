//! Presence in the browser editor, in real headless Chromium against the real server: after a
//! server restart (same data directory and port) and after one tab's socket drops, each tab shows
//! the other's caret and presence entry again within 1 s of the reconnect; and following a
//! collaborator by clicking their avatar scrolls to their caret and keeps it in view.
//!
//! Same tools and rules as `browser.rs` (skipped without Chromium unless `CI` is set). The follow
//! test writes its screenshot to `target/browser-screenshots/…/presence-follow.png`; with
//! `WEFT_UPDATE_SCREENSHOTS=1` also to `docs/screenshots/presence-follow.png`.

#[allow(dead_code)] // Shared with browser.rs; this file uses only part of it.
#[path = "browser/harness.rs"]
mod harness;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use harness::{doc_id, introduce, screenshot, Browsers, Session};
use serde_json::{json, Value};
use weft_tests::TestServer;

/// How soon after a reconnect the other's caret and presence entry must be back. Server and
/// browsers share this machine, so it takes milliseconds when it works; the defect this guards
/// against holds them back for up to 15 s (the stock awareness renewal).
const BACK_WITHIN_MS: i64 = 1_000;

/// How long to wait for them at all: past the 15 s renewal, so a failure says how long it took.
const BACK_AT_ALL: Duration = Duration::from_secs(25);

/// Installed in a page: records when its socket connects and when `name`'s caret and presence
/// entry (both) appear or vanish, checked every 10 ms, in `window.__presence`.
const PROBE: &str = r#"
    const name = arguments[0];
    const P = window.__presence = { connects: [], changes: [] };
    weft.provider.on('status', ({ status }) => { if (status === 'connected') P.connects.push(Date.now()); });
    let last = null;
    setInterval(() => {
        const listed = !!document.querySelector(`#presence [data-user-name="${CSS.escape(name)}"]`);
        const caret = Array.from(document.querySelectorAll('.cm-ySelectionCaret .cm-ySelectionInfo'))
            .some((e) => e.textContent === name);
        const v = listed && caret;
        if (v !== last) { P.changes.push({ t: Date.now(), v }); last = v; }
    }, 10);
    return true;
"#;

/// Opens the editor on `doc` and waits until it is connected and synced.
async fn open_doc(s: &Session, server: &TestServer, doc: &str) -> anyhow::Result<()> {
    s.goto(&format!("{}/d/{doc}", server.http_base())).await?;
    s.wait_connected().await
}

/// Waits until `s` shows `name` both as a remote caret and in the presence list.
async fn wait_sees(s: &Session, name: &str) -> anyhow::Result<()> {
    s.wait_js(
        &format!("{name}'s caret and presence entry"),
        "return !!document.querySelector(`#presence [data-user-name=\"${CSS.escape(arguments[0])}\"]`)
            && Array.from(document.querySelectorAll('.cm-ySelectionCaret .cm-ySelectionInfo'))
                .some((e) => e.textContent === arguments[0]);",
        vec![json!(name)],
    )
    .await
    .map(drop)
}

/// The time (ms since the epoch) of `s`'s last socket connect recorded by [`PROBE`].
async fn last_connect(s: &Session) -> anyhow::Result<i64> {
    s.js("return window.__presence.connects.at(-1) ?? null;", vec![])
        .await?
        .as_i64()
        .context("no connect recorded")
}

/// Waits until `s`'s probe counts more than `before` connects.
async fn wait_reconnect(s: &Session, before: usize) -> anyhow::Result<()> {
    s.wait_js(
        "the socket to reconnect",
        "return window.__presence.connects.length > arguments[0];",
        vec![json!(before)],
    )
    .await
    .map(drop)
}

/// How many connects `s`'s probe recorded.
async fn connects(s: &Session) -> anyhow::Result<usize> {
    let n = s
        .js("return window.__presence.connects.length;", vec![])
        .await?;
    Ok(n.as_u64().context("connect count")? as usize)
}

/// Asserts that `s` saw `name` vanish after `gone_after` (the disruption began) and come back at
/// most [`BACK_WITHIN_MS`] after `since` (the reconnect that made it possible).
async fn assert_back(
    s: &Session,
    name: &str,
    gone_after: i64,
    since: i64,
    what: &str,
) -> anyhow::Result<()> {
    let changes = s
        .wait_js_for(
            &format!("{name} back after {what}"),
            BACK_AT_ALL,
            "const c = window.__presence.changes.filter((x) => x.t >= arguments[0]);
             const gone = c.findIndex((x) => !x.v);
             return gone >= 0 && c.slice(gone).some((x) => x.v) ? c : null;",
            vec![json!(gone_after)],
        )
        .await?;
    let back = changes
        .as_array()
        .and_then(|c| {
            c.iter()
                .skip_while(|x| x["v"] == Value::Bool(true))
                .find(|x| x["v"] == Value::Bool(true))
        })
        .and_then(|x| x["t"].as_i64())
        .context("a time when it came back")?;
    let took = back - since;
    eprintln!("{what}: {name} back {took} ms after the reconnect");
    ensure!(
        took <= BACK_WITHIN_MS,
        "{what}: {name}'s caret and presence came back {took} ms after the reconnect \
         (at most {BACK_WITHIN_MS} ms)"
    );
    Ok(())
}

/// A server restart, then a dropped socket: each time both tabs show each other's caret and
/// presence entry again within 1 s of the reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_back_within_a_second_of_a_reconnect() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("presence_is_back_within_a_second_of_a_reconnect").await?
    else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    // Declared before `server`, so the data directory outlives the restarted server.
    let mut dir_guard: Option<tempfile::TempDir> = None;
    let mut server = Some(server);
    let result = async {
        let doc = doc_id("presence");
        let srv = server.as_ref().context("server running")?;
        introduce(&ana, srv, "Ana", "#db2777").await?;
        introduce(&ben, srv, "Ben", "#2563eb").await?;
        open_doc(&ana, srv, &doc).await?;
        open_doc(&ben, srv, &doc).await?;
        ana.type_in_editor("Ana was here. ").await?;
        ben.type_in_editor("Ben too. ").await?;
        wait_sees(&ana, "Ben").await?;
        wait_sees(&ben, "Ana").await?;
        ana.js(PROBE, vec![json!("Ben")]).await?;
        ben.js(PROBE, vec![json!("Ana")]).await?;

        // A restart on the same port and data directory.
        let (a0, b0) = (connects(&ana).await?, connects(&ben).await?);
        let stopped_at = now_ms(&ana).await?;
        let addr = srv.addr;
        let (data, guard) = server.take().context("server running")?.stop().await?;
        dir_guard = guard;
        server = Some(TestServer::start_on(addr, &data, |_| {}).await?);
        wait_reconnect(&ana, a0).await?;
        wait_reconnect(&ben, b0).await?;
        let since = last_connect(&ana).await?.max(last_connect(&ben).await?);
        assert_back(&ana, "Ben", stopped_at, since, "a server restart").await?;
        assert_back(&ben, "Ana", stopped_at, since, "a server restart").await?;

        // Ben's socket drops (closed from the page, as a network drop would) and reconnects.
        let b1 = connects(&ben).await?;
        let dropped_at = now_ms(&ben).await?;
        ben.js("weft.provider.ws.close(); return true;", vec![])
            .await?;
        wait_reconnect(&ben, b1).await?;
        let since = last_connect(&ben).await?;
        assert_back(&ana, "Ben", dropped_at, since, "Ben's dropped socket").await?;
        assert_back(&ben, "Ana", dropped_at, since, "Ben's dropped socket").await?;
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// The page's clock (ms since the epoch): the probes' times are on the same clock.
async fn now_ms(s: &Session) -> anyhow::Result<i64> {
    s.js("return Date.now();", vec![])
        .await?
        .as_i64()
        .context("Date.now()")
}

/// Whether Ben's caret is drawn inside Ana's window, as `{ top, height }` or `null`.
const BEN_CARET_IN_VIEW: &str = "
    const info = Array.from(document.querySelectorAll('.cm-ySelectionCaret .cm-ySelectionInfo'))
        .find((e) => e.textContent === 'Ben');
    if (!info) return null;
    const r = info.parentElement.getBoundingClientRect();
    return r.top >= 0 && r.bottom <= window.innerHeight ? { top: r.top, height: window.innerHeight } : null;";

/// Clicking a collaborator's avatar follows them: the view scrolls to their caret and keeps it
/// in view as it moves, with the avatar and a note showing it; clicking again, or clicking into
/// the text, stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicking_an_avatar_follows_that_collaborator() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("clicking_an_avatar_follows_that_collaborator").await?
    else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        let doc = doc_id("follow");
        introduce(&ana, &server, "Ana", "#db2777").await?;
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        open_doc(&ana, &server, &doc).await?;
        open_doc(&ben, &server, &doc).await?;
        // A long document, Ben's caret at its end.
        ben.js(
            "const text = Array.from({ length: 240 }, (_, i) => `Line ${i + 1} of a long document.`).join('\\n');
             weft.view.focus();
             weft.view.dispatch({ changes: { from: 0, insert: text }, selection: { anchor: text.length } });
             return true;",
            vec![],
        )
        .await?;
        ana.wait_js(
            "Ben's long document",
            "return weft.view.state.doc.lines === 240;",
            vec![],
        )
        .await?;
        ana.js("window.scrollTo(0, 0); return true;", vec![]).await?;
        ensure!(
            ana.js(BEN_CARET_IN_VIEW, vec![]).await?.is_null(),
            "Ben's caret at the end must start out of Ana's view"
        );

        ana.click("#presence li[data-user-name='Ben']").await?;
        ana.wait_js("Ben's caret scrolled into view", BEN_CARET_IN_VIEW, vec![])
            .await?;
        ana.wait_js(
            "the avatar and the note to show Ana follows Ben",
            "return document.querySelector(\"#presence li[data-user-name='Ben']\").dataset.following === 'true'
                && document.getElementById('following').textContent === 'Following Ben';",
            vec![],
        )
        .await?;
        // The followed caret keeps its name label shown (others fade once their caret rests).
        ana.wait_js(
            "Ben's caret marked as followed with its label shown",
            "return !!document.querySelector('.cm-ySelectionCaret.weft-followed.weft-label-shown');",
            vec![],
        )
        .await?;
        // Only for the picture: let the label finish fading in.
        tokio::time::sleep(Duration::from_millis(700)).await;
        screenshot(&ana, "clicking_an_avatar_follows_that_collaborator", "presence-follow.png").await?;

        // Ben jumps to the top and types: Ana's view follows.
        ben.js(
            "weft.view.focus(); weft.view.dispatch({ selection: { anchor: 0 } });
             weft.view.dispatch({ changes: { from: 0, insert: 'Top! ' }, selection: { anchor: 5 } });
             return true;",
            vec![],
        )
        .await?;
        ana.wait_js(
            "Ana's view to follow Ben to the top",
            "return window.scrollY < 200 && (() => { const r = Array.from(document.querySelectorAll('.cm-ySelectionCaret .cm-ySelectionInfo')).find((e) => e.textContent === 'Ben'); return !!r; })();",
            vec![],
        )
        .await?;
        ana.wait_js("Ben's caret in view at the top", BEN_CARET_IN_VIEW, vec![])
            .await?;

        // Clicking the avatar again stops following.
        ana.click("#presence li[data-user-name='Ben']").await?;
        ana.wait_js(
            "following to stop on a second click",
            "return document.querySelector(\"#presence li[data-user-name='Ben']\").dataset.following === 'false'
                && document.getElementById('following').hidden;",
            vec![],
        )
        .await?;
        // Following again, then clicking into the text (to type) stops it too.
        ana.click("#presence li[data-user-name='Ben']").await?;
        ana.wait_js(
            "following again",
            "return weft.following() !== null;",
            vec![],
        )
        .await?;
        ana.type_in_editor("a").await?;
        ana.wait_js(
            "following to stop when Ana clicks into the text",
            "return weft.following() === null && document.getElementById('following').hidden;",
            vec![],
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// A page opened with a token that names its user (`sub`) shows that name to the others and in
/// its own presence entry, without replacing the name stored for tokens that name nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subject_is_the_display_name() -> anyhow::Result<()> {
    use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
    let Some(browsers) = Browsers::start("a_token_subject_is_the_display_name").await? else {
        return Ok(());
    };
    let secret = AuthSecret::new(b"browser-presence-secret-0123456789")?;
    let server = TestServer::start_with({
        let s = secret.clone();
        move |c| c.auth_secret = Some(s)
    })
    .await?;
    let doc = doc_id("subject");
    let token = |sub: Option<&str>| {
        mint(
            &secret,
            &Claims {
                scope: Scope::Doc(doc.clone()),
                role: Access::Write,
                exp: unix_now() + 3600,
                sub: sub.map(str::to_owned),
            },
        )
    };
    let (named, anonymous) = (token(Some("Zoë Example")), token(None));
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        introduce(&ana, &server, "Ana", "#db2777").await?;
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        let base = server.http_base();
        ana.goto(&format!("{base}/d/{doc}?token={named}")).await?;
        ana.wait_connected().await?;
        ben.goto(&format!("{base}/d/{doc}?token={anonymous}")).await?;
        ben.wait_connected().await?;
        ben.wait_js(
            "Zoë Example in Ben's presence list",
            "return !!document.querySelector(\"#presence [data-user-name='Zoë Example'][data-self='false']\");",
            vec![],
        )
        .await?;
        ana.wait_js(
            "Ana's own entry named by her token, Ben by his stored name",
            "return !!document.querySelector(\"#presence [data-user-name='Zoë Example'][data-self='true']\")
                && !!document.querySelector(\"#presence [data-user-name='Ben'][data-self='false']\");",
            vec![],
        )
        .await?;
        let stored = ana
            .js("return JSON.parse(localStorage.getItem('weft.user')).name;", vec![])
            .await?;
        ensure!(
            stored == json!("Ana"),
            "the stored name must stay for pages without a named token, got {stored}"
        );
        anyhow::Ok(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}
