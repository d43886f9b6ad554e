//! What the API does through one node of a cluster reaches the members on the others: a
//! notice, a new title, a move to the trash (their sockets close with 4410 and the room stops
//! writing), a token revocation (their sockets close with 4401). Real NATS server, two real
//! Weft nodes on real sockets.

use serde_json::json;
use weft_protocol::Control;
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::nats::{require_nats, NatsServer};
use weft_tests::{wait_until, Client, TestServer, WAIT};

const SECRET: &str = "cluster-secret-0123456789abcdef";

fn token(doc: Option<&str>, role: Access, sub: Option<&str>) -> anyhow::Result<String> {
    let secret: AuthSecret = SECRET.parse()?;
    let claims = Claims {
        scope: doc.map_or(Scope::AllDocs, |d| Scope::Doc(d.to_owned())),
        role,
        exp: unix_now() + 600,
        sub: sub.map(str::to_owned),
    };
    Ok(mint(&secret, &claims))
}

async fn node(nats: &NatsServer) -> anyhow::Result<TestServer> {
    let url = nats.url();
    let secret: AuthSecret = SECRET.parse()?;
    TestServer::start_with(move |c| {
        c.nats.urls = vec![url];
        c.auth_secret = Some(secret);
    })
    .await
}

/// A member of `doc` on `server` that opted in to control messages.
async fn member(server: &TestServer, doc: &str, user: &str) -> anyhow::Result<Client> {
    let t = token(Some(doc), Access::Write, Some(user))?;
    let c = Client::connect_synced(&format!("{}?token={t}", server.room_url(doc))).await?;
    c.send_control(Control::Hello { user: None })?;
    wait_until("welcomed", WAIT, || {
        c.controls()
            .iter()
            .any(|m| matches!(m, Control::Welcome { .. }))
    })
    .await?;
    Ok(c)
}

#[tokio::test]
async fn api_actions_reach_members_on_every_node() -> anyhow::Result<()> {
    let Some(_) = require_nats("cluster API") else {
        return Ok(());
    };
    let nats = NatsServer::start().await?;
    let (a, b) = (node(&nats).await?, node(&nats).await?);
    let http = reqwest::Client::new();
    let admin = token(None, Access::Admin, None)?;
    let api = |server: &TestServer, path: &str| format!("{}/api/docs{path}", server.http_base());
    http.post(api(&a, ""))
        .bearer_auth(&admin)
        .json(&json!({ "id": "plan", "text": "hello" }))
        .send()
        .await?
        .error_for_status()?;
    let on_b = member(&b, "plan", "bo").await?;
    assert_eq!(on_b.text(), "hello", "created on A, served by B");
    // A notice and a title set through A reach the member on B.
    http.post(api(&a, "/plan/notices"))
        .bearer_auth(&admin)
        .json(&json!({ "level": "info", "text": "Standup in 5" }))
        .send()
        .await?
        .error_for_status()?;
    http.patch(api(&a, "/plan"))
        .bearer_auth(&admin)
        .json(&json!({ "title": "The plan" }))
        .send()
        .await?
        .error_for_status()?;
    wait_until("the notice and the title to cross nodes", WAIT, || {
        let controls = on_b.controls();
        controls
            .iter()
            .any(|m| matches!(m, Control::Notice { text, .. } if text == "Standup in 5"))
            && controls
                .iter()
                .any(|m| matches!(m, Control::Title { title } if title == "The plan"))
    })
    .await?;
    // A revocation through A closes B's sockets admitted with an older token.
    let start = unix_now();
    wait_until("the next second", WAIT, || unix_now() > start).await?;
    http.post(api(&a, "/plan/revoke"))
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?;
    wait_until("B's member to be closed with 4401", WAIT, || {
        on_b.close_frame().is_some_and(|(code, _)| code == 4401)
    })
    .await?;
    // A move to the trash through A closes B's members with 4410 (with tokens minted after
    // the revocation).
    let admin = token(None, Access::Admin, None)?;
    let on_b = member(&b, "plan", "bo").await?;
    on_b.push(" world")?;
    wait_until("B's edit to reach A", WAIT, || {
        text_through(&a, "plan").is_some_and(|t| t == "hello world")
    })
    .await?;
    http.delete(api(&a, "/plan"))
        .bearer_auth(&admin)
        .send()
        .await?
        .error_for_status()?;
    wait_until("B's member to be closed with 4410", WAIT, || {
        on_b.close_frame().is_some_and(|(code, _)| code == 4410)
    })
    .await?;
    let gone = http
        .get(api(&b, "/plan/text"))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert_eq!(gone.status().as_u16(), 404, "in the trash on every node");
    Ok(())
}

/// The text of `doc` through `server`'s API (blocking, for use in polls).
fn text_through(server: &TestServer, doc: &str) -> Option<String> {
    let url = format!("{}/api/docs/{doc}/text", server.http_base());
    let admin = token(None, Access::Admin, None).ok()?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(admin)
                .send()
                .await
                .ok()?;
            r.text().await.ok()
        })
    })
    .join()
    .ok()
    .flatten()
}
