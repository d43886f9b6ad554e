//! The NATS harness itself (`weft_tests::nats`) against the real `nats-server`: a lone server
//! starts with JetStream and the large payload limit, keeps a stream's messages across a
//! SIGKILL and restart, refuses clients without the credentials it was given, and answers
//! nothing while frozen; a cluster of three forms, replicates a stream to all three, elects a
//! new meta leader when the old one is killed or frozen, and takes it back.
//!
//! JetStream is driven through the plain NATS text protocol over TCP (a few lines below), so
//! this file needs no NATS client crate. Skips visibly without `nats-server`; fails under CI.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use weft_tests::nats::{
    read_info_line, require_nats, NatsAuth, NatsCluster, NatsServer, CLUSTER_NAME, MAX_PAYLOAD,
    NATS_WAIT,
};
use weft_tests::within;

const GROUP: &str = "NATS harness tests";

/// A minimal NATS client on the text protocol: enough for JetStream API requests and acked
/// publishes.
struct RawNats {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_sid: u64,
}

impl RawNats {
    /// Connects, reads INFO, sends CONNECT and waits for the PONG to its PING.
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::connect_as(addr, serde_json::json!({})).await
    }

    /// Like [`RawNats::connect`], with credentials (`user`/`pass`, `auth_token`) in CONNECT.
    async fn connect_as(addr: SocketAddr, credentials: serde_json::Value) -> anyhow::Result<Self> {
        let (read, writer) = TcpStream::connect(addr).await?.into_split();
        let mut me = Self {
            reader: BufReader::new(read),
            writer,
            next_sid: 1,
        };
        let info = me.line().await?;
        if !info.starts_with("INFO ") {
            bail!("expected INFO, got {info:?}");
        }
        let mut connect = serde_json::json!({
            "verbose": false, "headers": true, "no_responders": true, "protocol": 1,
        });
        if let (Some(connect), Some(credentials)) =
            (connect.as_object_mut(), credentials.as_object())
        {
            connect.extend(credentials.clone());
        }
        me.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
            .await?;
        loop {
            match me.line().await?.as_str() {
                "PONG" => return Ok(me),
                "+OK" => {}
                other => bail!("expected PONG after CONNECT, got {other:?}"),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes).await?;
        Ok(())
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            bail!("the NATS server closed the connection");
        }
        Ok(line.trim_end().to_owned())
    }

    /// Publishes `payload` to `subject` and returns the reply's payload; `None` when the
    /// server answers "no responders" (status 503: nothing serves that subject yet).
    async fn request(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let sid = self.next_sid;
        self.next_sid += 1;
        let inbox = format!("_INBOX.harness.{sid}");
        let head = format!(
            "SUB {inbox} {sid}\r\nUNSUB {sid} 1\r\nPUB {subject} {inbox} {}\r\n",
            payload.len()
        );
        self.send(head.as_bytes()).await?;
        self.send(payload).await?;
        self.send(b"\r\n").await?;
        loop {
            let line = self.line().await?;
            let words: Vec<&str> = line.split(' ').collect();
            match words.first().copied() {
                Some("PING") => self.send(b"PONG\r\n").await?,
                Some("+OK" | "PONG") => {}
                Some("MSG") if words.get(2) == Some(&sid.to_string().as_str()) => {
                    let len: usize = words.last().context("MSG size")?.parse()?;
                    return Ok(Some(self.body(len).await?));
                }
                Some("HMSG") if words.get(2) == Some(&sid.to_string().as_str()) => {
                    let n = words.len();
                    let head_len: usize = words[n - 2].parse()?;
                    let total: usize = words[n - 1].parse()?;
                    let body = self.body(total).await?;
                    let headers = String::from_utf8_lossy(&body[..head_len]).into_owned();
                    if headers.contains(" 503") {
                        return Ok(None);
                    }
                    return Ok(Some(body[head_len..].to_vec()));
                }
                _ => bail!("unexpected line from NATS: {line:?}"),
            }
        }
    }

    /// A message body of `len` bytes and its line end.
    async fn body(&mut self, len: usize) -> anyhow::Result<Vec<u8>> {
        let mut body = vec![0; len + 2];
        self.reader.read_exact(&mut body).await?;
        body.truncate(len);
        Ok(body)
    }

    /// A JetStream API request, retried while its responder is not there yet (a new stream's
    /// leader is still being elected); returns the JSON reply, failing on a JetStream error.
    async fn js(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + NATS_WAIT;
        loop {
            if let Some(reply) = self.request(subject, payload).await? {
                let json: serde_json::Value = serde_json::from_slice(&reply)
                    .with_context(|| format!("reply to {subject} is not JSON"))?;
                if json.get("error").is_some() {
                    bail!("{subject}: {json}");
                }
                return Ok(json);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{subject}: no responders for {NATS_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Creates stream `name` on subjects `<name>.>` with `replicas` file-backed replicas and
/// publishes `message` to it; returns the acked sequence.
async fn stream_with_one_message(
    addr: SocketAddr,
    name: &str,
    replicas: usize,
    message: &[u8],
) -> anyhow::Result<u64> {
    within(
        "creating a stream and publishing to it",
        NATS_WAIT * 2,
        async {
            let mut nats = RawNats::connect(addr).await?;
            let config = serde_json::json!({
                "name": name, "subjects": [format!("{name}.>")], "num_replicas": replicas,
                "storage": "file",
            });
            let created = nats
                .js(
                    &format!("$JS.API.STREAM.CREATE.{name}"),
                    config.to_string().as_bytes(),
                )
                .await?;
            assert_eq!(created["config"]["num_replicas"], replicas, "{created}");
            let ack = nats.js(&format!("{name}.one"), message).await?;
            assert_eq!(ack["stream"], name, "{ack}");
            ack["seq"].as_u64().context("publish ack without seq")
        },
    )
    .await
}

/// Polls the server's `/jsz` until it holds `streams` streams and `messages` messages.
async fn wait_jsz(server: &NatsServer, streams: u64, messages: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + NATS_WAIT;
    loop {
        let jsz = server.jsz().await;
        if let Ok(jsz) = &jsz {
            if jsz["streams"] == streams && jsz["messages"] == messages {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} did not report {streams} stream(s) and {messages} message(s) within \
                 {NATS_WAIT:?}; last /jsz: {jsz:?}; log tail:\n{}",
                server.name(),
                server.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that `server` answers with an INFO line that says JetStream is on, as configured.
async fn assert_info(server: &NatsServer) -> anyhow::Result<serde_json::Value> {
    let line = read_info_line(server.addr()).await?;
    assert!(line.starts_with("INFO {"), "first line: {line:?}");
    let info = server.info().await?;
    assert_eq!(info["jetstream"], true, "{info}");
    assert_eq!(info["max_payload"], MAX_PAYLOAD, "{info}");
    assert_eq!(info["server_name"], server.name(), "{info}");
    assert_eq!(info["port"], server.addr().port(), "{info}");
    Ok(info)
}

/// Waits until nothing accepts connections at `addr` any more.
async fn assert_refused(addr: SocketAddr) -> anyhow::Result<()> {
    within(
        "the killed server's port to refuse connections",
        NATS_WAIT,
        async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn a_server_starts_with_jetstream_and_answers_info() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let server = NatsServer::start().await?;
    assert_eq!(server.url(), format!("nats://{}", server.addr()));
    assert_info(&server).await?;
    let jsz = server.jsz().await?;
    let store = jsz["config"]["store_dir"].as_str().context("store_dir")?;
    assert!(
        store.starts_with(&*server.store_dir().to_string_lossy()),
        "JetStream stores in {store}, not under {}",
        server.store_dir().display()
    );
    assert!(server.log().contains("Server is ready"));
    Ok(())
}

#[tokio::test]
async fn a_killed_server_refuses_then_restarts_with_its_data() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let server = NatsServer::start().await?;
    let seq = stream_with_one_message(server.addr(), "KEPT", 1, b"hello").await?;
    assert_eq!(seq, 1);
    wait_jsz(&server, 1, 1).await?;

    server.kill()?;
    assert!(!server.is_running());
    assert_refused(server.addr()).await?;

    let url = server.url();
    server.restart().await?;
    assert!(server.is_running());
    assert_eq!(server.url(), url, "a restart keeps the port");
    assert_info(&server).await?;
    wait_jsz(&server, 1, 1).await?;
    // The log keeps both runs, for error messages.
    assert_eq!(server.log().matches("Server is ready").count(), 2);
    Ok(())
}

/// Connecting to `server` with `credentials` fails with an authorization error.
async fn assert_refused_as(server: &NatsServer, credentials: serde_json::Value) {
    let refused = RawNats::connect_as(server.addr(), credentials.clone()).await;
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("Authorization Violation"),
        "connecting with {credentials} was not refused for authorization: {err:?}"
    );
}

#[tokio::test]
async fn a_server_with_credentials_refuses_clients_without_them() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let auth = NatsAuth::UserPassword {
        user: "weft".into(),
        password: "s3cret \"quoted\"".into(),
    };
    let server = NatsServer::start_with_auth(auth).await?;
    assert_eq!(server.info().await?["auth_required"], true);
    assert_refused_as(&server, serde_json::json!({})).await;
    assert_refused_as(
        &server,
        serde_json::json!({"user": "weft", "pass": "wrong"}),
    )
    .await;
    let mut nats = RawNats::connect_as(
        server.addr(),
        serde_json::json!({"user": "weft", "pass": "s3cret \"quoted\""}),
    )
    .await?;
    nats.js("$JS.API.INFO", b"").await?;

    let server = NatsServer::start_with_auth(NatsAuth::Token("t0ken".into())).await?;
    assert_refused_as(&server, serde_json::json!({"auth_token": "other"})).await;
    RawNats::connect_as(server.addr(), serde_json::json!({"auth_token": "t0ken"})).await?;
    Ok(())
}

#[tokio::test]
async fn a_frozen_server_answers_nothing_until_thawed() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let server = NatsServer::start().await?;
    server.freeze()?;
    assert!(server.is_frozen() && server.is_running());
    // The kernel still completes TCP handshakes for it; the server itself says nothing.
    let silent = tokio::time::timeout(Duration::from_secs(1), read_info_line(server.addr())).await;
    assert!(silent.is_err(), "a frozen server answered: {silent:?}");
    server.thaw()?;
    assert!(!server.is_frozen());
    assert_info(&server).await?;
    Ok(())
}

#[tokio::test]
async fn a_cluster_of_three_forms_and_survives_losing_a_server() -> anyhow::Result<()> {
    if require_nats(GROUP).is_none() {
        return Ok(());
    }
    let cluster = NatsCluster::start(3).await?;
    assert_eq!(cluster.len(), 3);
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    assert_eq!(cluster.urls(), urls.join(","));
    let mut names = Vec::new();
    for i in 0..3 {
        let info = assert_info(cluster.server(i)).await?;
        assert_eq!(info["cluster"], CLUSTER_NAME, "{info}");
        names.push(cluster.server(i).name().to_owned());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "distinct server names: {names:?}");

    // A stream with three replicas is only created when all three servers are in the
    // JetStream cluster, and then every server holds its message.
    stream_with_one_message(cluster.server(0).addr(), "SHARED", 3, b"x").await?;
    for i in 0..3 {
        wait_jsz(cluster.server(i), 1, 1).await?;
    }

    let leader = cluster.wait_meta_leader().await?;
    cluster.kill(leader)?;
    assert_refused(cluster.server(leader).addr()).await?;
    let next = cluster.wait_meta_leader().await?;
    assert_ne!(next, leader, "a running server leads after the leader died");

    cluster.restart(leader).await?;
    assert_info(cluster.server(leader)).await?;
    wait_jsz(cluster.server(leader), 1, 1).await?;

    // A frozen leader is replaced like a dead one, and rejoins once thawed.
    let leader = cluster.wait_meta_leader().await?;
    cluster.freeze(leader)?;
    let next = cluster.wait_meta_leader().await?;
    assert_ne!(
        next, leader,
        "a responsive server leads while the leader is frozen"
    );
    cluster.thaw(leader)?;
    // Agreement now includes the thawed server.
    cluster.wait_meta_leader().await?;
    assert_info(cluster.server(leader)).await?;
    Ok(())
}
