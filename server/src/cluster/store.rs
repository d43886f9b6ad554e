//! [`NatsStore`]: the [`Store`] of a cluster node. Documents live in JetStream (see `docs.rs`
//! and `meta.rs`); appends go through the [`Publisher`] and a flush waits for JetStream's
//! acknowledgements. Trash, token revocations, refused hashes and the awareness clock offsets
//! live in the key-value bucket, so every node sees the same ones.
//!
//! NATS being away is not a failure of the store for good, as a broken disk is for sled: calls
//! fail with [`StoreError::Unavailable`] while it lasts, appends are kept and published once it
//! is back, and the store takes writes again by itself.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use bytes::Bytes;
use futures_util::StreamExt;
use weft_protocol::RoomName;

use crate::cluster::connect::{connection_lost, Nats};
use crate::cluster::history::NatsHistory;
use crate::cluster::meta::{self, Deltas, MetaRecord};
use crate::cluster::names::{self, meta_key};
use crate::cluster::publisher::Publisher;
use crate::cluster::runtime::NatsRuntime;
use crate::cluster::{docs, follow, kvs, nodes, peers};
use crate::store::history::HistoryStore;
use crate::store::log::Followed;
use crate::store::{now_ms, DocMeta, NodeStatus, PeerLink, Store, StoreError, StoredDoc};

/// Longest a read or a metadata write waits for NATS.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// How long a metadata record read from NATS is served from memory. Other nodes' changes (a
/// title, a count) show this much later; this node's own changes show at once.
const META_FRESH: Duration = Duration::from_secs(2);

/// Bytes of a published message kept for its subject and headers.
const UPDATE_HEADROOM: usize = 4096;

/// Records cached before stale ones are dropped.
const META_CACHE: usize = 4096;

/// The cluster's document store, as one node uses it.
pub(crate) struct NatsStore {
    rt: Arc<NatsRuntime>,
    nats: Arc<Nats>,
    publisher: Publisher,
    deltas: Arc<Deltas>,
    /// Documents known to have a metadata record; others get one before their first update
    /// is acknowledged.
    known: Mutex<HashSet<RoomName>>,
    /// Documents given their first update since the last flush.
    creating: Mutex<HashSet<RoomName>>,
    /// How long a flush may wait for acknowledgements.
    flush_deadline: Duration,
    /// Documents counted at the last listing (for metrics).
    count: AtomicU64,
    /// The nodes of the cluster, for the dashboard.
    nodes: Arc<nodes::Directory>,
    /// Metadata records read lately, and when.
    recent: Mutex<HashMap<RoomName, (Instant, Option<MetaRecord>)>>,
    /// The documents' version histories, in NATS too.
    history: HistoryStore,
    /// Node-local state flushed with every flush (the change feed's marks, so a mark is
    /// durable whenever the edits it stands for are acknowledged).
    local: OnceLock<sled::Tree>,
}

impl NatsStore {
    /// A store over the connection `nats` (made on `rt`), flushing within `flush_deadline`.
    pub(crate) fn new(rt: Arc<NatsRuntime>, nats: Arc<Nats>, flush_deadline: Duration) -> Self {
        let publisher = {
            let _entered = rt.handle().enter();
            Publisher::start(nats.clone())
        };
        let deltas = Arc::new(Deltas::default());
        rt.handle()
            .spawn(meta::write_deltas(nats.docs.clone(), deltas.clone()));
        let nodes = Arc::new(nodes::Directory::default());
        rt.handle().spawn(nodes::run(nats.clone(), nodes.clone()));
        let history = HistoryStore::with(NatsHistory::new(rt.clone(), nats.clone()));
        let store = Self {
            rt,
            nats,
            publisher,
            deltas,
            known: Mutex::default(),
            creating: Mutex::default(),
            flush_deadline,
            count: AtomicU64::new(0),
            nodes,
            recent: Mutex::default(),
            history,
            local: OnceLock::new(),
        };
        if let Ok(list) = store.list_untitled() {
            store.count.store(list.len() as u64, Ordering::Relaxed);
        }
        store
    }

    /// The largest update NATS takes (its `max_payload` less room for headers).
    pub(crate) fn max_update(&self) -> usize {
        self.nats.max_payload.saturating_sub(UPDATE_HEADROOM)
    }

    /// Makes every flush also flush `tree`'s database (the node's own sled store) first.
    pub(crate) fn flush_also(&self, tree: sled::Tree) {
        let _ = self.local.set(tree);
    }

    /// The runtime and the connection, for the cluster's other parts (the change feed).
    pub(super) fn parts(&self) -> (&Arc<NatsRuntime>, &Arc<Nats>) {
        (&self.rt, &self.nats)
    }

    /// Runs `f` on the NATS runtime and waits for it, within [`CALL_DEADLINE`].
    fn call<T, F>(&self, f: impl FnOnce(Arc<Nats>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        self.nats.reachable()?;
        let fut = f(self.nats.clone());
        match self.rt.call(CALL_DEADLINE, fut) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.into())),
            Err(e) => Err(StoreError::Unavailable(e.to_string().into())),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metadata of `doc` as stored plus this node's unwritten changes.
    /// Records read within [`META_FRESH`] are taken from a cache: the dashboard asks for
    /// every open document's title each second.
    fn record(&self, doc: &RoomName) -> Result<Option<MetaRecord>, StoreError> {
        let cached = Self::lock(&self.recent)
            .get(doc)
            .filter(|(at, _)| at.elapsed() < META_FRESH)
            .map(|(_, rec)| rec.clone());
        let stored = match cached {
            Some(rec) => rec,
            None => {
                let name = doc.to_string();
                let stored = self
                    .call(move |n| async move { meta::read(&n.docs, &name).await })?
                    .map(|(r, _)| r);
                // A document not there yet may be created any moment: only records are kept.
                if stored.is_some() {
                    let mut recent = Self::lock(&self.recent);
                    if recent.len() >= META_CACHE {
                        recent.retain(|_, (at, _)| at.elapsed() < META_FRESH);
                    }
                    recent.insert(doc.clone(), (Instant::now(), stored.clone()));
                }
                stored
            }
        };
        if stored.is_some() {
            Self::lock(&self.known).insert(doc.clone());
        }
        Ok(meta::with_delta(stored, self.deltas.get(doc)))
    }

    /// Forgets the cached record of `doc` (it was just changed here).
    fn forget_record(&self, doc: &RoomName) {
        Self::lock(&self.recent).remove(doc);
    }

    /// Changes `doc`'s record at once (compare-and-set), for what other nodes must see now.
    fn modify(
        &self,
        doc: &RoomName,
        f: impl Fn(&mut MetaRecord) + Send + 'static,
    ) -> Result<(), StoreError> {
        let name = doc.to_string();
        let done =
            self.call(move |n| async move { meta::modify(&n.docs, &name, f).await.map(|_| ()) });
        self.forget_record(doc);
        done?;
        Self::lock(&self.known).insert(doc.clone());
        Ok(())
    }

    /// Creates the records of documents first written since the last flush.
    async fn create_records(nats: &Nats, docs: Vec<RoomName>) -> Result<(), String> {
        for doc in docs {
            meta::modify(&nats.docs, doc.as_str(), |_| {}).await?;
        }
        Ok(())
    }
}

impl Store for NatsStore {
    fn load(&self, doc: &RoomName) -> Result<StoredDoc, StoreError> {
        let name = doc.clone();
        let stored = self.call(move |n| async move { docs::load(&n, &name).await })?;
        if stored.snapshot.is_some() || !stored.updates.is_empty() {
            Self::lock(&self.known).insert(doc.clone());
        }
        Ok(stored)
    }

    fn append(&self, doc: &RoomName, update: &[u8]) -> Result<u64, StoreError> {
        // Headers and subject ride in the same message: keep a margin below the server's limit.
        if update.len() > self.max_update() {
            return Err(StoreError::Unavailable(
                format!(
                    "an update of {} bytes is larger than NATS accepts (max_payload {}); raise \
                     max_payload in the nats-server configuration",
                    update.len(),
                    self.nats.max_payload
                )
                .into(),
            ));
        }
        if !Self::lock(&self.known).contains(doc) {
            Self::lock(&self.creating).insert(doc.clone());
            Self::lock(&self.known).insert(doc.clone());
        }
        self.publisher
            .append(names::log_subject(doc.as_str()), update)
            .map_err(|e| StoreError::Unavailable(e.to_string().into()))?;
        self.deltas.note(doc, |d| {
            d.appended += 1;
            d.bytes += update.len() as u64;
            d.updated_ms = now_ms();
        });
        // A cluster's log positions come from following it (see `cluster::follow`).
        Ok(0)
    }

    fn compact(
        &self,
        doc: &RoomName,
        snapshot: &[u8],
        upto_seq: u64,
        title: Option<&str>,
    ) -> Result<(), StoreError> {
        let (name, bytes) = (doc.to_string(), snapshot.to_vec());
        let won =
            self.call(move |n| async move { docs::compact(&n, &name, &bytes, upto_seq).await })?;
        let title = title.map(str::to_owned);
        self.deltas.note(doc, |d| {
            if won {
                d.size = Some(snapshot.len() as u64);
                d.bytes = 0;
            }
            if title.is_some() {
                d.title = title;
            }
        });
        Ok(())
    }

    fn quarantine(&self, doc: &RoomName, seq: u64, reason: &str) -> Result<(), StoreError> {
        tracing::error!(room = %doc, seq, reason, "removing an update that does not apply from the log");
        self.call(move |n| async move {
            n.log
                .delete_message(seq)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        self.modify(doc, |rec| rec.quarantined += 1)
    }

    fn set_title(&self, doc: &RoomName, title: &str) -> Result<(), StoreError> {
        let title = title.to_owned();
        self.deltas.note(doc, |d| d.title = Some(title));
        if !Self::lock(&self.known).contains(doc) {
            Self::lock(&self.creating).insert(doc.clone());
        }
        Ok(())
    }

    fn pin_title(&self, doc: &RoomName, title: &str) -> Result<(), StoreError> {
        let title = title.to_owned();
        self.modify(doc, move |rec| {
            rec.title = Some(title.clone());
            rec.title_pinned = true;
            rec.updated_ms = now_ms();
        })
    }

    fn meta(&self, doc: &RoomName) -> Result<Option<DocMeta>, StoreError> {
        Ok(self.record(doc)?.map(|r| r.to_meta(doc.as_str())))
    }

    fn list(&self) -> Result<Vec<DocMeta>, StoreError> {
        let records = self.call(|n| async move { list_records(&n).await })?;
        let list: Vec<DocMeta> = records
            .into_iter()
            .filter_map(|(doc, rec)| {
                let rec = meta::with_delta(Some(rec), self.deltas.get(&doc))?;
                Some(rec.to_meta(doc.as_str()))
            })
            .collect();
        self.count.store(list.len() as u64, Ordering::Relaxed);
        Ok(list)
    }

    fn doc_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn delete(&self, doc: &RoomName) -> Result<bool, StoreError> {
        let name = doc.to_string();
        let existed = self.call(move |n| async move { docs::delete(&n, &name).await });
        self.forget_record(doc);
        let existed = existed?;
        self.deltas.forget(doc);
        Self::lock(&self.known).remove(doc);
        Self::lock(&self.creating).remove(doc);
        Ok(existed)
    }

    fn refuse(&self, hash: &[u8; 32], reason: &str) -> Result<(), StoreError> {
        let (key, value) = (names::refused_key(hash), Bytes::from(reason.to_owned()));
        self.call(move |n| async move { kvs::create_or_keep(&n.docs, &key, value).await })
    }

    fn refused(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        self.call(|n| async move { kvs::refused(&n.docs).await })
    }

    fn flush(&self) -> Result<(), StoreError> {
        if let Some(local) = self.local.get() {
            local.flush()?;
        }
        let target = self.publisher.appended();
        let creating: Vec<RoomName> = Self::lock(&self.creating).drain().collect();
        let mut acked = self.publisher.acked();
        let n = self.nats.clone();
        let fut = async move {
            Self::create_records(&n, creating).await?;
            acked
                .wait_for(|a| *a >= target)
                .await
                .map(|_| ())
                .map_err(|_| "the NATS publisher stopped".to_owned())
        };
        match self.rt.call(self.flush_deadline, fut) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.into())),
            Err(_) => Err(StoreError::Unavailable(self.not_acknowledged().into())),
        }
    }

    fn health(&self) -> Result<(), StoreError> {
        if self.nats.client.connection_state() != State::Connected {
            return Err(connection_lost());
        }
        match self.publisher.failing() {
            Some((_, why)) => Err(StoreError::Unavailable(why.into())),
            None => Ok(()),
        }
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.health()?;
        let key = format!("probe.{}", names::hex(&self.nats.node));
        self.call(move |n| async move {
            n.docs
                .put(&key, Bytes::from_static(b"1"))
                .await
                .map_err(|e| e.to_string())?;
            n.docs.purge(&key).await.map_err(|e| e.to_string())
        })
    }

    fn revoke_tokens(&self, doc: &RoomName, before: u64) -> Result<(), StoreError> {
        let key = names::revoke_key(doc.as_str());
        let announce = Bytes::from(format!("{before}\n{doc}"));
        self.call(move |n| async move {
            kvs::raise(&n.docs, &key, before).await?;
            // Other nodes close their connections with such tokens at once; a node that misses
            // this reads the record at its next start.
            n.client
                .publish(names::REVOKED_SUBJECT, announce)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn revocations_elsewhere(&self) -> Option<tokio::sync::mpsc::Receiver<(String, u64)>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let client = self.nats.client.clone();
        self.rt.handle().spawn(async move {
            let Ok(mut sub) = client.subscribe(names::REVOKED_SUBJECT).await else {
                return;
            };
            while let Some(msg) = sub.next().await {
                let text = String::from_utf8_lossy(&msg.payload);
                let Some((before, doc)) = text.split_once('\n') else {
                    continue;
                };
                let Ok(before) = before.parse() else { continue };
                if tx.send((doc.to_owned(), before)).await.is_err() {
                    return;
                }
            }
        });
        Some(rx)
    }

    fn revocations(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(|n| async move { kvs::numbers(&n.docs, "revoke.").await })
    }

    fn move_to_trash(&self, doc: &RoomName, at_ms: u64) -> Result<(), StoreError> {
        let (key, value) = (
            names::trash_key(doc.as_str()),
            Bytes::from(at_ms.to_string()),
        );
        self.call(move |n| async move { kvs::create_or_keep(&n.docs, &key, value).await })
    }

    fn take_from_trash(&self, doc: &RoomName) -> Result<bool, StoreError> {
        let key = names::trash_key(doc.as_str());
        self.call(move |n| async move { kvs::take(&n.docs, &key).await })
    }

    fn trashed(&self, doc: &RoomName) -> Result<Option<u64>, StoreError> {
        let key = names::trash_key(doc.as_str());
        self.call(move |n| async move { kvs::number(&n.docs, &key).await })
    }

    fn trash(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(|n| async move { kvs::numbers(&n.docs, "trash.").await })
    }

    fn reserve_awareness_offsets(&self, count: u64) -> Result<u64, StoreError> {
        self.call(move |n| async move { kvs::add(&n.docs, names::OFFSETS_KEY, count).await })
    }

    fn follow(&self, doc: &RoomName, after: u64) -> Option<tokio::sync::mpsc::Receiver<Followed>> {
        Some(follow::follow(
            self.nats.clone(),
            self.rt.handle(),
            doc.clone(),
            after,
            self.publisher.appended() + 1,
        ))
    }

    fn cluster_nodes(&self, mine: NodeStatus) -> Option<Vec<NodeStatus>> {
        Some(self.nodes.update(mine))
    }

    fn peers(&self, doc: &RoomName) -> Option<PeerLink> {
        Some(peers::link(self.nats.clone(), self.rt.handle(), doc))
    }

    fn history(&self) -> Option<HistoryStore> {
        Some(self.history.clone())
    }
}

impl NatsStore {
    /// Writes this node's metadata changes (sizes, counts, automatic titles) to NATS now rather
    /// than within the next half second: for a command that exits right after its last write.
    pub(crate) fn write_metadata(&self) -> Result<(), StoreError> {
        let deltas = self.deltas.clone();
        self.call(move |n| async move { meta::write_pending(&n.docs, &deltas).await })
    }

    /// Sets `doc`'s creation and last-change times (Unix ms): a document moved here from
    /// another store keeps its own.
    pub(crate) fn set_times(
        &self,
        doc: &RoomName,
        created_ms: u64,
        updated_ms: u64,
    ) -> Result<(), StoreError> {
        self.modify(doc, move |rec| {
            rec.created_ms = created_ms;
            rec.updated_ms = updated_ms;
        })
    }

    /// Why a flush is not acknowledged: the publisher's last failure, or the plain timeout.
    fn not_acknowledged(&self) -> String {
        match self.publisher.failing() {
            Some((_, why)) => why,
            None => format!(
                "NATS did not acknowledge the edits within {:?}",
                self.flush_deadline
            ),
        }
    }
}

/// Every document's record, sorted by id.
async fn list_records(nats: &Nats) -> Result<Vec<(RoomName, MetaRecord)>, String> {
    let keys = kvs::all_keys(&nats.docs).await?;
    let docs = nats.docs.clone();
    let mut list: Vec<(RoomName, MetaRecord)> = futures_util::stream::iter(
        keys.into_iter()
            .filter_map(|k| names::unhex(k.strip_prefix("meta.")?)),
    )
    .map(|doc| {
        let docs = docs.clone();
        async move {
            let value = docs.get(meta_key(doc.as_str())).await.ok().flatten()?;
            Some((doc, MetaRecord::decode(&value)?))
        }
    })
    .buffer_unordered(32)
    .filter_map(|m| async move { m })
    .collect()
    .await;
    list.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    Ok(list)
}
