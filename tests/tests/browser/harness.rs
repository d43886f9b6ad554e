//! Driving Debian's headless Chromium through chromedriver for the browser tests.
//!
//! [`Browsers::start`] finds chromedriver and Chromium (skipping the test when they are absent,
//! failing instead when `CI` is set), runs chromedriver in its own process group on a free port,
//! and hands out [`Session`]s: one Chromium each, with its own profile directory, so that two
//! sessions share nothing (no BroadcastChannel, no localStorage) and only the server connects
//! them. [`Browsers::finish`] screenshots every session when the test failed and checks that
//! the pages logged no errors when it passed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Deadline of every wait in a browser test: generous, because two Chromiums on a 2-core CI
/// machine are slow to start and to lay out.
pub(crate) const WAIT: Duration = Duration::from_secs(20);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

/// Browser tests run one at a time: each starts two Chromiums, and more than that at once on a
/// 2-core machine turns timing into flakiness.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where chromedriver and Chromium are; `WEFT_CHROMEDRIVER` / `WEFT_CHROMIUM` override the
/// search (set one to a missing path to simulate a machine without them).
fn find_tools() -> Result<(PathBuf, PathBuf), String> {
    let driver = tool("WEFT_CHROMEDRIVER", &["chromedriver"])
        .ok_or("chromedriver not found (apt-get install chromium-driver)")?;
    let chromium = tool("WEFT_CHROMIUM", &["chromium", "chromium-browser"])
        .ok_or("chromium not found (apt-get install chromium)")?;
    Ok((driver, chromium))
}

fn tool(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver running in its own process group; the whole group (chromedriver and every
/// Chromium it started) is killed on drop, so a failing test leaves no orphans.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(driver: &Path, log: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let me = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ready = http
                .get(format!("{}/status", me.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(res) = ready {
                let body: Value = res.json().await.unwrap_or(Value::Null);
                if body["value"]["ready"] == json!(true) {
                    return Ok(me);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "chromedriver did not answer on {} within {WAIT:?}; its log:\n{}",
                    me.url,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.child.id();
        // A negative pid names the process group chromedriver leads. Spelled `-s KILL -- -PGID`
        // on purpose: procps-ng 4.0.2 (Debian 12) parses `kill -KILL -PGID` as `kill(-1, SIGKILL)`,
        // which would kill every process we may signal.
        if pgid > 1 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one browser test needs: chromedriver, the Chromium binary and an output directory.
pub(crate) struct Browsers {
    name: &'static str,
    chromium: PathBuf,
    driver: Driver,
    out: PathBuf,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browsers {
    /// Starts chromedriver for the test `name`; `None` (with the reason printed) when the
    /// browser is not installed and this is not CI.
    ///
    /// # Errors
    /// When the tools are missing under `CI`, or chromedriver does not start.
    pub(crate) async fn start(name: &'static str) -> anyhow::Result<Option<Self>> {
        let (driver, chromium) = match find_tools() {
            Ok(t) => t,
            Err(why) if weft_tests::in_ci() => {
                bail!("browser test {name} cannot run under CI: {why}")
            }
            Err(why) => {
                weft_tests::report_skip(
                    &format!("browser test {name}"),
                    &format!("{why}; set CI=1 to make this a failure"),
                );
                return Ok(None);
            }
        };
        let turn = ONE_AT_A_TIME.lock().await;
        let out = output_dir(name);
        std::fs::create_dir_all(&out)?;
        // Leftovers of an earlier run would be mistaken for this run's screenshots.
        for entry in std::fs::read_dir(&out)? {
            let _ = std::fs::remove_file(entry?.path());
        }
        let driver = Driver::start(&driver, &out.join("chromedriver.log")).await?;
        Ok(Some(Self {
            name,
            chromium,
            driver,
            out,
            _turn: turn,
        }))
    }

    /// Opens a new, separate Chromium (fresh profile) labelled `label` in reports.
    ///
    /// # Errors
    /// When chromedriver cannot start the browser.
    pub(crate) async fn session(&self, label: &str) -> anyhow::Result<Session> {
        self.session_sized(label, None).await
    }

    /// [`Browsers::session`], on a phone-sized viewport (`width` × `height` CSS pixels, Chrome's
    /// mobile emulation) when `phone` is given: a desktop window cannot be made narrower than
    /// 500 px.
    ///
    /// # Errors
    /// When chromedriver cannot start the browser.
    pub(crate) async fn session_sized(
        &self,
        label: &str,
        phone: Option<(u32, u32)>,
    ) -> anyhow::Result<Session> {
        let profile = tempfile::tempdir()?;
        let mut caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        if let Some((width, height)) = phone {
            caps["goog:chromeOptions"]["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1 } });
        }
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.driver.url)
            .await
            .with_context(|| format!("starting Chromium for {label}"))?;
        Ok(Session {
            label: label.to_owned(),
            client,
            _profile: profile,
        })
    }

    /// Ends the test: on failure, writes a screenshot of every session still open and adds the
    /// paths to the error; on success, fails if any page recorded a console error or warning.
    /// Closes every session either way.
    ///
    /// # Errors
    /// The test's own error (with screenshot paths), or the console errors found.
    pub(crate) async fn finish(
        self,
        result: anyhow::Result<()>,
        sessions: Vec<Session>,
    ) -> anyhow::Result<()> {
        let result = match result {
            Ok(()) => {
                let mut problems = Vec::new();
                for s in &sessions {
                    match s.console_problems().await {
                        Ok(p) if p.is_empty() => {}
                        Ok(p) => problems.push(format!("{}: {}", s.label, p.join(" | "))),
                        Err(e) => {
                            problems.push(format!("{}: cannot read its console: {e:#}", s.label))
                        }
                    }
                }
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(anyhow!(
                        "pages logged errors or warnings:\n{}",
                        problems.join("\n")
                    ))
                }
            }
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut notes = Vec::new();
                for s in &sessions {
                    let path = self.out.join(format!("{}.png", s.label));
                    match s.client.screenshot().await {
                        Ok(png) => match std::fs::write(&path, png) {
                            Ok(()) => {
                                notes.push(format!("screenshot of {}: {}", s.label, path.display()))
                            }
                            Err(w) => notes.push(format!("cannot write {}: {w}", path.display())),
                        },
                        Err(c) => notes.push(format!("no screenshot of {}: {c}", s.label)),
                    }
                    if let Ok(state) = s.describe().await {
                        notes.push(format!("{} page state: {state}", s.label));
                    }
                }
                for n in &notes {
                    eprintln!("{}: {n}", self.name);
                }
                Err(e.context(notes.join("\n")))
            }
        };
        for s in sessions {
            s.close().await;
        }
        result
    }
}

/// `target/browser-screenshots/<test>`.
fn output_dir(name: &str) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .unwrap_or(tmp)
        .join("browser-screenshots")
        .join(name)
}

/// One Chromium with one page, driven through WebDriver.
pub(crate) struct Session {
    /// Name used in failure reports and screenshot file names.
    pub(crate) label: String,
    /// The WebDriver client, for what the helpers here do not cover (screenshots, key presses).
    pub(crate) client: Client,
    _profile: tempfile::TempDir,
}

/// The editor's text as CodeMirror shows it, without the remote carets' name labels.
const EDITOR_TEXT: &str = r"
    const content = document.querySelector('.cm-content');
    if (!content) return null;
    const copy = content.cloneNode(true);
    copy.querySelectorAll('.cm-ySelectionCaret, .cm-placeholder, .cm-widgetBuffer')
        .forEach((e) => e.remove());
    return Array.from(copy.querySelectorAll('.cm-line'), (l) => l.textContent).join('\n');
";

impl Session {
    /// Navigates to `url` and waits for the page to load.
    ///
    /// # Errors
    /// When navigation fails.
    pub(crate) async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("{} opening {url}", self.label))
    }

    /// Reloads the page.
    ///
    /// # Errors
    /// When the reload fails.
    pub(crate) async fn reload(&self) -> anyhow::Result<()> {
        self.client.refresh().await.context("reload")
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    ///
    /// # Errors
    /// When the script throws or the browser does not answer.
    pub(crate) async fn js(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("{} running script", self.label))
    }

    /// Polls `script` until it returns something other than `null`/`false`, and returns that.
    ///
    /// # Errors
    /// After [`WAIT`], naming `what` and the last value seen.
    pub(crate) async fn wait_js(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<Value> {
        self.wait_js_for(what, WAIT, script, args).await
    }

    /// [`Session::wait_js`] with a deadline of its own, for waits that are the point of a test.
    ///
    /// # Errors
    /// After `timeout`, naming `what` and the last value seen.
    pub(crate) async fn wait_js_for(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.js(script, args.clone()).await {
                Ok(v) if !(v.is_null() || v == Value::Bool(false)) => return Ok(v),
                Ok(v) => v,
                Err(e) => Value::String(format!("{e:#}")),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{}: timed out after {timeout:?} waiting for {what} (last: {last})",
                    self.label
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clicks the first element matching `css`.
    ///
    /// # Errors
    /// When it does not appear within [`WAIT`] or cannot be clicked.
    pub(crate) async fn click(&self, css: &str) -> anyhow::Result<()> {
        let el = self
            .client
            .wait()
            .at_most(WAIT)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("{}: {css} did not appear within {WAIT:?}", self.label))?;
        el.click()
            .await
            .with_context(|| format!("{} clicking {css}", self.label))
    }

    /// Replaces the value of the input matching `css` by typing `keys` into it.
    ///
    /// # Errors
    /// When the input is missing or does not take the keys.
    pub(crate) async fn replace_input(&self, css: &str, keys: &str) -> anyhow::Result<()> {
        let el = self.client.find(Locator::Css(css)).await?;
        el.clear().await?;
        el.send_keys(keys)
            .await
            .with_context(|| format!("{} typing into {css}", self.label))
    }

    /// Types `keys` into the editor (clicking into it first, which also publishes the caret).
    ///
    /// # Errors
    /// When the editor is missing or does not take the keys.
    pub(crate) async fn type_in_editor(&self, keys: &str) -> anyhow::Result<()> {
        let el = self.client.find(Locator::Css(".cm-content")).await?;
        el.click().await?;
        el.send_keys(keys)
            .await
            .with_context(|| format!("{} typing into the editor", self.label))
    }

    /// The editor's text.
    ///
    /// # Errors
    /// When the page has no editor.
    pub(crate) async fn editor_text(&self) -> anyhow::Result<String> {
        match self.js(EDITOR_TEXT, vec![]).await? {
            Value::String(s) => Ok(s),
            other => bail!("{}: no editor on the page ({other})", self.label),
        }
    }

    /// Waits until the editor's text satisfies `check`; returns it.
    ///
    /// # Errors
    /// After [`WAIT`], with the last text seen.
    pub(crate) async fn wait_text(
        &self,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.editor_text().await.unwrap_or_default();
            if check(&text) {
                return Ok(text);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{}: timed out after {WAIT:?} waiting for {what}; editor text: {text:?}",
                    self.label
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the connection indicator says connected and synced.
    ///
    /// # Errors
    /// After [`WAIT`].
    pub(crate) async fn wait_connected(&self) -> anyhow::Result<()> {
        self.wait_js(
            "the editor to be connected and synced",
            "const s = document.getElementById('status');
             return !!s && s.dataset.status === 'connected' && s.dataset.synced === 'true';",
            vec![],
        )
        .await
        .map(drop)
    }

    /// Waits until the save indicator says every edit of this tab is stored on the server.
    ///
    /// # Errors
    /// After [`WAIT`].
    pub(crate) async fn wait_saved(&self) -> anyhow::Result<()> {
        self.wait_js(
            "the saved indicator",
            "return document.getElementById('saved')?.dataset.saved === 'true';",
            vec![],
        )
        .await
        .map(drop)
    }

    /// Names in the presence list, in page order.
    ///
    /// # Errors
    /// When the page does not answer.
    pub(crate) async fn presence(&self) -> anyhow::Result<Vec<String>> {
        let v = self
            .js(
                "return Array.from(document.querySelectorAll('#presence [data-user-name]'),
                                   (li) => li.dataset.userName);",
                vec![],
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Name labels of the remote carets shown in the editor.
    ///
    /// # Errors
    /// When the page does not answer.
    pub(crate) async fn caret_labels(&self) -> anyhow::Result<Vec<String>> {
        let v = self
            .js(
                "return Array.from(document.querySelectorAll('.cm-ySelectionCaret .cm-ySelectionInfo'),
                                   (e) => e.textContent);",
                vec![],
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Errors and warnings the page recorded (see `frontend/src/diagnostics.js`).
    ///
    /// # Errors
    /// When the page does not answer.
    pub(crate) async fn console_problems(&self) -> anyhow::Result<Vec<String>> {
        let v = self
            .js(
                "return typeof window.__weftDiagnostics === 'function'
                    ? window.__weftDiagnostics().map((e) => e.level + ': ' + e.message)
                    : [];",
                vec![],
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// The page's status hooks, for failure reports.
    async fn describe(&self) -> anyhow::Result<Value> {
        self.js(
            "const d = (id) => { const e = document.getElementById(id); return e ? { ...e.dataset, text: e.textContent.trim() } : null; };
             return { url: location.href, status: d('status'), transport: d('transport'), saved: d('saved'), presence: d('presence'),
                      banner: d('banner'), typing: d('typing'),
                      diagnostics: typeof window.__weftDiagnostics === 'function' ? window.__weftDiagnostics() : null };",
            vec![],
        )
        .await
    }

    /// Ends the WebDriver session, which quits this Chromium.
    pub(crate) async fn close(self) {
        let _ = tokio::time::timeout(WAIT, self.client.close()).await;
    }
}

/// A document id of its own for each test.
pub(crate) fn doc_id(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Sets the display name and colour this browser uses (kept in localStorage by the editor), by
/// visiting the site's home page first.
pub(crate) async fn introduce(
    s: &Session,
    server: &weft_tests::TestServer,
    name: &str,
    color: &str,
) -> anyhow::Result<()> {
    s.goto(&format!("{}/", server.http_base())).await?;
    s.js(
        "localStorage.setItem('weft.user', JSON.stringify({ name: arguments[0], color: arguments[1] }));",
        vec![json!(name), json!(color)],
    )
    .await?;
    Ok(())
}

/// The id of the listed document titled `title`, if any.
pub(crate) async fn id_titled(
    server: &weft_tests::TestServer,
    title: &str,
) -> anyhow::Result<Option<String>> {
    let page: Value = reqwest::get(format!("{}/api/docs", server.http_base()))
        .await?
        .json()
        .await?;
    Ok(page["docs"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["title"] == title))
        .and_then(|d| d["id"].as_str())
        .map(str::to_owned))
}

/// Waits for a document titled `title` and returns its id.
pub(crate) async fn wait_titled(
    server: &weft_tests::TestServer,
    title: &str,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(id) = id_titled(server, title).await? {
            return Ok(id);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no document titled {title:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Writes the screenshot of `s` to `target/browser-screenshots/<test>/<file>`, and to
/// `docs/screenshots` when `WEFT_UPDATE_SCREENSHOTS` is set (how the docs' pictures are made).
pub(crate) async fn screenshot(s: &Session, test: &str, file: &str) -> anyhow::Result<()> {
    let png = s.client.screenshot().await.context("screenshot")?;
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = target
        .parent()
        .unwrap_or(target)
        .join("browser-screenshots")
        .join(test);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(file), &png)?;
    eprintln!("screenshot: {}", dir.join(file).display());
    if std::env::var_os("WEFT_UPDATE_SCREENSHOTS").is_some_and(|v| !v.is_empty()) {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&docs)?;
        std::fs::write(docs.join(file), &png)?;
        eprintln!("screenshot: {}", docs.join(file).display());
    }
    Ok(())
}
