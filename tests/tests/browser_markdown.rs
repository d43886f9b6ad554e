//! The editor's Markdown preview, export, share links, dark mode, shortcut list and phone
//! layout in real headless Chromium against the real server.
//!
//! Needs `chromium` and `chromium-driver` like the other browser tests (skipped with a printed
//! reason without them, a failure under `CI`). Screenshots of the dark editor with its preview
//! and of the 375 px layout go to `target/browser-screenshots/<test>/`, and with
//! `WEFT_UPDATE_SCREENSHOTS=1` also to `docs/screenshots/`.

#[allow(dead_code)] // Shared with browser.rs; this file uses only part of it.
#[path = "browser/harness.rs"]
mod harness;

use anyhow::Context as _;
use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::Locator;
use harness::{doc_id, introduce, screenshot, wait_titled, Browsers, Session};
use serde_json::{json, Value};
use weft_tests::TestServer;

/// Markdown with a script, an event handler and a `javascript:` link in it: the preview and the
/// HTML export must show the Markdown and none of those.
const HOSTILE: &str = "# Plan for *today*\n\nSome **bold** text and `code`.\n\n\
<script>window.__weftPwned = 'script'</script>\n\n\
<img src=\"missing.png\" onerror=\"window.__weftPwned = 'onerror'\" alt=\"pic\">\n\n\
[click me](javascript:window.__weftPwned='link')\n\n- one\n- two\n";

/// Creates `doc` holding `text` through the API (`bearer` when the server wants a token).
async fn create(
    server: &TestServer,
    doc: &str,
    text: &str,
    bearer: Option<&str>,
) -> anyhow::Result<()> {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/docs", server.http_base()))
        .json(&json!({ "id": doc, "text": text }));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await?.error_for_status()?;
    Ok(())
}

/// The document's stored text, byte for byte.
async fn stored(server: &TestServer, doc: &str, bearer: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut req = reqwest::Client::new().get(format!("{}/api/docs/{doc}/text", server.http_base()));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    Ok(req
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?
        .to_vec())
}

/// Opens the preview and waits until it shows the text of `len` characters.
async fn open_preview(s: &Session, len: usize) -> anyhow::Result<()> {
    s.click("#preview-button").await?;
    s.wait_js(
        "the preview to render the document",
        "const p = document.getElementById('preview');
         return !p.hidden && p.dataset.renderedLength === String(arguments[0]);",
        vec![json!(len)],
    )
    .await
    .map(drop)
}

/// The preview renders the Markdown (headings, emphasis, lists) and drops the script, the
/// `onerror` handler and the `javascript:` link, none of which ran; it follows an edit made by
/// someone else; the editor highlights Markdown syntax.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_renders_and_sanitises() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("preview_renders_and_sanitises").await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let doc = doc_id("preview");
        create(&server, &doc, HOSTILE, None).await?;
        ana.goto(&format!("{}/d/{doc}", server.http_base())).await?;
        ana.wait_connected().await?;
        open_preview(&ana, HOSTILE.chars().map(char::len_utf16).sum()).await?;
        let seen = ana
            .js(
                "const b = document.getElementById('preview-body');
                 return {
                   h1: b.querySelector('h1')?.innerHTML ?? null,
                   strong: b.querySelector('strong')?.textContent ?? null,
                   items: b.querySelectorAll('li').length,
                   scripts: document.querySelectorAll('#preview script').length,
                   img: b.querySelector('img') ? b.querySelector('img').getAttributeNames().sort() : null,
                   handlers: b.querySelectorAll('[onerror], [onload], [onclick]').length,
                   jsLinks: Array.from(b.querySelectorAll('a'), (a) => a.getAttribute('href') ?? '')
                     .filter((h) => /^\\s*javascript:/i.test(h)).length,
                   pwned: window.__weftPwned ?? null
                 };",
                vec![],
            )
            .await?;
        assert_eq!(seen["h1"], "Plan for <em>today</em>", "{seen}");
        assert_eq!(seen["strong"], "bold", "{seen}");
        assert_eq!(seen["items"], 2, "{seen}");
        assert_eq!(seen["scripts"], 0, "a script element survived: {seen}");
        assert_eq!(seen["img"], json!(["alt", "src"]), "{seen}");
        assert_eq!(seen["handlers"], 0, "{seen}");
        assert_eq!(seen["jsLinks"], 0, "{seen}");
        assert_eq!(seen["pwned"], Value::Null, "hostile code ran: {seen}");
        // The heading's line in the editor is drawn as a heading (bold), not as plain text.
        let weight = ana
            .js(
                "const line = document.querySelector('.cm-content .cm-line');
                 const span = line && Array.from(line.querySelectorAll('span')).find((s) => s.textContent.includes('Plan'));
                 return span ? getComputedStyle(span).fontWeight : null;",
                vec![],
            )
            .await?;
        assert_eq!(weight, "700", "heading not highlighted: {weight}");

        // Someone else's edit (through the API) reaches the preview.
        let edited = "## Changed by the API\n\nnew text";
        reqwest::Client::new()
            .put(format!("{}/api/docs/{doc}/text", server.http_base()))
            .body(edited)
            .send()
            .await?
            .error_for_status()?;
        ana.wait_js(
            "the preview to show the API's edit",
            "return document.querySelector('#preview-body h2')?.textContent === 'Changed by the API';",
            vec![],
        )
        .await?;
        anyhow::ensure!(
            ana.js("return window.__weftPwned ?? null;", vec![]).await? == Value::Null,
            "hostile code ran later"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}

/// Records every Blob the page turns into a download URL, so the test reads the exact bytes the
/// export hands to the browser.
const CAPTURE_DOWNLOADS: &str = "
    if (!window.__weftDownloads) {
      window.__weftDownloads = [];
      const original = URL.createObjectURL.bind(URL);
      URL.createObjectURL = (blob) => {
        const entry = { type: blob.type, bytes: null };
        window.__weftDownloads.push(entry);
        blob.arrayBuffer().then((b) => { entry.bytes = Array.from(new Uint8Array(b)); });
        return original(blob);
      };
      document.addEventListener('click', (e) => {
        const a = e.target.closest && e.target.closest('a[download]');
        if (a) window.__weftDownloadNames = [...(window.__weftDownloadNames ?? []), a.download];
      }, true);
    }";

/// Exports in `format` through the header menu; returns the file's bytes and its name.
async fn export(s: &Session, format: &str) -> anyhow::Result<(Vec<u8>, String)> {
    s.js(CAPTURE_DOWNLOADS, vec![]).await?;
    let before = s
        .js("return window.__weftDownloads.length;", vec![])
        .await?;
    let n = before.as_u64().unwrap_or(0);
    s.click("#export-button").await?;
    s.click(&format!("#export-menu [data-format='{format}']"))
        .await?;
    let bytes = s
        .wait_js(
            &format!("the .{format} export"),
            "const d = window.__weftDownloads[arguments[0]]; return d && d.bytes;",
            vec![json!(n)],
        )
        .await?;
    let name = s
        .js(
            "return (window.__weftDownloadNames ?? []).at(-1) ?? null;",
            vec![],
        )
        .await?;
    Ok((
        serde_json::from_value(bytes)?,
        name.as_str().unwrap_or_default().to_owned(),
    ))
}

/// `.md` and `.txt` exports are the stored text byte for byte (no BOM, no added newline, CRs,
/// tabs, trailing spaces and non-ASCII kept), and an exported `.md` imported on the list page is a
/// document with the same bytes; `.html` is a page with the title and the rendered, sanitised
/// Markdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_byte_for_byte() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("export_is_byte_for_byte").await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let doc = doc_id("export");
        let text =
            format!("Grüße <&> \"quoted\"\r\n\tTabbed line  \n\n{HOSTILE}emoji 🧵 at the end  ");
        create(&server, &doc, &text, None).await?;
        ana.goto(&format!("{}/d/{doc}", server.http_base())).await?;
        ana.wait_connected().await?;
        let stored = stored(&server, &doc, None).await?;
        assert_eq!(stored, text.as_bytes(), "the API stores the text as sent");
        for format in ["md", "txt"] {
            let (bytes, name) = export(&ana, format).await?;
            assert!(
                bytes == stored,
                ".{format} differs from the stored text: {:?} vs {:?}",
                String::from_utf8_lossy(&bytes),
                String::from_utf8_lossy(&stored)
            );
            assert_eq!(name, format!("Grüße-quoted.{format}"));
        }
        let (bytes, name) = export(&ana, "html").await?;
        let html = String::from_utf8(bytes)?;
        assert_eq!(name, "Grüße-quoted.html");
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(
            html.contains("<title>Grüße &lt;&amp;&gt; &quot;quoted&quot;</title>"),
            "{html}"
        );
        assert!(html.contains("<h1>Plan for <em>today</em></h1>"), "{html}");
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(!html.contains("<script"), "a script in the export: {html}");
        assert!(
            !html.contains("onerror"),
            "an event handler in the export: {html}"
        );
        assert!(
            !html.contains("javascript:"),
            "a javascript: link in the export: {html}"
        );
        // The round trip: the exported file, imported on the list page, is a new document
        // holding the same bytes.
        let (bytes, _) = export(&ana, "md").await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("round-trip.md");
        std::fs::write(&file, &bytes)?;
        ana.goto(&format!("{}/", server.http_base())).await?;
        ana.wait_js(
            "the list",
            "return document.getElementById('docs').dataset.state === 'ready';",
            vec![],
        )
        .await?;
        let input = ana.client.find(Locator::Css("#import-file")).await?;
        input
            .send_keys(&file.display().to_string())
            .await
            .context("choosing the exported file")?;
        let copy = wait_titled(&server, "round-trip").await?;
        assert!(
            crate::stored(&server, &copy, None).await? == stored,
            "the imported export differs from the document it came from"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}

/// With tokens on, an admin mints a read-only link from the share panel; a second browser opens
/// it, cannot change the document, and its own share panel says why it cannot share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_mints_a_read_only_link() -> anyhow::Result<()> {
    use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
    let Some(browsers) = Browsers::start("share_mints_a_read_only_link").await? else {
        return Ok(());
    };
    let secret = AuthSecret::new(b"browser-share-secret-0123456789")?;
    let server = TestServer::start_with({
        let s = secret.clone();
        move |c| c.auth_secret = Some(s)
    })
    .await?;
    let admin = mint(
        &secret,
        &Claims {
            scope: Scope::AllDocs,
            role: Access::Admin,
            exp: unix_now() + 3600,
            sub: None,
        },
    );
    let ana = browsers.session("ana").await?;
    let ben = browsers.session("ben").await?;
    let result = async {
        introduce(&ana, &server, "Ana", "#db2777").await?;
        introduce(&ben, &server, "Ben", "#2563eb").await?;
        let doc = doc_id("share");
        let base = server.http_base();
        ana.goto(&format!("{base}/d/{doc}?token={admin}")).await?;
        ana.wait_connected().await?;
        ana.type_in_editor("Shared text.").await?;
        ana.wait_saved().await?;
        ana.click("#share-button").await?;
        let mode = ana.js("return document.getElementById('share-panel').dataset.mode;", vec![]).await?;
        assert_eq!(mode, "admin");
        ana.js("const s = document.getElementById('share-ttl'); s.value = '3600';", vec![]).await?;
        ana.click("#share-read").await?;
        let link = ana
            .wait_js(
                "the read-only link",
                "const r = document.getElementById('share-result');
                 return r.value && r.dataset.role === 'read' ? r.value : null;",
                vec![],
            )
            .await?;
        let link = link.as_str().unwrap_or_default().to_owned();
        assert!(link.starts_with(&format!("{base}/d/{doc}?token=v1.")), "{link}");

        ben.goto(&link).await?;
        ben.wait_connected().await?;
        ben.wait_js("the read-only mode", "return document.body.dataset.readonly === 'true';", vec![])
            .await?;
        ben.wait_text("the shared text", |t| t == "Shared text.").await?;
        let _ = ben.type_in_editor(" Ben was here.").await;
        // Ana's next edit reaching Ben shows his keys had their chance to travel.
        ana.type_in_editor(" More.").await?;
        ana.wait_saved().await?;
        ben.wait_text("Ana's edit", |t| t == "Shared text. More.").await?;
        let text = stored(&server, &doc, Some(&admin)).await?;
        assert_eq!(String::from_utf8(text)?, "Shared text. More.");
        // Ben cannot share, and the panel says so instead of failing.
        ben.click("#share-button").await?;
        let panel = ben
            .js(
                "const p = document.getElementById('share-panel');
                 return { mode: p.dataset.mode, edit: document.getElementById('share-edit').disabled,
                          read: document.getElementById('share-read').disabled,
                          note: document.getElementById('share-note').textContent };",
                vec![],
            )
            .await?;
        assert_eq!((&panel["mode"], &panel["edit"], &panel["read"]), (&json!("denied"), &json!(true), &json!(true)), "{panel}");
        assert!(panel["note"].as_str().unwrap_or_default().contains("only an admin link"), "{panel}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browsers.finish(result, vec![ana, ben]).await
}

/// In open mode the share panel copies the plain address as the edit link, and explains instead
/// of offering a read-only link (every link edits there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_in_open_mode_gives_the_plain_address() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("share_in_open_mode_gives_the_plain_address").await?
    else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let doc = "open notes";
        let base = server.http_base();
        ana.goto(&format!("{base}/d/open%20notes")).await?;
        ana.wait_connected().await?;
        ana.click("#share-button").await?;
        let panel = ana
            .js(
                "return { mode: document.getElementById('share-panel').dataset.mode,
                          read: document.getElementById('share-read').disabled,
                          ttl: document.getElementById('share-ttl-row').hidden,
                          note: document.getElementById('share-note').textContent };",
                vec![],
            )
            .await?;
        assert_eq!(
            (&panel["mode"], &panel["read"], &panel["ttl"]),
            (&json!("open"), &json!(true), &json!(true)),
            "{panel}"
        );
        assert!(
            panel["note"]
                .as_str()
                .unwrap_or_default()
                .contains("no read-only links"),
            "{panel}"
        );
        ana.click("#share-edit").await?;
        let link = ana
            .wait_js(
                "the edit link",
                "const r = document.getElementById('share-result'); return r.value || null;",
                vec![],
            )
            .await?;
        assert_eq!(link, json!(format!("{base}/d/open%20notes")), "{doc}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}

/// Chrome DevTools' media emulation through chromedriver, to play the system's colour scheme.
#[derive(Debug)]
struct EmulateColorScheme(&'static str);

impl fantoccini::wd::WebDriverCompatibleCommand for EmulateColorScheme {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, url_error::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &reqwest::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": { "features": [{ "name": "prefers-color-scheme", "value": self.0 }] }
        });
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

/// The URL crate's parse error, as reqwest re-exports the URL type only.
mod url_error {
    pub(crate) type ParseError = <reqwest::Url as std::str::FromStr>::Err;
}

/// Waits until the page shows `want` (theme, source).
async fn wait_theme(s: &Session, want: (&str, &str)) -> anyhow::Result<()> {
    s.wait_js(
        &format!("the {} theme ({})", want.0, want.1),
        "const d = document.documentElement.dataset;
         return d.theme === arguments[0] && d.themeSource === arguments[1];",
        vec![json!(want.0), json!(want.1)],
    )
    .await
    .map(drop)
}

/// Dark mode follows the (emulated) system scheme, live; the toggle overrides it and is kept
/// across a reload; toggling back to the system's scheme follows the system again. The editor,
/// its preview and the document list turn dark. Screenshot: the dark editor with its preview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_mode_follows_the_system_and_toggles() -> anyhow::Result<()> {
    const TEST: &str = "dark_mode_follows_the_system_and_toggles";
    let Some(browsers) = Browsers::start(TEST).await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let doc = doc_id("dark");
        let text = "# Meeting notes\n\nWeft keeps **everyone** on the same page.\n\n- Agenda\n- Decisions: ship the `preview`\n\n> Write it down once.\n";
        create(&server, &doc, text, None).await?;
        introduce(&ana, &server, "Ana", "#db2777").await?;
        ana.client.issue_cmd(EmulateColorScheme("light")).await?;
        ana.goto(&format!("{}/d/{doc}", server.http_base())).await?;
        ana.wait_connected().await?;
        wait_theme(&ana, ("light", "system")).await?;
        ana.client.issue_cmd(EmulateColorScheme("dark")).await?;
        wait_theme(&ana, ("dark", "system")).await?;
        let bg = ana.js("return getComputedStyle(document.querySelector('.editor')).backgroundColor;", vec![]).await?;
        assert_eq!(bg, "rgb(23, 26, 33)", "the editor is not dark");

        // The toggle picks light over the system's dark, and the pick survives a reload.
        ana.click("#theme-toggle").await?;
        wait_theme(&ana, ("light", "choice")).await?;
        ana.reload().await?;
        ana.wait_connected().await?;
        wait_theme(&ana, ("light", "choice")).await?;
        // Toggling to what the system asks for follows the system again.
        ana.click("#theme-toggle").await?;
        wait_theme(&ana, ("dark", "system")).await?;
        ana.client.issue_cmd(EmulateColorScheme("light")).await?;
        wait_theme(&ana, ("light", "system")).await?;
        // Alt+Shift+D toggles as well.
        ana.js("document.activeElement?.blur();", vec![]).await?;
        press(&ana, &[ALT, SHIFT, 'D']).await?;
        wait_theme(&ana, ("dark", "choice")).await?;
        let preview_bg = {
            open_preview(&ana, text.len()).await?;
            ana.js("return getComputedStyle(document.getElementById('preview')).backgroundColor;", vec![]).await?
        };
        assert_eq!(preview_bg, "rgb(23, 26, 33)", "the preview is not dark");
        ana.js("document.activeElement?.blur(); window.scrollTo(0, 0);", vec![]).await?;
        screenshot(&ana, TEST, "editor-dark-preview.png").await?;
        // The document list follows the same pick.
        ana.goto(&format!("{}/", server.http_base())).await?;
        wait_theme(&ana, ("dark", "choice")).await?;
        let list_bg = ana.js("return getComputedStyle(document.body).backgroundColor;", vec![]).await?;
        assert_eq!(list_bg, "rgb(15, 17, 21)", "the list is not dark");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}

/// WebDriver's codes of the modifier and special keys the tests press.
const ALT: char = '\u{E00A}';
const SHIFT: char = '\u{E008}';
const ESCAPE: char = '\u{E00C}';
const CONTROL: char = '\u{E009}';

/// Presses `keys` together as a real keyboard would (WebDriver actions): each goes down in
/// order, then all come up in reverse.
async fn press(s: &Session, keys: &[char]) -> anyhow::Result<()> {
    let mut actions = KeyActions::new("keyboard".to_owned());
    for &value in keys {
        actions = actions.then(KeyAction::Down { value });
    }
    for &value in keys.iter().rev() {
        actions = actions.then(KeyAction::Up { value });
    }
    s.client.perform_actions(actions).await?;
    Ok(())
}

/// `?` (outside the text) opens the shortcut list, which names the real bindings; Escape
/// closes it; in the editor `?` is just a character.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_mark_lists_the_shortcuts() -> anyhow::Result<()> {
    let Some(browsers) = Browsers::start("question_mark_lists_the_shortcuts").await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let ana = browsers.session("ana").await?;
    let result = async {
        let doc = doc_id("keys");
        ana.goto(&format!("{}/d/{doc}", server.http_base())).await?;
        ana.wait_connected().await?;
        ana.type_in_editor("Why?").await?;
        ana.wait_text("the typed question mark", |t| t == "Why?").await?;
        let open = ana.js("return document.getElementById('shortcuts').open;", vec![]).await?;
        assert_eq!(open, false, "? in the editor opened the list");
        ana.js("document.activeElement?.blur();", vec![]).await?;
        press(&ana, &['?']).await?;
        let keys = ana
            .wait_js(
                "the shortcut list",
                "const d = document.getElementById('shortcuts');
                 return d.open ? Array.from(d.querySelectorAll('[data-keys]'), (e) => e.dataset.keys) : null;",
                vec![],
            )
            .await?;
        let keys: Vec<String> = serde_json::from_value(keys)?;
        for want in ["Mod-F", "Mod-Z", "Mod-Y  or  Mod-Shift-Z", "Alt-Shift-P", "Alt-Shift-H", "Alt-Shift-E"] {
            assert!(keys.iter().any(|k| k == want), "{want} missing from {keys:?}");
        }
        press(&ana, &[ESCAPE]).await?;
        ana.wait_js("the list to close on Escape", "return !document.getElementById('shortcuts').open;", vec![])
            .await?;
        // Alt+Shift+P opens the preview from inside the editor, without typing into it.
        ana.type_in_editor("").await?;
        press(&ana, &[ALT, SHIFT, 'P']).await?;
        ana.wait_js("the preview to open", "return document.body.dataset.preview === 'on';", vec![]).await?;
        assert_eq!(ana.editor_text().await?, "Why?");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browsers.finish(result, vec![ana]).await
}

/// At 375 px (a phone) nothing overflows sideways, with the preview open or closed and with the
/// share and export menus open; the header's controls stay on screen. Screenshot: the editor at
/// 375 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_width_has_no_horizontal_scroll() -> anyhow::Result<()> {
    const TEST: &str = "phone_width_has_no_horizontal_scroll";
    let Some(browsers) = Browsers::start(TEST).await? else {
        return Ok(());
    };
    let server = TestServer::start().await?;
    let phone = browsers.session_sized("phone", Some((375, 740))).await?;
    let result = async {
        let doc = doc_id("phone");
        let text = "# Shopping list\n\nA long line that has to wrap because phones are narrow: https://example.com/a/very/long/address/that/does/not/break/easily\n\n- bread\n- `a very long inline code span that must not push the page wider`\n";
        create(&server, &doc, text, None).await?;
        introduce(&phone, &server, "Ana", "#db2777").await?;
        phone.goto(&format!("{}/d/{doc}", server.http_base())).await?;
        phone.wait_connected().await?;
        const OVERFLOW: &str = "const e = document.scrollingElement;
            const off = Array.from(document.querySelectorAll('.topbar button, .topbar a'))
              .filter((b) => b.offsetParent && b.getBoundingClientRect().right > innerWidth + 0.5)
              .map((b) => b.id || b.className);
            return { width: innerWidth, scroll: e.scrollWidth, off };";
        let check = |what: &'static str| {
            let phone = &phone;
            async move {
                let v = phone.js(OVERFLOW, vec![]).await?;
                anyhow::ensure!(v["width"] == 375, "{what}: viewport {v}");
                anyhow::ensure!(v["scroll"].as_u64().unwrap_or(u64::MAX) <= 375, "{what}: scrolls sideways: {v}");
                anyhow::ensure!(v["off"] == json!([]), "{what}: controls off screen: {v}");
                Ok::<_, anyhow::Error>(())
            }
        };
        check("editor").await?;
        open_preview(&phone, text.len()).await?;
        check("editor with preview").await?;
        let stacked = phone
            .js(
                "const e = document.getElementById('editor').getBoundingClientRect();
                 const p = document.getElementById('preview').getBoundingClientRect();
                 return p.top >= e.bottom;",
                vec![],
            )
            .await?;
        assert_eq!(stacked, true, "the preview is not under the text");
        // CodeMirror's search panel (Ctrl+F) wraps instead of widening the page.
        phone.type_in_editor("").await?;
        press(&phone, &[CONTROL, 'f']).await?;
        phone
            .wait_js("the search panel", "return !!document.querySelector('.cm-search');", vec![])
            .await?;
        check("search panel").await?;
        press(&phone, &[ESCAPE]).await?;
        phone.click("#share-button").await?;
        check("share panel").await?;
        phone.click("#export-button").await?;
        check("export menu").await?;
        phone.js("document.activeElement?.blur(); document.getElementById('export-menu').hidden = true; window.scrollTo(0, 0);", vec![]).await?;
        screenshot(&phone, TEST, "editor-375.png").await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    browsers.finish(result, vec![phone]).await
}
