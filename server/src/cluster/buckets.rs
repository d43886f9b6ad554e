//! The cluster's key-value buckets and object stores that more than one part uses, created
//! here: a key-value bucket's stream with the settings such a bucket has (the client's own
//! bucket creation asks NATS 2.9 for account details it does not send), and the version
//! histories' bucket and object store.

use async_nats::jetstream::{self, kv, object_store, stream};

use crate::cluster::ClusterError;

/// The key-value bucket of version metadata, small bodies and recorder leases.
pub(crate) const HISTORY_BUCKET: &str = "WEFT_HISTORY";
/// The object store of large version bodies.
pub(crate) const BODY_OBJECTS: &str = "WEFT_VERSIONS";

/// The bucket and object store of the cluster's version histories.
pub(crate) struct HistoryBuckets {
    /// Metadata, small bodies, leases.
    pub(crate) kv: kv::Store,
    /// The bucket's stream: listing one document's versions, purging removed ones.
    pub(crate) stream: stream::Stream,
    /// Large bodies.
    pub(crate) bodies: object_store::ObjectStore,
}

/// Creates (or opens) the history bucket and object store with `replicas` replicas.
pub(crate) async fn history_buckets(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<HistoryBuckets, ClusterError> {
    let description = "Weft: version histories of documents, recorder leases";
    let (stream, kv) = kv_bucket(js, HISTORY_BUCKET, description, replicas).await?;
    let bodies = file_object_store(
        js,
        BODY_OBJECTS,
        "Weft: large version bodies (keyframes)",
        replicas,
    )
    .await?;
    Ok(HistoryBuckets { kv, stream, bodies })
}

/// Creates (or opens) the file-backed object store `bucket` with `replicas` replicas.
pub(crate) async fn file_object_store(
    js: &jetstream::Context,
    bucket: &'static str,
    description: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, ClusterError> {
    js.create_object_store(object_store::Config {
        bucket: bucket.into(),
        description: Some(description.into()),
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::setup(bucket, e))
}

/// Key-value bucket `bucket` and its stream. The stream is created here with the settings a
/// key-value bucket has (one value per key, rollups, direct gets): the client's own bucket
/// creation first asks for account details in a form NATS 2.9 does not answer.
pub(crate) async fn kv_bucket(
    js: &jetstream::Context,
    bucket: &'static str,
    description: &str,
    replicas: usize,
) -> Result<(stream::Stream, kv::Store), ClusterError> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::setup(bucket, e))?;
    let kv = js
        .get_key_value(bucket)
        .await
        .map_err(|e| ClusterError::setup(bucket, e))?;
    Ok((stream, kv))
}
