//! Version histories in a cluster: the [`HistoryBackend`] of [`NatsStore`](super::NatsStore),
//! shared by every node, so the History API answers the same through any of them.
//!
//! Layout, in the key-value bucket [`HISTORY_BUCKET`] (document ids as hex, see `names.rs`;
//! version ids zero-padded so keys sort as ids do):
//!
//! | key                          | value                                                  |
//! |------------------------------|--------------------------------------------------------|
//! | `v.{doc}.{id:020}`           | the version's metadata and where its body is (JSON)    |
//! | `b.{doc}.{id:020}.{nonce}`   | its body (deflated JSON), when small                   |
//! | `r.{doc}`                    | the document's recorder lease (see `lease.rs`)         |
//!
//! Larger bodies (keyframes of big documents) go to the object store `WEFT_VERSIONS` as
//! `{doc}.{id:020}.{nonce}`. Every body written gets a fresh nonce and the metadata names it,
//! so two nodes racing for one id never overwrite each other's body: a new version's metadata
//! is *created* (compare-and-set against nothing), and the node that loses removes its body.
//! Removed versions are purged from the bucket's stream rather than deleted, so no delete
//! markers pile up.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{kv, object_store};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use weft_protocol::RoomName;

use crate::cluster::buckets::HISTORY_BUCKET;
use crate::cluster::connect::Nats;
use crate::cluster::lease;
use crate::cluster::names::hex;
use crate::cluster::runtime::NatsRuntime;
use crate::store::history::{pack_body, unpack_body, HistoryBackend, VersionBody, VersionMeta};
use crate::store::{now_ms, StoreError};

/// Largest body kept in the bucket itself (also kept below half the servers' message limit).
const INLINE_MAX: usize = 128 * 1024;

/// Longest a history call waits for NATS.
const CALL_DEADLINE: Duration = Duration::from_secs(20);

/// Longest wait for the next version while listing a document's versions.
const READ_STALL: Duration = Duration::from_secs(5);

/// Where a version's body is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Where {
    /// Under this key of the bucket.
    #[serde(rename = "kv")]
    Kv(String),
    /// In this object of the object store.
    #[serde(rename = "obj")]
    Object(String),
}

/// A version's record in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    meta: VersionMeta,
    body: Where,
}

/// Key of version `id` of `doc`.
fn version_key(doc: &str, id: u64) -> String {
    format!("v.{}.{id:020}", hex(doc))
}

/// The stream subject of `key`.
fn subject(key: &str) -> String {
    format!("$KV.{HISTORY_BUCKET}.{key}")
}

/// A fresh suffix for a body's key or object name.
fn nonce() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(12);
    id
}

/// A NATS failure as the store's: unavailable for now.
fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what} failed: {e}").into())
}

/// The cluster's version histories as one node uses them.
pub(crate) struct NatsHistory {
    rt: Arc<NatsRuntime>,
    nats: Arc<Nats>,
}

impl NatsHistory {
    /// The history kept in the buckets of `nats`, called on `rt`.
    pub(crate) fn new(rt: Arc<NatsRuntime>, nats: Arc<Nats>) -> Self {
        Self { rt, nats }
    }

    /// Runs `f` on the NATS runtime and waits for it, within [`CALL_DEADLINE`].
    fn call<T, F>(&self, f: impl FnOnce(Arc<Nats>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.nats.reachable()?;
        match self.rt.call(CALL_DEADLINE, f(self.nats.clone())) {
            Ok(out) => out,
            Err(e) => Err(StoreError::Unavailable(e.to_string().into())),
        }
    }
}

impl HistoryBackend for NatsHistory {
    fn list(&self, doc: &RoomName) -> Result<Vec<VersionMeta>, StoreError> {
        let doc = doc.to_string();
        self.call(move |n| async move {
            let all = stored_versions(&n, &doc).await?;
            Ok(all.into_iter().map(|s| s.meta).collect())
        })
    }

    fn meta(&self, doc: &RoomName, id: u64) -> Result<Option<VersionMeta>, StoreError> {
        let doc = doc.to_string();
        self.call(move |n| async move { Ok(stored(&n, &doc, id).await?.map(|s| s.meta)) })
    }

    fn last(&self, doc: &RoomName) -> Result<Option<VersionMeta>, StoreError> {
        Ok(self.list(doc)?.pop())
    }

    fn body(&self, doc: &RoomName, id: u64) -> Result<Option<VersionBody>, StoreError> {
        let doc = doc.to_string();
        self.call(move |n| async move { body(&n, &doc, id).await })
    }

    fn put(
        &self,
        doc: &RoomName,
        meta: &VersionMeta,
        body: &VersionBody,
    ) -> Result<(), StoreError> {
        let (doc, meta, packed) = (
            doc.to_string(),
            meta.clone(),
            pack_body(doc.as_str(), body)?,
        );
        self.call(move |n| async move { put(&n, &doc, meta, packed).await })
    }

    fn create(
        &self,
        doc: &RoomName,
        meta: &VersionMeta,
        body: &VersionBody,
    ) -> Result<bool, StoreError> {
        let (doc, meta, packed) = (
            doc.to_string(),
            meta.clone(),
            pack_body(doc.as_str(), body)?,
        );
        self.call(move |n| async move { create(&n, &doc, meta, packed).await })
    }

    fn remove(&self, doc: &RoomName, id: u64) -> Result<(), StoreError> {
        let doc = doc.to_string();
        self.call(move |n| async move {
            let Some(old) = stored(&n, &doc, id).await? else {
                return Ok(());
            };
            purge(&n, subject(&version_key(&doc, id))).await?;
            drop_body(&n, &old.body).await;
            Ok(())
        })
    }

    fn delete_doc(&self, doc: &RoomName) -> Result<bool, StoreError> {
        let doc = doc.to_string();
        self.call(move |n| async move { delete_doc(&n, &doc).await })
    }

    #[cfg(any(test, feature = "bench-internals"))]
    fn stored_bytes(&self, doc: &RoomName) -> Result<u64, StoreError> {
        let doc = doc.to_string();
        self.call(move |n| async move {
            let mut total = 0u64;
            for s in stored_versions(&n, &doc).await? {
                total += encode(&doc, &s.meta, &s.body)?.len() as u64;
                total += read_body(&n, &s.body).await?.map_or(0, |b| b.len() as u64);
            }
            Ok(total)
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim(&self, doc: &RoomName, force: bool) -> Result<bool, StoreError> {
        let doc = doc.to_string();
        self.call(move |n| async move {
            lease::claim(&n.history.kv, &doc, &n.node, force, now_ms()).await
        })
    }

    fn release(&self, doc: &RoomName) -> Result<(), StoreError> {
        let doc = doc.to_string();
        self.call(move |n| async move { lease::release(&n.history.kv, &doc, &n.node).await })
    }
}

/// A version's record as stored.
fn encode(doc: &str, meta: &VersionMeta, body: &Where) -> Result<Bytes, StoreError> {
    let stored = Stored {
        meta: meta.clone(),
        body: body.clone(),
    };
    serde_json::to_vec(&stored)
        .map(Bytes::from)
        .map_err(|e| StoreError::corrupt(doc, e.to_string()))
}

/// A version's record read back.
fn decode(doc: &str, value: &[u8]) -> Result<Stored, StoreError> {
    serde_json::from_slice(value)
        .map_err(|e| StoreError::corrupt(doc, format!("version record: {e}")))
}

/// Version `id` of `doc` as stored, if it exists.
async fn stored(n: &Nats, doc: &str, id: u64) -> Result<Option<Stored>, StoreError> {
    let entry = n
        .history
        .kv
        .entry(version_key(doc, id))
        .await
        .map_err(|e| unavailable("reading a version", e))?;
    entry
        .filter(|e| e.operation == kv::Operation::Put && !e.value.is_empty())
        .map(|e| decode(doc, &e.value))
        .transpose()
}

/// Every version of `doc` as stored, by id: the newest record of each key, read through an
/// ordered consumer of the bucket's stream filtered to the document's versions.
async fn stored_versions(n: &Nats, doc: &str) -> Result<Vec<Stored>, StoreError> {
    let consumer = n
        .history
        .stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject(&format!("v.{}.*", hex(doc))),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("listing versions", e))?;
    let mut out: BTreeMap<u64, Stored> = BTreeMap::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable("listing versions", e))?;
    loop {
        let msg = match tokio::time::timeout(READ_STALL, messages.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => return Err(unavailable("listing versions", e)),
            Ok(None) => return Err(unavailable("listing versions", "the listing ended early")),
            Err(_) => return Err(unavailable("listing versions", "NATS stalled")),
        };
        let pending = msg
            .info()
            .map_err(|e| unavailable("listing versions", e))?
            .pending;
        // Delete markers have no payload; a key rewritten while listing comes again, newer.
        if !msg.payload.is_empty() {
            let s = decode(doc, &msg.payload)?;
            out.insert(s.meta.id, s);
        }
        if pending == 0 {
            return Ok(out.into_values().collect());
        }
    }
}

/// The body of version `id` of `doc`. A body replaced between reading the record and the body
/// (retention rewrites a version) is read again from the new record.
async fn body(n: &Nats, doc: &str, id: u64) -> Result<Option<VersionBody>, StoreError> {
    for _ in 0..3 {
        let Some(s) = stored(n, doc, id).await? else {
            return Ok(None);
        };
        if let Some(packed) = read_body(n, &s.body).await? {
            return unpack_body(doc, &packed).map(Some);
        }
    }
    Err(StoreError::corrupt(
        doc,
        format!("version {id} has no body"),
    ))
}

/// The bytes of a body, `None` if it is gone.
async fn read_body(n: &Nats, at: &Where) -> Result<Option<Vec<u8>>, StoreError> {
    match at {
        Where::Kv(key) => {
            let value = n
                .history
                .kv
                .get(key)
                .await
                .map_err(|e| unavailable("reading a version body", e))?;
            Ok(value.filter(|v| !v.is_empty()).map(|v| v.to_vec()))
        }
        Where::Object(name) => {
            let mut object = match n.history.bodies.get(name).await {
                Ok(object) => object,
                Err(e) if matches!(e.kind(), object_store::GetErrorKind::NotFound) => {
                    return Ok(None)
                }
                Err(e) => return Err(unavailable("reading a version body", e)),
            };
            let mut bytes = Vec::new();
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| unavailable("reading a version body", e))?;
            Ok(Some(bytes))
        }
    }
}

/// Writes a body of version `id` under a fresh name: in the bucket when small, else in the
/// object store.
async fn write_body(n: &Nats, doc: &str, id: u64, packed: Vec<u8>) -> Result<Where, StoreError> {
    let nonce = nonce();
    if packed.len() <= INLINE_MAX.min(n.max_payload / 2) {
        let key = format!("b.{}.{id:020}.{nonce}", hex(doc));
        n.history
            .kv
            .put(&key, Bytes::from(packed))
            .await
            .map_err(|e| unavailable("writing a version body", e))?;
        return Ok(Where::Kv(key));
    }
    let name = format!("{}.{id:020}.{nonce}", hex(doc));
    n.history
        .bodies
        .put(name.as_str(), &mut &packed[..])
        .await
        .map_err(|e| unavailable("writing a version body", e))?;
    Ok(Where::Object(name))
}

/// Removes a body no record names any more (best effort: a leftover only takes space).
async fn drop_body(n: &Nats, at: &Where) {
    let gone = match at {
        Where::Kv(key) => purge(n, subject(key)).await,
        Where::Object(name) => n
            .history
            .bodies
            .delete(name.as_str())
            .await
            .map_err(|e| unavailable("removing a version body", e)),
    };
    if let Err(e) = gone {
        tracing::warn!(error = %e, "a replaced version body stays behind");
    }
}

/// Removes every message of `filter` from the bucket's stream.
async fn purge(n: &Nats, filter: String) -> Result<(), StoreError> {
    n.history
        .stream
        .purge()
        .filter(filter)
        .await
        .map(|_| ())
        .map_err(|e| unavailable("removing versions", e))
}

/// Writes version `meta` of `doc`, replacing the one with its id; its old body goes after.
async fn put(n: &Nats, doc: &str, meta: VersionMeta, packed: Vec<u8>) -> Result<(), StoreError> {
    let old = stored(n, doc, meta.id).await?;
    let at = write_body(n, doc, meta.id, packed).await?;
    let value = encode(doc, &meta, &at)?;
    if let Err(e) = n.history.kv.put(version_key(doc, meta.id), value).await {
        drop_body(n, &at).await;
        return Err(unavailable("writing a version", e));
    }
    if let Some(old) = old {
        drop_body(n, &old.body).await;
    }
    Ok(())
}

/// Writes version `meta` of `doc` unless its id exists: `false` then, and the body written for
/// it is removed again.
async fn create(
    n: &Nats,
    doc: &str,
    meta: VersionMeta,
    packed: Vec<u8>,
) -> Result<bool, StoreError> {
    let at = write_body(n, doc, meta.id, packed).await?;
    let value = encode(doc, &meta, &at)?;
    match n.history.kv.create(version_key(doc, meta.id), value).await {
        Ok(_) => Ok(true),
        Err(e) => {
            drop_body(n, &at).await;
            if matches!(e.kind(), kv::CreateErrorKind::AlreadyExists) {
                Ok(false)
            } else {
                Err(unavailable("writing a version", e))
            }
        }
    }
}

/// Removes every version of `doc`, its bodies and its lease; whether it had any version.
async fn delete_doc(n: &Nats, doc: &str) -> Result<bool, StoreError> {
    let versions = stored_versions(n, doc).await?;
    let h = hex(doc);
    for filter in [format!("v.{h}.*"), format!("b.{h}.>"), format!("r.{h}")] {
        purge(n, subject(&filter)).await?;
    }
    for s in &versions {
        if let Where::Object(_) = s.body {
            drop_body(n, &s.body).await;
        }
    }
    Ok(!versions.is_empty())
}

/// The object holding the body of version `id` of `doc`, if its body is in the object store.
#[cfg(test)]
pub(crate) async fn stored_body_place(n: &Nats, doc: &str, id: u64) -> Option<String> {
    match stored(n, doc, id).await.ok()??.body {
        Where::Object(name) => Some(name),
        Where::Kv(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys sort as ids do, one document's keys never match another's filter, and a record
    /// round-trips with its body's place.
    #[test]
    fn keys_and_records() {
        assert!(version_key("a", 9) < version_key("a", 10));
        assert_eq!(version_key("a", 7), "v.61.00000000000000000007");
        assert!(!version_key("ab", 1).starts_with(&format!("v.{}.", hex("a"))));
        let meta = VersionMeta {
            id: 3,
            created_ms: 5,
            name: Some("draft".into()),
            authors: vec!["ada".into()],
            inserted: 1,
            deleted: 2,
            size: 3,
            seq: 4,
        };
        for at in [Where::Kv("b.61.x".into()), Where::Object("61.y".into())] {
            let value = encode("a", &meta, &at).expect("encode");
            let back = decode("a", &value).expect("decode");
            assert_eq!((back.meta, back.body), (meta.clone(), at));
        }
        assert!(decode("a", b"{").is_err());
        assert_ne!(nonce(), nonce());
    }
}
