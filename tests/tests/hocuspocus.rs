//! `/hocuspocus` spoken by hand, byte for byte, against the real server: a provider's session
//! (token, sync, SyncStatus once durable) next to a y-websocket client, and the defined closes
//! for what a provider must not send, which harm no other client. The real providers are
//! exercised by the Node tests (`tests/interop/hocuspocus*.test.mjs`, run from `interop.rs`).

use anyhow::Context as _;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use weft_protocol::hocuspocus::{self, Body, Scope};
use weft_protocol::{Limits, Message};
use weft_tests::{Client, RawSocket, TestServer, WAIT};
use yrs::{Text, Transact};

/// A socket speaking the Hocuspocus framing.
struct Hocus {
    ws: RawSocket,
}

impl Hocus {
    async fn connect(server: &TestServer) -> anyhow::Result<Self> {
        let url = format!("ws://{}/hocuspocus", server.addr);
        Ok(Self {
            ws: RawSocket::connect(&url).await?,
        })
    }

    async fn send(&mut self, address: &str, body: &Body) -> anyhow::Result<()> {
        let frame = hocuspocus::encode(address, body);
        self.ws.send(WsMessage::Binary(frame.into())).await
    }

    async fn token(&mut self, address: &str, version: Option<&str>) -> anyhow::Result<()> {
        self.token_of(address, "", version).await
    }

    async fn token_of(
        &mut self,
        address: &str,
        token: &str,
        version: Option<&str>,
    ) -> anyhow::Result<()> {
        let body = Body::Token {
            token: token.to_owned(),
            provider_version: version.map(str::to_owned),
        };
        self.send(address, &body).await
    }

    /// The next message, decoded (a Ping has the address `""` and body [`Body::Ping`]).
    async fn next(&mut self) -> anyhow::Result<hocuspocus::Envelope> {
        let frame = self.ws.next_binary().await?;
        if frame.as_ref() == hocuspocus::PING {
            return Ok(hocuspocus::Envelope {
                address: String::new(),
                body: Body::Ping,
            });
        }
        Ok(hocuspocus::decode(&frame, &Limits::DEFAULT)?)
    }

    /// Reads until `want` matches a message under `address`; returns what came before it.
    async fn until(
        &mut self,
        address: &str,
        want: impl Fn(&Body) -> bool,
    ) -> anyhow::Result<Vec<Body>> {
        let mut before = Vec::new();
        loop {
            let env = self.next().await?;
            if env.address == address && want(&env.body) {
                return Ok(before);
            }
            before.push(env.body);
        }
    }

    async fn expect_close(&mut self) -> anyhow::Result<(u16, String)> {
        self.ws.expect_close().await
    }
}

/// A one-insert Yjs v1 update from a fresh client.
fn insert(text: &str) -> Vec<u8> {
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

fn sync(message: Message) -> Body {
    Body::Sync {
        message,
        reply: false,
    }
}

/// A provider's session, by hand: Authenticated, the server's own step 1 as a plain Sync
/// (never SyncReply), step 2 for the provider's step 1, SyncStatus 1 after its step 2 and its
/// update, which a y-websocket client of the same document receives.
#[tokio::test]
async fn a_provider_session_byte_for_byte() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let stock = Client::connect_synced(&server.room_url("by-hand")).await?;
    let mut h = Hocus::connect(&server).await?;
    h.token("by-hand", Some("4.8.0")).await?;
    let first = h.next().await?;
    assert_eq!(first.address, "by-hand");
    assert_eq!(first.body, Body::Authenticated(Scope::ReadWrite));
    h.until("by-hand", |b| {
        matches!(
            b,
            Body::Sync {
                message: Message::SyncStep1(_),
                reply: false
            }
        )
    })
    .await?;
    h.send("by-hand", &sync(Message::SyncStep1(vec![0])))
        .await?;
    h.until("by-hand", |b| {
        matches!(
            b,
            Body::Sync {
                message: Message::SyncStep2(_),
                reply: false
            }
        )
    })
    .await?;
    h.send("by-hand", &sync(Message::SyncStep2(vec![0, 0])))
        .await?;
    h.until("by-hand", |b| *b == Body::SyncStatus(true)).await?;
    let update = insert("from hocuspocus");
    h.send("by-hand", &sync(Message::Update(update.clone())))
        .await?;
    let before = h.until("by-hand", |b| *b == Body::SyncStatus(true)).await?;
    assert!(
        before.contains(&sync(Message::Update(update))),
        "the update comes back before its acknowledgement: {before:?}"
    );
    stock
        .wait_text("the Hocuspocus edit", |t| t == "from hocuspocus")
        .await?;
    Ok(())
}

/// Messages sent before the token wait for it; a provider that never authenticates is closed
/// at the handshake deadline (1008); one that floods before authenticating is closed (1008).
#[tokio::test]
async fn unauthenticated_sockets_are_bounded() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.handshake_secs = 1).await?;
    let mut early = Hocus::connect(&server).await?;
    early
        .send("early", &sync(Message::SyncStep1(vec![0])))
        .await?;
    early.token("early", None).await?;
    early.next().await?;
    early
        .until("early", |b| {
            matches!(
                b,
                Body::Sync {
                    message: Message::SyncStep2(_),
                    ..
                }
            )
        })
        .await
        .context("the queued step 1 is answered once authenticated")?;

    let mut silent = Hocus::connect(&server).await?;
    let (code, _) = silent.expect_close().await?;
    assert_eq!(code, 1008, "no document authenticated in time");

    let mut flood = Hocus::connect(&server).await?;
    for _ in 0..300 {
        if flood.send("flood", &Body::QueryAwareness).await.is_err() {
            break;
        }
    }
    let (code, reason) = flood.expect_close().await?;
    assert_eq!(code, 1008);
    assert!(reason.contains("waiting for authentication"), "{reason}");
    Ok(())
}

/// Undecodable bytes (1007), a text frame (1003) and BroadcastStateless (1008) close only the
/// socket that sent them; a y-websocket client and another provider on the document go on.
#[tokio::test]
async fn malformed_messages_close_only_their_socket() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let stock = Client::connect_synced(&server.room_url("shared")).await?;
    let mut good = Hocus::connect(&server).await?;
    good.token("shared", None).await?;
    good.next().await?;

    let cases: [(WsMessage, u16); 4] = [
        (
            WsMessage::Binary(vec![6, b's', b'h', b'a', b'r', b'e', b'd', 11].into()),
            1007,
        ),
        (WsMessage::Binary(vec![200, 1, 2].into()), 1007),
        (WsMessage::Text("hello".into()), 1003),
        (
            WsMessage::Binary(
                hocuspocus::encode("shared", &Body::BroadcastStateless("x".into())).into(),
            ),
            1008,
        ),
    ];
    for (frame, want) in cases {
        let mut bad = Hocus::connect(&server).await?;
        bad.token("shared", None).await?;
        bad.next().await?;
        bad.ws.send(frame).await?;
        let (code, reason) = bad.expect_close().await?;
        assert_eq!(code, want, "{reason}");
    }

    stock.push("still here")?;
    stock.wait_acked().await?;
    good.until("shared", |b| {
        matches!(
            b,
            Body::Sync {
                message: Message::Update(_),
                ..
            }
        )
    })
    .await
    .context("the other provider still receives updates")?;
    Ok(())
}

/// A document refused on a socket that serves another stays refused without closing the
/// socket: what its provider keeps sending is dropped, the other document goes on.
#[tokio::test]
async fn a_refused_document_does_not_close_a_shared_socket() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut h = Hocus::connect(&server).await?;
    h.token("fine", None).await?;
    h.until("fine", |b| *b == Body::Authenticated(Scope::ReadWrite))
        .await?;
    h.token("bad/name", None).await?;
    h.until("bad/name", |b| {
        *b == Body::PermissionDenied("invalid_document_name".into())
    })
    .await?;
    for _ in 0..300 {
        h.send("bad/name", &Body::QueryAwareness).await?;
    }
    h.send("fine", &sync(Message::Update(insert("ok")))).await?;
    h.until("fine", |b| *b == Body::SyncStatus(true)).await?;
    let text = reqwest::get(format!("{}/api/docs/fine/text", server.http_base()))
        .await?
        .text()
        .await?;
    assert_eq!(text, "ok");
    Ok(())
}

/// With tokens on, a document's token is watched like a y-websocket one: revoking the
/// document's tokens closes the socket with 4401 `token_revoked`, and an expired token closes
/// it with 4401 `token_expired`; a v3 provider (no version) and a v4 one alike.
#[tokio::test]
async fn revoked_and_expired_tokens_close_the_socket() -> anyhow::Result<()> {
    use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope as TokenScope};

    let secret: AuthSecret = "hocuspocus-secret-0123456789".parse()?;
    let for_server = secret.clone();
    let server = TestServer::start_with(move |c| c.auth_secret = Some(for_server)).await?;
    let token = |doc: Option<&str>, role, ttl| {
        let scope = doc.map_or(TokenScope::AllDocs, |d| TokenScope::Doc(d.to_owned()));
        let claims = Claims {
            scope,
            role,
            exp: unix_now() + ttl,
            sub: None,
        };
        mint(&secret, &claims)
    };
    let mut h = Hocus::connect(&server).await?;
    h.token_of("watched", &token(Some("watched"), Access::Write, 600), None)
        .await?;
    h.until("watched", |b| *b == Body::Authenticated(Scope::ReadWrite))
        .await?;
    h.send("watched", &sync(Message::Update(insert("x"))))
        .await?;
    h.until("watched", |b| *b == Body::SyncStatus(true)).await?;
    // A revocation covers tokens issued before its second.
    let start = unix_now();
    weft_tests::wait_until("the next second", WAIT, || unix_now() > start).await?;
    let revoked = reqwest::Client::new()
        .post(format!("{}/api/docs/watched/revoke", server.http_base()))
        .bearer_auth(token(None, Access::Admin, 600))
        .send()
        .await?;
    assert_eq!(revoked.status().as_u16(), 200);
    assert_eq!(h.expect_close().await?, (4401, "token_revoked".into()));

    let mut short = Hocus::connect(&server).await?;
    short
        .token_of(
            "brief",
            &token(Some("brief"), Access::Read, 2),
            Some("4.8.0"),
        )
        .await?;
    short
        .until("brief", |b| *b == Body::Authenticated(Scope::ReadOnly))
        .await?;
    assert_eq!(short.expect_close().await?, (4401, "token_expired".into()));
    Ok(())
}

/// Relaxed durability: the update is broadcast at once and its SyncStatus follows once the
/// flush lands, so `unsyncedChanges` still reaches 0.
#[tokio::test]
async fn relaxed_durability_still_acknowledges() -> anyhow::Result<()> {
    let server =
        TestServer::start_with(|c| c.durability = weft_server::Durability::Relaxed).await?;
    let mut h = Hocus::connect(&server).await?;
    h.token("relaxed", None).await?;
    h.next().await?;
    let update = insert("r");
    h.send("relaxed", &sync(Message::Update(update.clone())))
        .await?;
    let before = h.until("relaxed", |b| *b == Body::SyncStatus(true)).await?;
    assert!(
        before.contains(&sync(Message::Update(update))),
        "the broadcast comes before the acknowledgement: {before:?}"
    );
    Ok(())
}
