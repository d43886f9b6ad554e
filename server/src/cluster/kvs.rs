//! Small records of the cluster's key-value bucket that every node must agree on: trash times,
//! token revocations, refused update hashes and the awareness clock offset reservation. Each
//! change is a compare-and-set, so two nodes changing one record never lose either change.

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::cluster::names;

/// Tries of a compare-and-set before giving up.
const TRIES: usize = 10;

/// Creates `key` with `value`; keeps what is there if it exists.
pub(crate) async fn create_or_keep(
    docs: &kv::Store,
    key: &str,
    value: Bytes,
) -> Result<(), String> {
    if number_or_text(docs, key).await?.is_some() {
        return Ok(());
    }
    match docs.create(key, value).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), kv::CreateErrorKind::AlreadyExists) => Ok(()),
        Err(e) => Err(format!("writing {key} to NATS failed: {e}")),
    }
}

async fn number_or_text(docs: &kv::Store, key: &str) -> Result<Option<(Bytes, u64)>, String> {
    let entry = docs
        .entry(key)
        .await
        .map_err(|e| format!("reading {key} from NATS failed: {e}"))?;
    Ok(entry
        .filter(|e| !e.value.is_empty() && e.operation == kv::Operation::Put)
        .map(|e| (e.value, e.revision)))
}

/// The number stored at `key`, if any.
pub(crate) async fn number(docs: &kv::Store, key: &str) -> Result<Option<u64>, String> {
    Ok(number_or_text(docs, key)
        .await?
        .and_then(|(v, _)| std::str::from_utf8(&v).ok()?.parse().ok()))
}

/// Removes `key`; whether it was there.
pub(crate) async fn take(docs: &kv::Store, key: &str) -> Result<bool, String> {
    let had = number_or_text(docs, key).await?.is_some();
    if had {
        docs.purge(key)
            .await
            .map_err(|e| format!("removing {key} from NATS failed: {e}"))?;
    }
    Ok(had)
}

/// Every key starting with `prefix` (a document key) and its number, sorted by document.
pub(crate) async fn numbers(docs: &kv::Store, prefix: &str) -> Result<Vec<(String, u64)>, String> {
    let keys = all_keys(docs).await?;
    let mut out = Vec::new();
    for key in keys.iter().filter(|k| k.starts_with(prefix)) {
        let Some(doc) = names::unhex(&key[prefix.len()..]) else {
            continue;
        };
        if let Some(n) = number(docs, key).await? {
            out.push((doc.to_string(), n));
        }
    }
    out.sort();
    Ok(out)
}

/// Every key of the bucket.
pub(crate) async fn all_keys(docs: &kv::Store) -> Result<Vec<String>, String> {
    docs.keys()
        .await
        .map_err(|e| format!("listing NATS keys failed: {e}"))?
        .try_collect()
        .await
        .map_err(|e| format!("listing NATS keys failed: {e}"))
}

/// Every refused update hash.
pub(crate) async fn refused(docs: &kv::Store) -> Result<Vec<[u8; 32]>, String> {
    let keys = all_keys(docs).await?;
    Ok(keys
        .iter()
        .filter_map(|k| {
            let bytes = names::hex_bytes(k.strip_prefix("refused.")?)?;
            bytes.try_into().ok()
        })
        .collect())
}

/// Changes the number at `key` (0 when absent) with `f` by compare-and-set; returns the old one.
async fn change(docs: &kv::Store, key: &str, f: impl Fn(u64) -> u64) -> Result<u64, String> {
    let mut last = String::new();
    for _ in 0..TRIES {
        let current = number_or_text(docs, key).await?;
        let old = current
            .as_ref()
            .and_then(|(v, _)| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        let new = Bytes::from(f(old).to_string());
        let written = match current {
            Some((_, rev)) => docs
                .update(key, new, rev)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => docs
                .create(key, new)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => return Ok(old),
            Err(e) => last = e,
        }
    }
    Err(format!("{key} kept changing under this node: {last}"))
}

/// Raises the number at `key` to at least `to`; returns the old one.
pub(crate) async fn raise(docs: &kv::Store, key: &str, to: u64) -> Result<u64, String> {
    change(docs, key, |old| old.max(to)).await
}

/// Adds `n` to the number at `key`; returns the old one.
pub(crate) async fn add(docs: &kv::Store, key: &str, n: u64) -> Result<u64, String> {
    change(docs, key, |old| old.saturating_add(n)).await
}
