//! WebSocket conformance: the Autobahn|Testsuite fuzzing-client cases 1–7 and 10 (framing,
//! pings and pongs, reserved bits and opcodes, fragmentation, UTF-8, the close handshake, and
//! auto-fragmentation), run by `kosoku` against `weft-echo`: Weft's own socket loop with an echo
//! handler and the upgrade settings production uses.
//!
//! It passes when kosoku exits successfully and its report (`index.json`, one JSON file per
//! case) gives every case a behavior of OK, NON-STRICT or INFORMATIONAL and a closing behavior of
//! OK or INFORMATIONAL: no FAILED, no UNCLEAN, no WRONG CODE. Failing cases are printed with
//! their description and outcome.
//!
//! kosoku (PyPI, Python 3.10+) is looked up as `$KOSOKU`, then
//! `<workspace>/target/kosoku-venv/bin/kosoku` (where `.ci/run` installs it), then `kosoku` on
//! `PATH`. Without it the test is skipped with a message, except when the `CI` environment
//! variable is set (non-empty): there a missing tool is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// The Autobahn case groups run: all fuzzing-client groups except 9 (performance), 12 and 13
/// (permessage-deflate, which Weft does not negotiate).
const CASES: &[&str] = &["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"];

/// Cases run at once: two keep both cores of the CI machine busy without starving the server.
const PARALLELISM: &str = "2";

/// The whole kosoku run must end within this (it takes seconds; a hung case must not hang CI).
const KOSOKU_TIMEOUT: Duration = Duration::from_secs(600);

/// How long `weft-echo` may take to print its address, and to exit once its stdin closes.
const ECHO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `kosoku --help` may take to answer the availability check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Verdicts that pass a case's message exchange (Autobahn's `behavior`).
const BEHAVIOR_OK: &[&str] = &["OK", "NON-STRICT", "INFORMATIONAL"];

/// Verdicts that pass a case's closing handshake (Autobahn's `behaviorClose`).
const BEHAVIOR_CLOSE_OK: &[&str] = &["OK", "INFORMATIONAL"];

/// Weft's socket loop passes Autobahn cases 1–7 and 10 with no failure and no unclean close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_pass_against_the_echo_socket_loop() -> anyhow::Result<()> {
    let kosoku = match find_kosoku().await {
        Ok(path) => path,
        Err(missing) if weft_tests::in_ci() => bail!(
            "the WebSocket conformance run cannot start: {missing:#}. CI is set, so this is a \
             failure, not a skip: run .ci/run, or install it with `python3 -m venv \
             target/kosoku-venv && target/kosoku-venv/bin/pip install kosoku==0.1.0`"
        ),
        Err(missing) => {
            weft_tests::report_skip(
                "the WebSocket conformance run",
                &format!(
                    "{missing:#}; install it with `python3 -m venv target/kosoku-venv && \
                     target/kosoku-venv/bin/pip install kosoku==0.1.0` (or set KOSOKU)"
                ),
            );
            return Ok(());
        }
    };

    let echo = EchoServer::start().await?;
    let reports = tempfile::tempdir()?;
    let mut cmd = Command::new(&kosoku);
    cmd.args(["-m", "fuzzingclient", "-p", PARALLELISM, "-o"])
        .arg(reports.path());
    for case in CASES {
        cmd.args(["-i", case]);
    }
    cmd.arg(&echo.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", kosoku.display()))?;
    // On timeout the future is dropped, and with it the child, which `kill_on_drop` kills.
    let run = tokio::time::timeout(KOSOKU_TIMEOUT, child.wait_with_output()).await;
    let elapsed = started.elapsed();
    let Ok(output) = run else {
        bail!("kosoku did not finish within {KOSOKU_TIMEOUT:?} (killed)");
    };
    let output = output.context("waiting for kosoku")?;
    println!(
        "--- kosoku stdout ---\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    println!(
        "--- kosoku stderr ---\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("--- kosoku: {} after {elapsed:.1?} ---", output.status);

    let report = Report::read(reports.path())?;
    println!("{}", report.summary());
    let failures = report.failures();
    for failure in &failures {
        println!("FAILED {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} Autobahn case(s) failed against weft-echo; details above",
        failures.len()
    );
    for group in CASES {
        let prefix = group.trim_end_matches('*');
        assert!(
            report.cases.keys().any(|id| id.starts_with(prefix)),
            "the report has no case of group {group}: kosoku ran less than asked"
        );
    }
    assert!(
        output.status.success(),
        "kosoku exited with {} although its report shows no failing case",
        output.status
    );
    echo.stop().await
}

/// `weft-echo` running as a child process, stopped by closing its stdin.
struct EchoServer {
    child: Child,
    /// `ws://127.0.0.1:PORT/`, as it printed.
    url: String,
}

impl EchoServer {
    /// Starts `weft-echo` on a free port and reads the address it prints.
    async fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft-echo"))
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("could not start weft-echo")?;
        let stdout = child.stdout.take().context("weft-echo stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(ECHO_TIMEOUT, lines.next_line())
            .await
            .context("weft-echo printed no address in time")??
            .context("weft-echo exited before printing its address")?;
        let url = parse_listening(&line)
            .with_context(|| format!("weft-echo printed {line:?}, not its address"))?;
        Ok(Self { child, url })
    }

    /// Closes its stdin, which must make it shut down and exit successfully.
    async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(ECHO_TIMEOUT, self.child.wait())
            .await
            .context("weft-echo did not exit after its stdin closed")??;
        assert!(status.success(), "weft-echo exited with {status}");
        Ok(())
    }
}

/// The URL in `weft-echo`'s `listening on ws://127.0.0.1:PORT/` line.
fn parse_listening(line: &str) -> Option<String> {
    let url = line.strip_prefix("listening on ")?.trim();
    url.starts_with("ws://127.0.0.1:").then(|| url.to_owned())
}

/// A kosoku that answers `--help`: `$KOSOKU`, the venv `.ci/run` makes, or one on `PATH`.
async fn find_kosoku() -> anyhow::Result<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kosoku-venv/bin/kosoku");
    let candidate = match std::env::var_os("KOSOKU").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None if venv.exists() => venv,
        None => PathBuf::from("kosoku"),
    };
    let probe = Command::new(&candidate)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(status)) if status.success() => Ok(candidate),
        Ok(Ok(status)) => bail!("`{} --help` failed ({status})", candidate.display()),
        Ok(Err(e)) => bail!("kosoku not found as {} ({e})", candidate.display()),
        Err(_) => bail!("`{} --help` did not answer", candidate.display()),
    }
}

/// kosoku's report: per case, the verdicts from `index.json`, and the directory holding each
/// case's detailed JSON file.
struct Report {
    dir: PathBuf,
    /// Case id (`"5.19"`) to its `index.json` entry.
    cases: BTreeMap<String, Value>,
}

impl Report {
    /// Reads `index.json` from `dir`: `{ agent: { case id: { behavior, behaviorClose,
    /// remoteCloseCode, duration, reportfile } } }`, with one agent (the server under test).
    fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("index.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("kosoku wrote no report at {}", path.display()))?;
        Self::parse(dir, &text)
    }

    fn parse(dir: &Path, index: &str) -> anyhow::Result<Self> {
        let index: Value = serde_json::from_str(index).context("index.json is not JSON")?;
        let agents = index.as_object().context("index.json is not an object")?;
        let mut cases = BTreeMap::new();
        for per_agent in agents.values() {
            let per_agent = per_agent
                .as_object()
                .context("an agent's entry is not an object")?;
            for (id, entry) in per_agent {
                cases.insert(id.clone(), entry.clone());
            }
        }
        if cases.is_empty() {
            bail!("kosoku's report lists no case");
        }
        Ok(Self {
            dir: dir.to_owned(),
            cases,
        })
    }

    /// One line per failing case: its verdicts, and from its own report file the description,
    /// the outcome and why the close was not clean.
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, entry) in &self.cases {
            let behavior = field(entry, "behavior");
            let close = field(entry, "behaviorClose");
            if BEHAVIOR_OK.contains(&behavior) && BEHAVIOR_CLOSE_OK.contains(&close) {
                continue;
            }
            let detail = self.detail(entry).unwrap_or_else(|e| format!("({e:#})"));
            out.push(format!("case {id}: {behavior} / close {close}: {detail}"));
        }
        out
    }

    /// What a case's own report file says about it.
    fn detail(&self, entry: &Value) -> anyhow::Result<String> {
        let file = entry
            .get("reportfile")
            .and_then(Value::as_str)
            .context("no reportfile")?;
        let text = std::fs::read_to_string(self.dir.join(file))
            .with_context(|| format!("reading {file}"))?;
        let case: Value = serde_json::from_str(&text).with_context(|| format!("parsing {file}"))?;
        Ok(format!(
            "{} | expected: {} | result: {} | close: {} (remote code {}, clean {}, {}) | \
             received: {}",
            field(&case, "description"),
            field(&case, "expectation"),
            field(&case, "result"),
            field(&case, "resultClose"),
            case.get("remoteCloseCode").unwrap_or(&Value::Null),
            case.get("wasClean").unwrap_or(&Value::Null),
            field(&case, "wasNotCleanReason"),
            truncate(
                &case.get("received").unwrap_or(&Value::Null).to_string(),
                300
            ),
        ))
    }

    /// Case counts by verdict pair, for the log.
    fn summary(&self) -> String {
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for entry in self.cases.values() {
            *counts
                .entry((field(entry, "behavior"), field(entry, "behaviorClose")))
                .or_default() += 1;
        }
        let parts: Vec<String> = counts
            .iter()
            .map(|((b, c), n)| format!("{b}/{c}: {n}"))
            .collect();
        format!(
            "{} cases (behavior/close): {}",
            self.cases.len(),
            parts.join(", ")
        )
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), marked when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …", &text[..end])
}

/// A string field of a JSON object, or `""`.
fn field<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The report check flags failed, unclean and wrong-code cases and lets passing ones through.
#[test]
fn report_check_catches_failing_cases() -> anyhow::Result<()> {
    let index = r#"{ "127.0.0.1:9001": {
        "1.1.1": { "behavior": "OK", "behaviorClose": "OK", "reportfile": "missing.json" },
        "6.4.3": { "behavior": "NON-STRICT", "behaviorClose": "OK", "reportfile": "missing.json" },
        "7.13.1": { "behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL",
                    "reportfile": "missing.json" },
        "2.5": { "behavior": "FAILED", "behaviorClose": "OK", "reportfile": "missing.json" },
        "5.1": { "behavior": "OK", "behaviorClose": "UNCLEAN", "reportfile": "missing.json" },
        "7.9.1": { "behavior": "OK", "behaviorClose": "WRONG CODE", "reportfile": "missing.json" }
    } }"#;
    let report = Report::parse(Path::new("/nonexistent"), index)?;
    let failures = report.failures();
    let ids: Vec<&str> = failures
        .iter()
        .filter_map(|f| f.split(':').next())
        .collect();
    assert_eq!(ids, ["case 2.5", "case 5.1", "case 7.9.1"]);
    assert!(Report::parse(Path::new("/nonexistent"), "{}").is_err());
    assert_eq!(
        parse_listening("listening on ws://127.0.0.1:4321/").as_deref(),
        Some("ws://127.0.0.1:4321/")
    );
    Ok(())
}
