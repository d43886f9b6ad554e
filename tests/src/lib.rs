//! # weft-tests
//!
//! Black-box test support: start the real server in-process on `127.0.0.1:0` with a temporary
//! data directory ([`TestServer`]), and talk to it over real sockets with a Yjs peer built on
//! `weft-protocol` and yrs ([`Client`]) or with raw frames ([`RawSocket`]).
//!
//! Every wait is a bounded poll ([`wait_until`]) that fails with a message saying what it waited
//! for. [`proxy`] puts a WebSocket-blocking proxy in front of a server; [`nats`] starts real
//! NATS JetStream servers and clusters for the cluster tests.

pub mod nats;
pub mod proxy;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weft_protocol::{
    decode_frame, encode_sync, AwarenessEntry, AwarenessUpdate, Control, Limits, Message,
    SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE,
};
use weft_server::{Config, Server, Shutdown, Stats};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// Default deadline of a wait: generous, because CI machines are shared and slow.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` every 10 ms until it returns true, failing with `what` after `timeout`.
///
/// # Errors
/// When the deadline passes.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends the server's logs to the test output when `RUST_LOG` is set (off otherwise, so a
/// passing run stays quiet).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The real server, in-process, on an ephemeral loopback port with its own data directory.
///
/// It runs on its own thread and tokio runtime, like a separate process would: the test's
/// runtime ending cannot cut it off mid-flush, and dropping a `TestServer` shuts it down and
/// waits for it before the temporary directory is deleted.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory (kept alive by `_dir` unless given by the caller).
    pub data: PathBuf,
    shutdown: Shutdown,
    stats: Stats,
    done: Option<std::sync::mpsc::Receiver<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// How long a stopping server may take to close sockets and flush before a test gives up.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl TestServer {
    /// Starts a server with default settings and a fresh temporary data directory.
    ///
    /// # Errors
    /// When the store or the listener cannot be opened.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with a fresh temporary data directory, after `adjust` edits the config.
    ///
    /// # Errors
    /// When the store or the listener cannot be opened.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut s = Self::start_in(dir.path(), adjust).await?;
        s._dir = Some(dir);
        Ok(s)
    }

    /// Starts a server on an existing data directory (for restart tests).
    ///
    /// # Errors
    /// When the store or the listener cannot be opened.
    pub async fn start_in(data: &Path, adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), data, adjust).await
    }

    /// Starts a server on a given address and an existing data directory: a restart on the
    /// port the previous instance used, so clients that only know its URL (browser tabs) can
    /// reconnect. The previous instance must have stopped (its listener closed).
    ///
    /// # Errors
    /// When the store cannot be opened or the address cannot be bound.
    pub async fn start_on(
        addr: SocketAddr,
        data: &Path,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        init_logs();
        let mut config = Config::for_tests(data.to_path_buf());
        adjust(&mut config);
        let data = data.to_path_buf();
        // Opening may wait for a lock held by a server that is still stopping.
        let server = tokio::task::spawn_blocking(move || Server::open(config)).await??;
        let stats = server.stats();
        // std sets SO_REUSEADDR on Unix, so connections of the previous instance lingering in
        // TIME_WAIT do not block the bind.
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding {addr} for the restarted server"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let (done_tx, done) = std::sync::mpsc::channel();
        let stop = shutdown.clone();
        std::thread::Builder::new()
            .name(format!("weft-server-{}", addr.port()))
            .spawn(move || {
                let result = (|| {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        server.serve(listener, stop).await?;
                        anyhow::Ok(())
                    })
                })();
                let _ = done_tx.send(result);
            })?;
        Ok(Self {
            addr,
            data,
            shutdown,
            stats,
            done: Some(done),
            _dir: None,
        })
    }

    /// `ws://127.0.0.1:PORT/ws`, the `serverUrl` a y-websocket client is given.
    pub fn ws_base(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The server's live room counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The WebSocket URL of `room`.
    pub fn room_url(&self, room: &str) -> String {
        format!("{}/{}", self.ws_base(), room)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server gracefully and waits until it has flushed everything; keeps the data
    /// directory alive and returns it (with its guard) for a restart.
    ///
    /// # Errors
    /// When the server failed or did not stop in time.
    pub async fn stop(mut self) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
        self.shutdown.trigger();
        if let Some(done) = self.done.take() {
            tokio::task::spawn_blocking(move || done.recv_timeout(STOP_TIMEOUT))
                .await?
                .context("server did not stop within 30 s")??;
        }
        Ok((self.data.clone(), self._dir.take()))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        // Blocking here is deliberate: the data directory must outlive the server's last flush.
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(STOP_TIMEOUT);
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One edit of `content`, positions in the client doc's units (UTF-8 bytes).
#[derive(Debug, Clone)]
pub enum Edit {
    /// Insert the text at the position.
    Insert(u32, String),
    /// Delete this many units at the position.
    Delete(u32, u32),
}

/// What a [`Client`] has seen.
#[derive(Default)]
struct Seen {
    synced: bool,
    awareness: HashMap<u64, (u64, String)>,
    controls: Vec<Control>,
    close: Option<(u16, String)>,
    frames: u64,
    permission_denied: Vec<String>,
    /// Updates this client sent that the server has not echoed yet.
    unacked: HashMap<Vec<u8>, usize>,
}

/// A Yjs peer: its own yrs `Doc` synced with a room over a real WebSocket.
pub struct Client {
    doc: Doc,
    seen: Arc<Mutex<Seen>>,
    out: mpsc::UnboundedSender<WsMessage>,
    task: JoinHandle<()>,
}

impl Client {
    /// Connects to `url`, sends sync step 1 and starts applying what the server sends.
    ///
    /// # Errors
    /// When the WebSocket handshake fails.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let doc = Doc::new();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (out, rx) = mpsc::unbounded_channel();
        let sv = doc.transact().state_vector().encode_v1();
        out.send(WsMessage::binary(encode_sync(SYNC_STEP1, &sv)))?;
        let task = tokio::spawn(pump(ws, rx, doc.clone(), seen.clone(), out.clone()));
        Ok(Self {
            doc,
            seen,
            out,
            task,
        })
    }

    /// Connects and waits until the first sync step 2 has arrived.
    ///
    /// # Errors
    /// When the connection fails or sync does not complete in time.
    pub async fn connect_synced(url: &str) -> anyhow::Result<Self> {
        let c = Self::connect(url).await?;
        c.wait_synced().await?;
        Ok(c)
    }

    /// Waits until the server's sync step 2 has been applied.
    ///
    /// # Errors
    /// On timeout.
    pub async fn wait_synced(&self) -> anyhow::Result<()> {
        wait_until("sync step 2 from the server", WAIT, || self.seen().synced).await
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared text `content`.
    pub fn text(&self) -> String {
        let txt = self.doc.get_or_insert_text("content");
        let txn = self.doc.transact();
        txt.get_string(&txn)
    }

    /// Length of `content` in the doc's offset unit.
    pub fn len(&self) -> u32 {
        let txt = self.doc.get_or_insert_text("content");
        let txn = self.doc.transact();
        txt.len(&txn)
    }

    /// Whether `content` is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts `s` at `index` of `content` and sends the update.
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn insert(&self, index: u32, s: &str) -> anyhow::Result<()> {
        let txt = self.doc.get_or_insert_text("content");
        let update = {
            let mut txn = self.doc.transact_mut();
            txt.insert(&mut txn, index, s);
            txn.encode_update_v1()
        };
        self.send_update(update)
    }

    /// Appends `s` at the end of `content`.
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn push(&self, s: &str) -> anyhow::Result<()> {
        self.insert(self.len(), s)
    }

    /// Looks at `content` and edits it in one transaction, so no remote update can move the
    /// text between choosing a position and editing there. `choose` returns the edit or `None`.
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn edit(&self, choose: impl FnOnce(&str) -> Option<Edit>) -> anyhow::Result<bool> {
        let txt = self.doc.get_or_insert_text("content");
        let update = {
            let mut txn = self.doc.transact_mut();
            let current = txt.get_string(&txn);
            match choose(&current) {
                Some(Edit::Insert(at, s)) => txt.insert(&mut txn, at, &s),
                Some(Edit::Delete(at, len)) => txt.remove_range(&mut txn, at, len),
                None => return Ok(false),
            }
            txn.encode_update_v1()
        };
        self.send_update(update)?;
        Ok(true)
    }

    /// Removes `len` units at `index` of `content` and sends the update.
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn delete(&self, index: u32, len: u32) -> anyhow::Result<()> {
        let txt = self.doc.get_or_insert_text("content");
        let update = {
            let mut txn = self.doc.transact_mut();
            txt.remove_range(&mut txn, index, len);
            txn.encode_update_v1()
        };
        self.send_update(update)
    }

    /// Sends a local update and remembers it until the server echoes it back.
    fn send_update(&self, update: Vec<u8>) -> anyhow::Result<()> {
        let frame = encode_sync(SYNC_UPDATE, &update);
        *self.seen().unacked.entry(update).or_default() += 1;
        self.send_raw(frame)
    }

    /// Waits until the server has echoed every update this client sent. The server broadcasts
    /// an update only once it is applied (and, in strict durability, on disk).
    ///
    /// # Errors
    /// On timeout, with how many are still outstanding.
    pub async fn wait_acked(&self) -> anyhow::Result<()> {
        let r = wait_until("the server to echo every update sent", WAIT, || {
            self.seen().unacked.is_empty()
        })
        .await;
        r.with_context(|| format!("{} updates unacknowledged", self.seen().unacked.len()))
    }

    /// This peer's whole document as one Yjs v1 update (what it would send as sync step 2 to an
    /// empty peer), deletions included.
    pub fn full_state(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// This peer's Yjs client id.
    pub fn client_id(&self) -> u64 {
        self.doc.client_id().get()
    }

    /// Sends an awareness state for this client id with `clock`.
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn set_awareness(&self, clock: u64, state_json: &str) -> anyhow::Result<()> {
        self.send_awareness(self.client_id(), clock, state_json)
    }

    /// Sends an awareness entry for any client id (to test spoofing).
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn send_awareness(
        &self,
        client_id: u64,
        clock: u64,
        state_json: &str,
    ) -> anyhow::Result<()> {
        let update = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client_id,
                clock,
                state: state_json.to_owned(),
            }],
        };
        self.send_raw(Message::Awareness(update).encode())
    }

    /// Sends a control message.
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn send_control(&self, c: Control) -> anyhow::Result<()> {
        self.send_raw(Message::Control(c).encode())
    }

    /// Opts into the control channel (`hello`, without a user) and waits for the `welcome`.
    ///
    /// # Errors
    /// When the connection is gone or no welcome arrives in time.
    pub async fn hello(&self) -> anyhow::Result<()> {
        self.send_control(Control::Hello { user: None })?;
        wait_until("the server's welcome", WAIT, || {
            self.controls()
                .iter()
                .any(|c| matches!(c, Control::Welcome { .. }))
        })
        .await
    }

    /// Sends raw bytes as one binary frame.
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn send_raw(&self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.out
            .send(WsMessage::binary(frame))
            .map_err(|_| anyhow!("connection closed"))
    }

    /// Sends sync step 1 again mid-session (a resync).
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn resync(&self) -> anyhow::Result<()> {
        self.seen().synced = false;
        let sv = self.doc.transact().state_vector().encode_v1();
        self.send_raw(encode_sync(SYNC_STEP1, &sv))
    }

    /// The awareness state this peer knows for `client_id`, if live.
    pub fn awareness_of(&self, client_id: u64) -> Option<String> {
        self.seen()
            .awareness
            .get(&client_id)
            .map(|(_, s)| s.clone())
            .filter(|s| s != "null")
    }

    /// Control messages received so far.
    pub fn controls(&self) -> Vec<Control> {
        self.seen().controls.clone()
    }

    /// Auth permission-denied reasons received so far.
    pub fn permission_denied(&self) -> Vec<String> {
        self.seen().permission_denied.clone()
    }

    /// Frames received so far.
    pub fn frames_received(&self) -> u64 {
        self.seen().frames
    }

    /// The close code and reason, once the server has closed the connection.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        self.seen().close.clone()
    }

    /// Waits until `content` satisfies `pred`.
    ///
    /// # Errors
    /// On timeout, with the text seen last.
    pub async fn wait_text(&self, what: &str, pred: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let r = wait_until(what, WAIT, || pred(&self.text())).await;
        r.with_context(|| format!("text was {:?}", self.text()))
    }

    /// Waits for a close frame from the server and returns its code.
    ///
    /// # Errors
    /// On timeout.
    pub async fn wait_close(&self) -> anyhow::Result<(u16, String)> {
        wait_until("a close frame", WAIT, || self.seen().close.is_some()).await?;
        self.close_frame().context("close frame")
    }

    /// Whether the connection has ended (the server closed it or went away).
    pub fn is_disconnected(&self) -> bool {
        self.task.is_finished()
    }

    /// Closes the socket with a normal close handshake.
    pub async fn close(self) {
        let _ = self.out.send(WsMessage::Close(None));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.task.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops the TCP connection without a close frame, as a crashed tab or a lost network would.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Without this the pump would keep the socket open until the test's runtime ends.
        self.task.abort();
    }
}

async fn pump(
    ws: Ws,
    mut rx: mpsc::UnboundedReceiver<WsMessage>,
    doc: Doc,
    seen: Arc<Mutex<Seen>>,
    out: mpsc::UnboundedSender<WsMessage>,
) {
    let (mut sink, mut stream) = ws.split();
    let limits = Limits::DEFAULT;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                if sink.send(msg).await.is_err() { break; }
            }
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                match frame {
                    WsMessage::Binary(b) => {
                        let Ok(msgs) = decode_frame(&b, &limits) else { continue };
                        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                        s.frames += 1;
                        for m in msgs {
                            handle(&doc, &mut s, &out, m);
                        }
                    }
                    WsMessage::Close(cf) => {
                        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                        s.close = Some(cf.map(|c| (u16::from(c.code), c.reason.to_string()))
                            .unwrap_or((u16::from(CloseCode::Status), String::new())));
                    }
                    _ => {}
                }
            }
        }
    }
}

fn handle(doc: &Doc, s: &mut Seen, out: &mpsc::UnboundedSender<WsMessage>, m: Message) {
    match m {
        Message::SyncStep1(sv) => {
            if let Ok(sv) = StateVector::decode_v1(&sv) {
                let update = doc.transact().encode_state_as_update_v1(&sv);
                let _ = out.send(WsMessage::binary(encode_sync(SYNC_STEP2, &update)));
            }
        }
        Message::SyncStep2(u) => {
            apply(doc, &u);
            s.synced = true;
        }
        Message::Update(u) => {
            if let Some(n) = s.unacked.get_mut(&u) {
                *n -= 1;
                if *n == 0 {
                    s.unacked.remove(&u);
                }
            }
            apply(doc, &u);
        }
        Message::Awareness(a) => {
            for e in a.entries {
                s.awareness.insert(e.client_id, (e.clock, e.state));
            }
        }
        Message::Control(c) => s.controls.push(c),
        Message::PermissionDenied(r) => s.permission_denied.push(r),
        Message::QueryAwareness => {}
    }
}

fn apply(doc: &Doc, update: &[u8]) {
    if let Ok(update) = Update::decode_v1(update) {
        let _ = doc.transact_mut().apply_update(update);
    }
}

/// A bare WebSocket for sending hostile or hand-made frames and reading raw replies.
pub struct RawSocket {
    ws: Ws,
}

impl RawSocket {
    /// Connects to `url`.
    ///
    /// # Errors
    /// When the handshake fails.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { ws })
    }

    /// Sends one message.
    ///
    /// # Errors
    /// When the socket fails.
    pub async fn send(&mut self, msg: WsMessage) -> anyhow::Result<()> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// Reads until a close frame arrives (answering it) and returns its code and reason.
    ///
    /// # Errors
    /// When the stream ends without a close frame or nothing arrives within [`WAIT`].
    pub async fn expect_close(&mut self) -> anyhow::Result<(u16, String)> {
        let fut = async {
            while let Some(msg) = self.ws.next().await {
                if let WsMessage::Close(cf) = msg? {
                    let cf = cf.context("close frame without a code")?;
                    return Ok((u16::from(cf.code), cf.reason.to_string()));
                }
            }
            bail!("stream ended without a close frame")
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .context("no close frame")?
    }

    /// Reads the next binary frame and decodes it as y-websocket messages.
    ///
    /// # Errors
    /// On timeout, close or an undecodable frame.
    pub async fn next_messages(&mut self) -> anyhow::Result<Vec<Message>> {
        let frame = self.next_binary().await?;
        Ok(decode_frame(&frame, &Limits::DEFAULT)?)
    }

    /// Reads the next binary frame, skipping other frames.
    ///
    /// # Errors
    /// On timeout (after [`WAIT`]), a close frame or the end of the stream.
    pub async fn next_binary(&mut self) -> anyhow::Result<bytes::Bytes> {
        let fut = async {
            while let Some(msg) = self.ws.next().await {
                match msg? {
                    WsMessage::Binary(b) => return Ok(b),
                    WsMessage::Close(cf) => bail!("closed: {cf:?}"),
                    _ => {}
                }
            }
            bail!("stream ended")
        };
        tokio::time::timeout(WAIT, fut).await.context("no frame")?
    }

    /// Whether the stream has ended (after a close handshake) within `timeout`.
    pub async fn ends_within(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await
        .is_ok()
    }
}

/// Whether the `CI` environment variable is set to something non-empty: there a test group
/// whose tools are missing fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Says that a test group was skipped, and why, where the default `cargo test` output shows it.
/// The test harness swallows what a passing test prints with `println!` or `eprintln!`, so a
/// skip would read as a plain `ok`; this writes to the process's stderr directly.
pub fn report_skip(what: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {what}: {why}");
}

/// Runs `f` with a timeout, failing with `what`.
///
/// # Errors
/// On timeout or when `f` fails.
pub async fn within<T>(
    what: &str,
    timeout: Duration,
    f: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| anyhow!("timed out after {timeout:?}: {what}"))?
}

/// The path of the `weft` binary as this package builds it (`weft-under-test`, the same entry
/// point): `cargo test` builds it before any integration test of this package runs.
///
/// # Errors
/// When it is missing: the test binary was run without cargo building this package's binaries.
pub fn weft_binary() -> anyhow::Result<PathBuf> {
    let bin = profile_dir()?.join(format!("weft-under-test{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        bail!(
            "{} is missing: it is built by `cargo test -p weft-tests` (or `cargo build -p \
             weft-tests --bin weft-under-test`); run the tests through cargo",
            bin.display()
        );
    }
    Ok(bin)
}

/// The path of `weft-fault-injection`: the `weft` binary built with weft-server's
/// `fault-injection` feature, under its own name so the normal binary is never replaced by it.
/// `WEFT_FAULT_ABORT_ON_UPDATE_CONTAINING=<hex>` makes it abort when an update holding those
/// bytes reaches yrs.
///
/// # Errors
/// When cargo cannot build it.
pub fn weft_fault_injection_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_weft("weft-fault-injection", Some("fault-injection"))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `target/<profile>`, where cargo puts this test's binaries.
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .context("test binary is not under target/<profile>/deps")?
        .to_path_buf())
}

fn build_weft(bin: &str, feature: Option<&str>) -> anyhow::Result<PathBuf> {
    let profile_dir = profile_dir()?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "weft-server", "--bin", bin]);
    if let Some(feature) = feature {
        cmd.args(["--features", feature]);
    }
    if release {
        cmd.arg("--release");
    }
    // Shown past the harness's capture: the first run waits about a minute here, and a silent
    // minute reads as a hang.
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "building the {bin} binary with cargo for the crash tests (about a minute the first time)"
        );
    }
    let output = cmd
        .output()
        .context("running cargo to build the weft binary")?;
    if !output.status.success() {
        // The end of cargo's report says why (a compile error, an internal compiler error, a
        // full disk); without it a CI log shows only the exit status.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        bail!(
            "cargo build of the {bin} binary failed: {}\n{tail}",
            output.status
        );
    }
    let bin = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        bail!("{} missing after cargo build", bin.display());
    }
    Ok(bin)
}

/// The real `weft` binary running as a child process, for tests that kill it.
pub struct WeftProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    child: std::process::Child,
    log: Arc<Mutex<String>>,
}

impl WeftProcess {
    /// Starts `weft --bind 127.0.0.1:0 --data <data> <extra>` and waits until it listens.
    ///
    /// # Errors
    /// When it cannot start or exits before listening (its log is in the error).
    pub async fn spawn(data: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_bin(&weft_binary()?, data, extra, &[]).await
    }

    /// Starts `bin` (a `weft` build) like [`WeftProcess::spawn`], with extra environment
    /// variables.
    ///
    /// # Errors
    /// When it cannot start or exits before listening (its log is in the error).
    pub async fn spawn_bin(
        bin: &Path,
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut child = std::process::Command::new(bin)
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("WEFT_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting weft")?;
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let mut me = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(addr) = me.listening_addr() {
                me.addr = addr;
                return Ok(me);
            }
            if let Some(status) = me.child.try_wait()? {
                bail!(
                    "weft exited with {status} before listening; log:\n{}",
                    me.log()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "weft did not start listening within {WAIT:?}; log:\n{}",
                    me.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn listening_addr(&self) -> Option<SocketAddr> {
        let log = self.log();
        let rest = &log[log.find("open http://")? + "open http://".len()..];
        rest.split_whitespace().next()?.parse().ok()
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it has printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The WebSocket URL of `room`.
    pub fn room_url(&self, room: &str) -> String {
        format!("ws://{}/ws/{}", self.addr, room)
    }

    /// Kills it with SIGKILL, as a crash or the OOM killer would, and reaps it.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Waits (bounded) for it to exit on its own, as after a crash; returns its exit status.
    ///
    /// # Errors
    /// When it is still running after [`WAIT`].
    pub async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("weft still running after {WAIT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM and waits (bounded) for it to exit; returns its exit status.
    ///
    /// # Errors
    /// When it does not exit within [`WAIT`].
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.terminate_within(WAIT).await
    }
}

impl Drop for WeftProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `weft` binary with `args` to completion (for startup failures), returning its exit
/// status and everything it printed.
///
/// # Errors
/// When it cannot be started or does not exit within [`WAIT`].
pub async fn run_weft(
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<(std::process::ExitStatus, String)> {
    let bin = weft_binary()?;
    let child = tokio::process::Command::new(bin)
        .args(args)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, child)
        .await
        .context("weft did not exit")??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status, text))
}

/// What became of the updates a [`Client`] sent (see [`Client::wait_acked_or_closed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server echoed every update sent.
    Acked,
    /// The server closed the connection with this code and reason first.
    Closed(u16, String),
    /// The connection ended without a close frame first.
    Dropped,
}

impl Client {
    /// Waits until the server has echoed every update sent or the connection has ended,
    /// whichever comes first.
    ///
    /// # Errors
    /// When neither happens within `timeout`: the server neither saved nor refused the edits.
    pub async fn wait_acked_or_closed(&self, timeout: Duration) -> anyhow::Result<Outcome> {
        let mut outcome = None;
        wait_until(
            "an acknowledgement or the end of the connection",
            timeout,
            || {
                let seen = self.seen();
                outcome = if seen.unacked.is_empty() {
                    Some(Outcome::Acked)
                } else if let Some((code, reason)) = &seen.close {
                    Some(Outcome::Closed(*code, reason.clone()))
                } else if self.task.is_finished() {
                    Some(Outcome::Dropped)
                } else {
                    None
                };
                outcome.is_some()
            },
        )
        .await
        .with_context(|| format!("{} updates unacknowledged", self.seen().unacked.len()))?;
        outcome.context("wait ended without an outcome")
    }
}

impl WeftProcess {
    /// Sends SIGTERM and waits at most `timeout` for it to exit; returns its exit status.
    ///
    /// # Errors
    /// When it does not exit within `timeout` (its log is in the error).
    pub async fn terminate_within(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("sending SIGTERM")?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "weft did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Client {
    /// Inserts `s` at `index` of the shared text `name` (another one than `content`) and sends
    /// the update; [`Client::wait_acked`] waits for it like for any other.
    ///
    /// # Errors
    /// When the connection is gone.
    pub fn insert_into(&self, name: &str, index: u32, s: &str) -> anyhow::Result<()> {
        let txt = self.doc.get_or_insert_text(name);
        let update = {
            let mut txn = self.doc.transact_mut();
            txt.insert(&mut txn, index, s);
            txn.encode_update_v1()
        };
        self.send_update(update)
    }

    /// The shared text `name`.
    pub fn text_of(&self, name: &str) -> String {
        let txt = self.doc.get_or_insert_text(name);
        let txn = self.doc.transact();
        txt.get_string(&txn)
    }
}
