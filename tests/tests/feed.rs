//! The change feed over HTTP: JSON pages and filters, the event shapes and authors, the
//! Server-Sent Events stream resuming across a restart without gaps or repeats, 410 for a
//! `since` older than what is kept, events owed across a SIGKILL, admin-only access; and
//! notices addressed to one user reaching all of that user's connections and nobody else's.

use std::time::Duration;

use anyhow::{bail, Context as _};
use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_protocol::Control;
use weft_server::token::{mint, unix_now, Access, AuthSecret, Claims, Scope};
use weft_tests::{wait_until, within, Client, TestServer, WeftProcess, WAIT};

/// Every event after `since`, following `next` until the feed has no more.
async fn events_after(base: &str, since: u64, query: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut since = since;
    loop {
        let page: Value = reqwest::get(format!("{base}/api/changes?since={since}{query}"))
            .await?
            .error_for_status()?
            .json()
            .await?;
        let events = page["events"].as_array().context("events")?.clone();
        let next = page["next"].as_u64().context("next")?;
        if events.is_empty() && next == since {
            return Ok(out);
        }
        out.extend(events);
        since = next;
    }
}

/// Polls the feed until `done` holds for its events (bounded by [`WAIT`]).
async fn feed_until(
    base: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = events_after(base, 0, "").await?;
        if done(&events) {
            return Ok(events);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what}; feed: {events:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn of<'a>(events: &'a [Value], doc: &str, kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["doc"] == doc && e["type"] == kind)
        .collect()
}

/// Creation, coalesced updates with the text's length, title and the writers' names, deletion;
/// seqs strictly increasing; paging and the per-document filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_describe_every_change_in_order() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.feed_debounce_ms = 100).await?;
    let base = server.http_base();
    let http = reqwest::Client::new();
    http.post(format!("{base}/api/docs"))
        .json(&json!({ "id": "notes", "text": "Shopping\nmilk" }))
        .send()
        .await?
        .error_for_status()?;
    let ada = Client::connect_synced(&server.room_url("notes")).await?;
    ada.send_control(Control::Hello {
        user: Some(weft_protocol::UserInfo {
            name: "Ada".into(),
            color: None,
        }),
    })?;
    for _ in 0..20 {
        ada.push("!")?;
    }
    ada.wait_acked().await?;
    let events = feed_until(&base, "Ada's edits", |ev| {
        of(ev, "notes", "document.updated")
            .last()
            .is_some_and(|e| e["text_length"] == 33)
    })
    .await?;
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs {seqs:?}");
    assert_eq!(events[0]["type"], "document.created");
    assert!(events[0]["at"].as_str().is_some_and(|a| a.ends_with('Z')));
    let updates = of(&events, "notes", "document.updated");
    // Twenty keystrokes in well under a debounce window are one or two events, not twenty.
    assert!(updates.len() <= 4, "not coalesced: {updates:#?}");
    let last = updates.last().context("an update")?;
    assert_eq!(last["title"], "Shopping");
    assert!(last["size"].as_u64().is_some_and(|s| s > 0));
    let named: Vec<&Value> = updates
        .iter()
        .filter(|u| {
            u["authors"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("Ada")))
        })
        .copied()
        .collect();
    assert!(!named.is_empty(), "Ada is not named: {updates:#?}");

    http.post(format!("{base}/api/docs"))
        .json(&json!({ "id": "other", "text": "x" }))
        .send()
        .await?
        .error_for_status()?;
    http.delete(format!("{base}/api/docs/notes"))
        .send()
        .await?
        .error_for_status()?;
    let events = feed_until(&base, "the deletion", |ev| {
        !of(ev, "notes", "document.deleted").is_empty()
            && !of(ev, "other", "document.updated").is_empty()
    })
    .await?;
    let last_of_notes = events.iter().rev().find(|e| e["doc"] == "notes");
    assert_eq!(
        last_of_notes.map(|e| e["type"].clone()),
        Some(json!("document.deleted")),
        "the deletion comes after every earlier change of the document"
    );
    let only_other = events_after(&base, 0, "&doc=other").await?;
    assert!(only_other.iter().all(|e| e["doc"] == "other"));
    assert_eq!(only_other.len(), 2, "{only_other:#?}");
    let page: Value = reqwest::get(format!("{base}/api/changes?since=0&limit=2"))
        .await?
        .json()
        .await?;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["next"], page["events"][1]["seq"]);
    Ok(())
}

/// Reads Server-Sent Events from `response` until `n` events arrived; returns `(id, type,
/// data)` of each.
async fn read_sse(
    response: &mut reqwest::Response,
    buf: &mut String,
    n: usize,
) -> anyhow::Result<Vec<(u64, String, Value)>> {
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if let Some(id) = id {
                out.push((id, kind, serde_json::from_str(&data)?));
            }
        }
        if out.len() >= n {
            break;
        }
        let chunk = within("an SSE chunk", WAIT, async {
            response.chunk().await.map_err(anyhow::Error::from)
        })
        .await?;
        match chunk {
            Some(bytes) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            None => bail!("the event stream ended after {} events", out.len()),
        }
    }
    Ok(out)
}

async fn append(base: &str, doc: &str, text: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .post(format!("{base}/api/docs/{doc}/append"))
        .header("content-type", "text/plain")
        .body(text.to_owned())
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// The event stream delivers live, and a client that reconnects with `Last-Event-ID` after the
/// server restarted gets exactly the events after the last one it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_across_a_restart_without_gaps_or_repeats() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.feed_debounce_ms = 20).await?;
    let base = server.http_base();
    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{base}/api/changes"))
        .header("accept", "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    assert!(stream.headers()["content-type"]
        .to_str()?
        .starts_with("text/event-stream"));
    for doc in ["a", "b", "c"] {
        http.post(format!("{base}/api/docs"))
            .json(&json!({ "id": doc, "text": doc }))
            .send()
            .await?
            .error_for_status()?;
    }
    let mut buf = String::new();
    let first = read_sse(&mut stream, &mut buf, 6).await?;
    let ids: Vec<u64> = first.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=6).collect::<Vec<_>>());
    for (id, kind, data) in &first {
        assert_eq!(data["seq"].as_u64(), Some(*id));
        assert_eq!(data["type"].as_str(), Some(kind.as_str()));
    }
    // The client saw four of them, then lost its connection and the server restarted.
    drop(stream);
    let (data, dir) = server.stop().await?;
    let server = TestServer::start_in(&data, |c| c.feed_debounce_ms = 20).await?;
    let base = server.http_base();
    append(&base, "a", " more").await?;
    let mut stream = http
        .get(format!("{base}/api/changes"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "4")
        .send()
        .await?
        .error_for_status()?;
    let mut buf = String::new();
    // After 4 come 5 and 6 (document c), the versions recorded at shutdown, then the edit.
    let mut resumed = Vec::new();
    while !resumed
        .iter()
        .any(|(_, kind, data): &(u64, String, Value)| {
            kind == "document.updated" && data["doc"] == "a" && data["text_length"] == 6
        })
    {
        if resumed.len() >= 20 {
            bail!("the edit after the restart never came: {resumed:#?}");
        }
        resumed.extend(read_sse(&mut stream, &mut buf, 1).await?);
    }
    let ids: Vec<u64> = resumed.iter().map(|e| e.0).collect();
    let expected: Vec<u64> = (5..5 + ids.len() as u64).collect();
    assert_eq!(ids, expected, "after 4, without gaps or repeats");
    assert!(resumed[..2]
        .iter()
        .all(|e| e.1 == "document.created" || e.1 == "document.updated"));
    drop(stream);
    drop(server);
    drop(dir);
    Ok(())
}

/// A `since` older than what `--feed-keep-days` keeps is answered 410 with the oldest seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_older_than_what_is_kept_is_410() -> anyhow::Result<()> {
    // 0.00001 days is under a second: everything but the newest event goes at the next prune.
    let server = TestServer::start_with(|c| {
        c.feed_debounce_ms = 10;
        c.feed_keep_days = 0.000_01;
    })
    .await?;
    let base = server.http_base();
    let http = reqwest::Client::new();
    for doc in ["a", "b"] {
        http.post(format!("{base}/api/docs"))
            .json(&json!({ "id": doc }))
            .send()
            .await?
            .error_for_status()?;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let gone = loop {
        let r = http
            .get(format!("{base}/api/changes?since=0"))
            .send()
            .await?;
        if r.status() == StatusCode::GONE {
            break r.json::<Value>().await?;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("never pruned: {}", r.text().await?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(gone["code"], "feed_expired");
    assert_eq!(gone["oldest"], 2, "{gone}");
    let kept: Value = http
        .get(format!("{base}/api/changes?since=1"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(kept["events"][0]["seq"], 2);
    Ok(())
}

/// An edit acknowledged just before a SIGKILL, inside its debounce window (its event not yet
/// recorded), still becomes an event after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_edit_killed_before_its_event_is_recorded_after_restart(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut weft = WeftProcess::spawn(dir.path(), &["--feed-debounce-ms", "60000"]).await?;
    let client = Client::connect_synced(&weft.room_url("crashy")).await?;
    client.push("saved before the crash")?;
    client.wait_acked().await?;
    weft.kill()?;
    drop(client);
    let weft = WeftProcess::spawn(dir.path(), &["--feed-debounce-ms", "10"]).await?;
    let base = weft.http_base();
    let events = feed_until(&base, "the owed events", |ev| {
        !of(ev, "crashy", "document.updated").is_empty()
    })
    .await?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["document.created", "document.updated"]);
    assert_eq!(events[1]["text_length"], 22);
    assert_eq!(events[1]["title"], "saved before the crash");
    Ok(())
}

/// With auth on, the feed needs an admin token for every document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_is_admin_only() -> anyhow::Result<()> {
    let secret: AuthSecret = "feed-secret-0123456789".parse()?;
    let s = secret.clone();
    let server = TestServer::start_with(move |c| c.auth_secret = Some(s)).await?;
    let token = |scope: Scope, role| {
        mint(
            &secret,
            &Claims {
                scope,
                role,
                exp: unix_now() + 600,
                sub: None,
            },
        )
    };
    let url = format!("{}/api/changes", server.http_base());
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(&url).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    for (scope, role) in [
        (Scope::AllDocs, Access::Write),
        (Scope::Doc("a".into()), Access::Admin),
    ] {
        let r = http
            .get(&url)
            .bearer_auth(token(scope, role))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let admin = token(Scope::AllDocs, Access::Admin);
    let r = http.get(&url).bearer_auth(&admin).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    Ok(())
}

/// A notice addressed to a user reaches every connection whose token names that user (two
/// tabs), and no other: not another user's, not a connection that only calls itself by that
/// name in its `hello`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_to_a_user_reaches_all_of_their_connections_and_only_those() -> anyhow::Result<()>
{
    let secret: AuthSecret = "notice-secret-0123456789".parse()?;
    let s = secret.clone();
    let server = TestServer::start_with(move |c| c.auth_secret = Some(s)).await?;
    let mint_for = |role, sub: Option<&str>| {
        mint(
            &secret,
            &Claims {
                scope: Scope::AllDocs,
                role,
                exp: unix_now() + 600,
                sub: sub.map(str::to_owned),
            },
        )
    };
    let admin = mint_for(Access::Admin, None);
    let http = reqwest::Client::new();
    let base = format!("{}/api/docs", server.http_base());
    http.post(&base)
        .bearer_auth(&admin)
        .json(&json!({ "id": "plan" }))
        .send()
        .await?
        .error_for_status()?;
    let join = |sub: Option<&str>| {
        let t = mint_for(Access::Write, sub);
        format!("{}?token={t}", server.room_url("plan"))
    };
    let ana_1 = Client::connect_synced(&join(Some("ana"))).await?;
    let ana_2 = Client::connect_synced(&join(Some("ana"))).await?;
    let bo = Client::connect_synced(&join(Some("bo"))).await?;
    let anonymous = Client::connect_synced(&join(None)).await?;
    let all = [&ana_1, &ana_2, &bo, &anonymous];
    for c in &all[..3] {
        c.send_control(Control::Hello { user: None })?;
    }
    anonymous.send_control(Control::Hello {
        user: Some(weft_protocol::UserInfo {
            name: "ana".into(),
            color: None,
        }),
    })?;
    wait_until("every connection welcomed", WAIT, || {
        all.iter().all(|c| {
            c.controls()
                .iter()
                .any(|m| matches!(m, Control::Welcome { .. }))
        })
    })
    .await?;
    let sent: Value = http
        .post(format!("{base}/plan/notices"))
        .bearer_auth(&admin)
        .json(&json!({ "level": "info", "text": "for Ana", "user": "ana" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(sent["delivered"], 2);
    let notices = |c: &Client| {
        c.controls()
            .into_iter()
            .filter(|m| matches!(m, Control::Notice { .. }))
            .count()
    };
    wait_until("both of Ana's tabs to get it", WAIT, || {
        notices(&ana_1) == 1 && notices(&ana_2) == 1
    })
    .await?;
    // A later room-wide notice reaches everyone: anything addressed to Ana alone that went to
    // the others would have arrived before it.
    http.post(format!("{base}/plan/notices"))
        .bearer_auth(&admin)
        .json(&json!({ "level": "info", "text": "for all" }))
        .send()
        .await?
        .error_for_status()?;
    wait_until("the room-wide notice", WAIT, || {
        notices(&bo) == 1 && notices(&anonymous) == 1 && notices(&ana_1) == 2
    })
    .await?;
    Ok(())
}

/// The feed's and the webhooks' routes are in the OpenAPI description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_routes_are_described() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let spec: Value = reqwest::get(format!("{}/api/openapi.json", server.http_base()))
        .await?
        .error_for_status()?
        .json()
        .await?;
    for (path, method) in [
        ("/api/changes", "get"),
        ("/api/webhooks", "get"),
        ("/api/webhooks/redeliver", "post"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    Ok(())
}

/// A version recorded on request and one recorded when editing goes quiet each give one
/// `version.created` with the version's number and who wrote since the previous version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_versions_are_announced() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| {
        c.feed_debounce_ms = 20;
        c.version_idle_secs = 1;
    })
    .await?;
    let base = server.http_base();
    let doc = "versioned";
    reqwest::Client::new()
        .post(format!("{base}/api/docs"))
        .json(&json!({ "id": doc, "text": "first draft" }))
        .send()
        .await?
        .error_for_status()?;
    let named: Value = reqwest::Client::new()
        .post(format!("{base}/api/docs/{doc}/versions"))
        .json(&json!({"name": "Draft"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let first = named["id"].as_u64().context("version id")?;
    append(&base, doc, ", then more").await?;
    let events = feed_until(&base, "two version.created events", |events| {
        of(events, doc, "version.created").len() >= 2
    })
    .await?;
    let versions = of(&events, doc, "version.created");
    assert_eq!(versions[0]["version"], first, "{versions:#?}");
    assert_eq!(
        versions[0]["authors"],
        json!(["anonymous"]),
        "{versions:#?}"
    );
    let second = versions[1]["version"].as_u64().context("second version")?;
    assert!(second > first, "{versions:#?}");
    // The versions the feed announced are the ones history lists.
    let listed: Value = reqwest::get(format!("{base}/api/docs/{doc}/versions"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ids: Vec<u64> = listed["versions"]
        .as_array()
        .context("versions")?
        .iter()
        .filter_map(|v| v["id"].as_u64())
        .collect();
    assert!(ids.contains(&first) && ids.contains(&second), "{ids:?}");
    Ok(())
}

/// Group-commit flushes since the server started, from `/metrics`.
async fn flushes(base: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|l| {
            let rest = l
                .strip_prefix("weft_flushes_total ")
                .or_else(|| l.strip_prefix("weft_flushes "))?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no weft_flushes sample in /metrics:\n{text}"))
}

/// In relaxed mode the feed's events ride on the store's periodic flush: ten documents edited
/// at once cost a flush per interval, not one per event handed over (which made a server of
/// 100 busy documents fsync 230 times a second), and every event still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_ride_on_the_periodic_flush() -> anyhow::Result<()> {
    const INTERVAL_MS: u64 = 1000;
    let server = TestServer::start_with(|c| {
        c.durability = weft_server::Durability::Relaxed;
        c.relaxed_flush_ms = INTERVAL_MS;
        c.feed_debounce_ms = 1;
    })
    .await?;
    let base = server.http_base();
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(Client::connect_synced(&server.room_url(&format!("busy-{i}"))).await?);
    }
    let before = flushes(&base).await?;
    let started = tokio::time::Instant::now();
    for round in 0..8 {
        for c in &clients {
            c.push(&format!("{round}"))?;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let events = feed_until(&base, "every document's last edit in the feed", |events| {
        (0..10).all(|i| {
            of(events, &format!("busy-{i}"), "document.updated")
                .last()
                .is_some_and(|e| e["text_length"] == 8)
        })
    })
    .await?;
    let handed_over = events.len();
    let spent = flushes(&base).await? - before;
    // One flush per interval that passed, and one for a tick already due when typing began.
    let ticks = (started.elapsed().as_millis() as f64 / INTERVAL_MS as f64).ceil() + 1.0;
    assert!(
        spent <= ticks,
        "{spent} flushes for {handed_over} events in {:?}: more than one per {INTERVAL_MS} ms",
        started.elapsed()
    );
    assert!(handed_over >= 20, "{handed_over} events: too few to tell");
    Ok(())
}
