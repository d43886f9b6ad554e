//! Real NATS servers for the cluster tests: `nats-server` child processes with JetStream on,
//! on free loopback ports, with temporary storage.
//!
//! [`NatsServer`] is one server; [`NatsCluster`] is a JetStream cluster of several, routed to
//! each other under one cluster name. Both can kill a server with SIGKILL and restart it on the
//! same ports and the same store directory, where it comes back with its data, or freeze it
//! with SIGSTOP (a stalled server that answers nothing) and thaw it; both can require client
//! credentials ([`NatsAuth`]). Every wait is bounded and fails with the server's log (kept in
//! memory, like [`crate::WeftProcess`] does).
//!
//! The binary comes from `PATH`, `/usr/sbin` or `/usr/bin` (Debian's `nats-server` package);
//! [`require_nats`] skips a test group visibly when it is missing, and fails it under CI.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::AsyncBufReadExt as _;
use tokio::net::TcpStream;

/// Deadline of a NATS wait: a start, a restart, a JetStream meta leader election. NATS 2.9
/// takes about 5–6 s to elect a new meta leader after the old one dies, and CI machines are
/// shared and slow.
pub const NATS_WAIT: Duration = Duration::from_secs(30);

/// The largest message the test servers accept (NATS defaults to 1 MB): Weft publishes one
/// message per Yjs update, and tests send big ones.
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// The cluster name every [`NatsCluster`] uses (NATS servers only route to their own cluster).
pub const CLUSTER_NAME: &str = "weft-test";

/// How often a start retries with fresh ports when another process took one of them between
/// the harness picking it and the server binding it.
const PORT_ATTEMPTS: usize = 3;

/// What a server logs once it accepts client connections.
const READY_LOG: &str = "Server is ready";

/// What Go's listener error says when the port was taken.
const PORT_TAKEN_LOG: &str = "address already in use";

/// The skip message [`require_nats`] reports.
const MISSING: &str = "nats-server not found (apt-get install nats-server)";

/// The `nats-server` binary: the first one on `PATH`, else `/usr/sbin` or `/usr/bin`
/// (Debian installs it in `/usr/sbin`, which is not on a normal user's `PATH`).
pub fn nats_server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|bin| bin.is_file())
}

/// The `nats-server` binary for test group `group`; when it is missing, reports the skip and
/// returns `None` locally.
///
/// # Panics
/// When it is missing under CI (`CI` set), where a skipped cluster test would hide a gap.
pub fn require_nats(group: &str) -> Option<PathBuf> {
    let bin = nats_server_binary();
    if bin.is_none() {
        if crate::in_ci() {
            panic!("{group}: {MISSING}; CI must install it (.ci/run does)");
        }
        crate::report_skip(group, MISSING);
    }
    bin
}

/// Reads the first line a NATS server sends on a new client connection (`INFO {...}`, without
/// the line end), then closes the connection.
///
/// # Errors
/// When nothing listens at `addr`, or no line comes within 5 s.
pub async fn read_info_line(addr: SocketAddr) -> anyhow::Result<String> {
    let read = async {
        let stream = TcpStream::connect(addr).await?;
        let mut line = String::new();
        tokio::io::BufReader::new(stream)
            .read_line(&mut line)
            .await?;
        anyhow::Ok(line.trim_end().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| anyhow!("no INFO line from {addr} within 5 s"))?
        .with_context(|| format!("reading the INFO line of the NATS server at {addr}"))
}

/// The ports one server listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    /// Clients (`nats://`).
    client: u16,
    /// HTTP monitoring (`/jsz`, `/healthz`), how the harness sees JetStream's state without a
    /// NATS client.
    monitor: u16,
    /// Routes between the servers of a cluster.
    cluster: u16,
}

/// `n` distinct free loopback ports: each is bound on port 0 and released, all held until the
/// last is picked so that they differ. Another process may still take one before the server
/// binds it; the starts retry then.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding a free loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Fresh ports for `n` servers.
fn pick_ports(n: usize) -> anyhow::Result<Vec<Ports>> {
    let ports = free_ports(3 * n)?;
    Ok(ports
        .chunks(3)
        .map(|p| Ports {
            client: p[0],
            monitor: p[1],
            cluster: p[2],
        })
        .collect())
}

/// Client authorization a test server requires (none unless asked for), so tests can check
/// Weft's NATS credential flags against a server that refuses clients without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// `authorization { user, password }`: what `weft --nats-user`/`--nats-password` give.
    UserPassword {
        /// The user name.
        user: String,
        /// Its password, in clear in the config (NATS logs a warning about that).
        password: String,
    },
    /// `authorization { token }`: what `weft --nats-token` gives.
    Token(String),
}

/// What differs between the servers of a cluster.
struct ServerSpec<'a> {
    name: String,
    ports: Ports,
    /// The other servers' cluster ports; `None` for a lone server (no cluster block).
    routes: Option<Vec<u16>>,
    auth: Option<&'a NatsAuth>,
}

/// A config-file string literal (JSON's escapes are valid in NATS config strings).
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The configuration file of one server.
fn config_text(spec: &ServerSpec<'_>, store: &Path) -> String {
    let mut conf = format!(
        "server_name: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nmax_payload: {MAX_PAYLOAD}\n\
         jetstream {{\n  store_dir: {}\n  max_mem: 256MB\n  max_file: 2GB\n}}\n",
        spec.name,
        spec.ports.client,
        spec.ports.monitor,
        quoted(&store.to_string_lossy()),
    );
    match spec.auth {
        Some(NatsAuth::UserPassword { user, password }) => {
            let _ = writeln!(
                conf,
                "authorization {{\n  user: {}\n  password: {}\n}}",
                quoted(user),
                quoted(password)
            );
        }
        Some(NatsAuth::Token(token)) => {
            let _ = writeln!(conf, "authorization {{\n  token: {}\n}}", quoted(token));
        }
        None => {}
    }
    if let Some(routes) = &spec.routes {
        let ports = spec.ports;
        let _ = write!(
            conf,
            "cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{}\n  routes: [\n",
            ports.cluster
        );
        for port in routes {
            let _ = writeln!(conf, "    nats-route://127.0.0.1:{port}");
        }
        conf.push_str("  ]\n}\n");
    }
    conf
}

/// One `nats-server` child process with JetStream on, its config file and store directory.
///
/// It keeps its ports and its store across [`NatsServer::kill`] and [`NatsServer::restart`].
/// Dropping it kills it (and deletes its temporary directory when it owns one).
pub struct NatsServer {
    bin: PathBuf,
    name: String,
    ports: Ports,
    conf: PathBuf,
    store: PathBuf,
    /// The running process; `None` once killed.
    child: Mutex<Option<Child>>,
    /// Everything every run printed, stdout and stderr, for error messages.
    log: Arc<Mutex<String>>,
    /// Where the current run's output starts in `log`, so a restart is not taken as ready
    /// on the previous run's "Server is ready".
    run_start: Mutex<usize>,
    /// Stopped with SIGSTOP: still running, but answering nothing.
    frozen: AtomicBool,
    /// The temporary directory of a lone server; a cluster's servers share the cluster's.
    _dir: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a lone JetStream server on free loopback ports with a fresh temporary store, and
    /// waits until it accepts clients.
    ///
    /// # Errors
    /// When `nats-server` is missing or does not become ready within [`NATS_WAIT`] (its log is
    /// in the error).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(None).await
    }

    /// Like [`NatsServer::start`], with a server that refuses clients without `auth`.
    ///
    /// # Errors
    /// As [`NatsServer::start`].
    pub async fn start_with_auth(auth: NatsAuth) -> anyhow::Result<Self> {
        Self::start_inner(Some(&auth)).await
    }

    async fn start_inner(auth: Option<&NatsAuth>) -> anyhow::Result<Self> {
        let bin = nats_server_binary().context(MISSING)?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::tempdir()?;
            let spec = ServerSpec {
                name: "weft-nats-0".to_owned(),
                ports: pick_ports(1)?[0],
                routes: None,
                auth,
            };
            let mut server = Self::prepare(&bin, &spec, dir.path())?;
            server._dir = Some(dir);
            server.spawn()?;
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) if server.port_taken() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no start attempted")))
            .context("nats-server kept finding its ports taken")
    }

    /// Writes the config of a server under `dir` (`dir/<name>.conf`, `dir/<name>/` for
    /// JetStream) without starting it.
    fn prepare(bin: &Path, spec: &ServerSpec<'_>, dir: &Path) -> anyhow::Result<Self> {
        let store = dir.join(&spec.name);
        std::fs::create_dir_all(&store)?;
        let conf = dir.join(format!("{}.conf", spec.name));
        std::fs::write(&conf, config_text(spec, &store))
            .with_context(|| format!("writing {}", conf.display()))?;
        Ok(Self {
            bin: bin.to_path_buf(),
            name: spec.name.clone(),
            ports: spec.ports,
            conf,
            store,
            child: Mutex::new(None),
            log: Arc::new(Mutex::new(String::new())),
            run_start: Mutex::new(0),
            frozen: AtomicBool::new(false),
            _dir: None,
        })
    }

    /// Starts the process and the threads that copy its output into the log.
    fn spawn(&self) -> anyhow::Result<()> {
        let mut child_slot = lock(&self.child);
        if child_slot.is_some() {
            bail!("nats-server {} is already running", self.name);
        }
        {
            let mut log = lock(&self.log);
            *lock(&self.run_start) = log.len();
            let _ = writeln!(log, "--- harness: starting nats-server {} ---", self.name);
        }
        let mut child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let pipes = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let log = self.log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = lock(&log);
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        *child_slot = Some(child);
        Ok(())
    }

    /// Polls until the current run has logged "Server is ready" and a TCP connect to its
    /// client port succeeds.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + NATS_WAIT;
        loop {
            if let Some(status) = self.exit_status()? {
                // Its last lines (why it exited) may still be on their way through the pipes.
                tokio::time::sleep(Duration::from_millis(200)).await;
                bail!(
                    "nats-server {} exited with {status} before it was ready; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if self.run_log().contains(READY_LOG) && TcpStream::connect(self.addr()).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "nats-server {} was not accepting clients on {} within {NATS_WAIT:?}; log:\n{}",
                    self.name,
                    self.addr(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if the process has exited; `None` while it runs or once killed.
    fn exit_status(&self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match lock(&self.child).as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// What the current run has printed so far.
    fn run_log(&self) -> String {
        let start = *lock(&self.run_start);
        lock(&self.log).get(start..).unwrap_or_default().to_owned()
    }

    /// Whether the current run failed because one of its ports was taken.
    fn port_taken(&self) -> bool {
        self.run_log().contains(PORT_TAKEN_LOG)
    }

    /// Its server name (`server_name` in its config; what `/jsz` names the meta leader by).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `nats://127.0.0.1:PORT`, its client URL.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }

    /// Its client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.client))
    }

    /// `http://127.0.0.1:PORT`, its HTTP monitoring endpoint (`/jsz`, `/healthz`, `/varz`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.monitor)
    }

    /// Its JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// Everything it printed, over all its runs (each run opens with a `--- harness:` line).
    pub fn log(&self) -> String {
        lock(&self.log).clone()
    }

    /// The last `n` lines of [`NatsServer::log`], for error messages about several servers.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether its process is running (not killed, not exited; a frozen one runs).
    pub fn is_running(&self) -> bool {
        matches!(self.exit_status(), Ok(None)) && lock(&self.child).is_some()
    }

    /// Whether it runs and is not frozen: it can take part in an election.
    fn is_responsive(&self) -> bool {
        self.is_running() && !self.is_frozen()
    }

    /// Kills it with SIGKILL, as a crash or the OOM killer would, and reaps it. Does nothing
    /// when it is not running.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process cannot be reaped.
    pub fn kill(&self) -> anyhow::Result<()> {
        if let Some(mut child) = lock(&self.child).take() {
            self.frozen.store(false, Ordering::SeqCst);
            // One that already exited on its own is only reaped.
            if child.try_wait()?.is_none() {
                child
                    .kill()
                    .with_context(|| format!("killing nats-server {}", self.name))?;
            }
            child.wait()?;
        }
        Ok(())
    }

    /// Stops it with SIGSTOP, as a stalled machine or a network black hole would: its sockets
    /// stay open but it answers nothing, so clients only notice through their own timeouts.
    /// Undo with [`NatsServer::thaw`]; [`NatsServer::kill`] and dropping still work.
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("STOP")?;
        self.frozen.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Resumes it after [`NatsServer::freeze`] with SIGCONT.
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("CONT")?;
        self.frozen.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Whether it is stopped by [`NatsServer::freeze`].
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// Sends `sig` with kill(1): std can only send SIGKILL, and this crate forbids the unsafe
    /// code a direct kill(2) needs.
    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let pid = match lock(&self.child).as_ref() {
            Some(child) => child.id(),
            None => bail!("nats-server {} is not running", self.name),
        };
        let status = Command::new("kill")
            .args(["-s", sig, "--", &pid.to_string()])
            .status()
            .context("running kill(1)")?;
        if !status.success() {
            bail!("kill -s {sig} {pid} failed: {status}");
        }
        Ok(())
    }

    /// Starts it again on the same ports with the same config and store directory (killing it
    /// first if it still runs), and waits until it accepts clients. JetStream recovers its
    /// streams from the store before the server reports ready.
    ///
    /// # Errors
    /// When it does not become ready within [`NATS_WAIT`] (its log is in the error), e.g.
    /// because another process took its port meanwhile.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn()?;
        self.wait_ready().await
    }

    /// Its first protocol line, parsed: the JSON of `INFO {...}` (`server_name`, `jetstream`,
    /// `max_payload`, `cluster`, …).
    ///
    /// # Errors
    /// When it does not answer or the line is not an INFO line.
    pub async fn info(&self) -> anyhow::Result<serde_json::Value> {
        let line = read_info_line(self.addr()).await?;
        let json = line
            .strip_prefix("INFO ")
            .with_context(|| format!("first line of {} is not INFO: {line:?}", self.name))?;
        serde_json::from_str(json).with_context(|| format!("INFO JSON of {}: {json}", self.name))
    }

    /// Its JetStream report from the monitoring endpoint (`GET /jsz`): `streams`, `messages`,
    /// `meta_cluster.leader`, …
    ///
    /// # Errors
    /// When the monitoring endpoint does not answer with JSON within 5 s.
    pub async fn jsz(&self) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/jsz", self.monitor_url());
        let get = async {
            let response = reqwest::get(&url).await?.error_for_status()?;
            anyhow::Ok(response.json::<serde_json::Value>().await?)
        };
        tokio::time::timeout(Duration::from_secs(5), get)
            .await
            .map_err(|_| anyhow!("GET {url}: no answer within 5 s"))?
            .with_context(|| format!("GET {url}"))
    }

    /// The meta leader this server sees (`meta_cluster.leader` of `/jsz`), if any.
    async fn seen_meta_leader(&self) -> anyhow::Result<Option<String>> {
        let jsz = self.jsz().await?;
        Ok(jsz["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_owned))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A JetStream cluster of `nats-server` child processes on loopback, routed to each other,
/// with distinct server names (`weft-nats-0`, `weft-nats-1`, …) and one cluster name
/// ([`CLUSTER_NAME`]). Dropping it kills them all and deletes their storage.
pub struct NatsCluster {
    /// Declared before `_dir`, so the servers die before their directory is deleted.
    servers: Vec<NatsServer>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` clustered JetStream servers (at least 2; 3 is what the cluster tests use)
    /// and waits until every one accepts clients and all agree on a JetStream meta leader.
    ///
    /// # Errors
    /// When `nats-server` is missing, `n < 2`, or the cluster does not form within
    /// [`NATS_WAIT`] (the servers' logs are in the error).
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_inner(n, None).await
    }

    /// Like [`NatsCluster::start`], with servers that refuse clients without `auth` (the
    /// routes between them need none).
    ///
    /// # Errors
    /// As [`NatsCluster::start`].
    pub async fn start_with_auth(n: usize, auth: NatsAuth) -> anyhow::Result<Self> {
        Self::start_inner(n, Some(&auth)).await
    }

    async fn start_inner(n: usize, auth: Option<&NatsAuth>) -> anyhow::Result<Self> {
        if n < 2 {
            bail!("a NATS cluster needs at least 2 servers (use NatsServer for one)");
        }
        let bin = nats_server_binary().context(MISSING)?;
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let cluster = Self::spawn_all(&bin, n, auth)?;
            match cluster.wait_started().await {
                Ok(()) => {
                    cluster.wait_meta_leader().await?;
                    return Ok(cluster);
                }
                Err(e) if cluster.servers.iter().any(NatsServer::port_taken) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no start attempted")))
            .context("the NATS cluster kept finding its ports taken")
    }

    /// Writes the configs of `n` servers on fresh ports and starts them all, so that their
    /// routes can connect while each waits for the others.
    fn spawn_all(bin: &Path, n: usize, auth: Option<&NatsAuth>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = pick_ports(n)?;
        let mut servers = Vec::with_capacity(n);
        for (i, own) in ports.iter().enumerate() {
            let routes = ports
                .iter()
                .filter(|p| p.cluster != own.cluster)
                .map(|p| p.cluster)
                .collect();
            let spec = ServerSpec {
                name: format!("weft-nats-{i}"),
                ports: *own,
                routes: Some(routes),
                auth,
            };
            servers.push(NatsServer::prepare(bin, &spec, dir.path())?);
        }
        let cluster = Self { servers, _dir: dir };
        for server in &cluster.servers {
            server.spawn()?;
        }
        Ok(cluster)
    }

    /// Waits until every server accepts clients.
    async fn wait_started(&self) -> anyhow::Result<()> {
        for server in &self.servers {
            server.wait_ready().await?;
        }
        Ok(())
    }

    /// How many servers it has (running or not).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether it has no servers (never: [`NatsCluster::start`] needs two).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// All client URLs, comma-separated: the value of `weft --nats`.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of server `i`.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn url(&self, i: usize) -> String {
        self.servers[i].url()
    }

    /// Server `i`, for its name, address, log, `/jsz` or INFO.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    /// Kills server `i` with SIGKILL and reaps it (nothing when it is not running).
    ///
    /// # Errors
    /// When the signal cannot be sent.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn kill(&self, i: usize) -> anyhow::Result<()> {
        self.servers[i].kill()
    }

    /// Freezes server `i` with SIGSTOP (see [`NatsServer::freeze`]).
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn freeze(&self, i: usize) -> anyhow::Result<()> {
        self.servers[i].freeze()
    }

    /// Resumes server `i` after [`NatsCluster::freeze`] with SIGCONT.
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn thaw(&self, i: usize) -> anyhow::Result<()> {
        self.servers[i].thaw()
    }

    /// Restarts server `i` on its ports with its store, waits until it accepts clients, then
    /// until the running servers (it included) agree on a meta leader again: it has rejoined
    /// the JetStream cluster.
    ///
    /// # Errors
    /// When it does not start or rejoin within [`NATS_WAIT`] (logs in the error).
    ///
    /// # Panics
    /// When `i` is out of range.
    pub async fn restart(&self, i: usize) -> anyhow::Result<()> {
        self.servers[i].restart().await?;
        self.wait_meta_leader().await?;
        Ok(())
    }

    /// Waits until every running server that is not frozen reports the same JetStream meta
    /// leader, and that leader is one of them (after a leader is killed or frozen, the others
    /// keep naming it until they elect a new one); returns the leader's index.
    ///
    /// # Errors
    /// When no such agreement comes within [`NATS_WAIT`] (what each server saw, and the end of
    /// each log, are in the error); when fewer than a quorum run, no leader can be elected.
    pub async fn wait_meta_leader(&self) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + NATS_WAIT;
        loop {
            let seen = self.seen_meta_leaders().await;
            if let Some(i) = self.agreed_leader(&seen) {
                return Ok(i);
            }
            if tokio::time::Instant::now() >= deadline {
                let mut report = String::new();
                for (server, seen) in self.servers.iter().zip(&seen) {
                    let _ = writeln!(
                        report,
                        "== {} (running: {}, frozen: {}) sees leader {seen:?}; log tail:\n{}",
                        server.name,
                        server.is_running(),
                        server.is_frozen(),
                        server.log_tail(40)
                    );
                }
                bail!("no agreed JetStream meta leader within {NATS_WAIT:?}:\n{report}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What each server sees as meta leader (`Ok(None)` for a killed or frozen one).
    async fn seen_meta_leaders(&self) -> Vec<anyhow::Result<Option<String>>> {
        let mut seen = Vec::with_capacity(self.servers.len());
        for server in &self.servers {
            if server.is_responsive() {
                seen.push(server.seen_meta_leader().await);
            } else {
                seen.push(Ok(None));
            }
        }
        seen
    }

    /// The index of the leader all responsive servers name, if they agree on a responsive one.
    fn agreed_leader(&self, seen: &[anyhow::Result<Option<String>>]) -> Option<usize> {
        let mut agreed: Option<&str> = None;
        for (server, seen) in self.servers.iter().zip(seen) {
            if !server.is_responsive() {
                continue;
            }
            let leader = seen.as_ref().ok()?.as_deref()?;
            if agreed.is_some_and(|a| a != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        let i = self.servers.iter().position(|s| Some(s.name()) == agreed)?;
        self.servers[i].is_responsive().then_some(i)
    }
}

/// Locks a mutex, ignoring poisoning: a panicking test must still be able to kill servers.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
