//! A Rust program editing a Weft document with yrs (the Rust port of Yjs) over the y-websocket
//! protocol: sync, awareness, one transaction per edit, and the server's echo as the sign the
//! edit is stored. The code `docs/clients.md` explains; compiled with the tests, so it stays
//! in step with yrs.
//!
//! ```sh
//! cargo run -p weft-tests --example yrs_client -- ws://127.0.0.1:8080 my-notes "$T"
//! ```
//! (the token is optional: leave it out when the server runs without a secret).

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message as Ws;
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode as _;
use yrs::updates::encoder::Encode as _;
use yrs::{
    Doc, GetString as _, OffsetKind, Options, ReadTxn as _, Text as _, Transact as _, Update,
};

/// Weft's JSON control channel (`welcome`, `saved`, …): yrs reads it as `Message::Custom`.
const CONTROL: u8 = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    let doc_id = args.next().unwrap_or_else(|| "yrs-notes".into());
    let token = args.next();

    // UTF-16 offsets, like the browser editor and every JavaScript client; yrs counts UTF-8
    // bytes by default. Either works with the others: it only changes what `index` means here.
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let text = doc.get_or_insert_text("content");
    let mut awareness = Awareness::new(doc.clone());
    awareness.set_local_state(serde_json::json!({
        "user": { "name": "yrs-bot", "color": "#7c3aed" }
    }))?;

    // Document ids go into the path percent-encoded; the token as `?token=` (or an
    // `Authorization: Bearer` header).
    let mut url = format!("{base}/ws/{}", encode_path(&doc_id));
    if let Some(token) = token {
        url.push_str(&format!("?token={token}"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("connecting to {base}"))?;
    let (mut tx, mut rx) = ws.split();
    let send = |m: Message| Ws::binary(m.encode_v1());

    let sv = doc.transact().state_vector();
    tx.send(send(Message::Sync(SyncMessage::SyncStep1(sv))))
        .await?;
    tx.send(send(Message::Awareness(awareness.update()?)))
        .await?;

    // Until the server's sync step 2 arrives, the document is not complete.
    let mut sent: Option<Vec<u8>> = None;
    while let Some(frame) = rx.next().await {
        let bytes = match frame? {
            Ws::Binary(b) => b,
            Ws::Close(close) => bail!("the server closed the connection: {close:?}"),
            _ => continue,
        };
        match Message::decode_v1(&bytes)? {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let update = doc.transact().encode_state_as_update_v1(&sv);
                tx.send(send(Message::Sync(SyncMessage::SyncStep2(update))))
                    .await?;
            }
            Message::Sync(SyncMessage::SyncStep2(update)) => {
                doc.transact_mut()
                    .apply_update(Update::decode_v1(&update)?)?;
                println!("synced: {:?}", text.get_string(&doc.transact()));
                // One transaction per edit, however many changes it makes: one update, one
                // round trip, one version.
                let update = {
                    let mut txn = doc.transact_mut();
                    let end = text.len(&txn);
                    text.insert(&mut txn, end, "\nHello from yrs 👋");
                    txn.encode_update_v1()
                };
                tx.send(send(Message::Sync(SyncMessage::Update(update.clone()))))
                    .await?;
                sent = Some(update);
            }
            Message::Sync(SyncMessage::Update(update)) => {
                // The server echoes every update it accepted to its sender too, once it is on
                // disk (strict durability): our own bytes back mean the edit is stored.
                if sent.as_deref() == Some(update.as_slice()) {
                    println!("stored: {:?}", text.get_string(&doc.transact()));
                    break;
                }
                doc.transact_mut()
                    .apply_update(Update::decode_v1(&update)?)?;
            }
            Message::Awareness(update) => awareness.apply_update(update)?,
            Message::Custom(CONTROL, json) => {
                println!("control: {}", String::from_utf8_lossy(&json));
            }
            _ => {}
        }
    }
    // Leaving: tell the others our caret is gone, then close.
    awareness.clean_local_state();
    tx.send(send(Message::Awareness(awareness.update()?)))
        .await?;
    tx.close().await?;
    Ok(())
}

/// Percent-encodes a document id for a URL path (everything but unreserved characters).
fn encode_path(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
