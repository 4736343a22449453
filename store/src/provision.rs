//! Creates or updates every stream and bucket from the definitions in `subjects`, idempotently, at start.

use async_nats::jetstream::{self, kv, stream::Stream};
use subjects::{Provisioning, StorageSettings};

use crate::error::{from_nats, StoreError};

/// Handles to every stream and bucket; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pub jetstream: jetstream::Context,
    pub messages: Stream,
    pub conversations: kv::Store,
    pub members: kv::Store,
    pub memberships: kv::Store,
    pub message_index: kv::Store,
    pub thread_index: kv::Store,
    pub message_state: kv::Store,
    pub mentions: kv::Store,
    pub client_msg_ids: kv::Store,
    pub receipts: kv::Store,
    pub multicast: kv::Store,
}

impl Storage {
    /// Creates or updates the layout (safe to run from every process at every start), or only
    /// opens it when `settings` say the layout belongs to the provisioner.
    pub async fn provision(jetstream: jetstream::Context, settings: &StorageSettings) -> Result<Storage, StoreError> {
        if settings.provisioning == Provisioning::OpenExisting {
            let messages = jetstream.get_stream(subjects::MESSAGE_STREAM).await.map_err(|error| not_provisioned(subjects::MESSAGE_STREAM, error))?;
            return Storage::open_buckets(jetstream, messages).await;
        }
        let messages = jetstream
            .create_or_update_stream(subjects::message_stream_config(settings))
            .await
            .map_err(|error| from_nats("failed to create or update the message stream", error))?;
        let name = messages.config.name.clone();
        let messages = jetstream.get_stream(&name).await.map_err(|error| from_nats("failed to open the message stream", error))?;
        for config in subjects::bucket_configs(settings) {
            let bucket = config.bucket.clone();
            jetstream
                .create_or_update_key_value(config)
                .await
                .map_err(|error| from_nats(&format!("failed to create or update bucket {bucket}"), error))?;
        }
        Storage::open_buckets(jetstream, messages).await
    }

    async fn open_buckets(jetstream: jetstream::Context, messages: Stream) -> Result<Storage, StoreError> {
        let open = |bucket: &'static str| {
            let jetstream = jetstream.clone();
            async move {
                jetstream.get_key_value(bucket).await.map_err(|error| not_provisioned(bucket, error))
            }
        };
        Ok(Storage {
            conversations: open(subjects::CONVERSATIONS_BUCKET).await?,
            members: open(subjects::MEMBERS_BUCKET).await?,
            memberships: open(subjects::MEMBERSHIPS_BUCKET).await?,
            message_index: open(subjects::MESSAGE_INDEX_BUCKET).await?,
            thread_index: open(subjects::THREAD_INDEX_BUCKET).await?,
            message_state: open(subjects::MESSAGE_STATE_BUCKET).await?,
            mentions: open(subjects::MENTIONS_BUCKET).await?,
            client_msg_ids: open(subjects::CLIENT_MSG_ID_BUCKET).await?,
            receipts: open(subjects::RECEIPTS_BUCKET).await?,
            multicast: open(subjects::MULTICAST_BUCKET).await?,
            messages,
            jetstream,
        })
    }
}

/// Every stream, bucket and object store, created or updated; what `natter provision` runs before
/// the roles start with their own NATS users.
pub async fn provision_layout(client: async_nats::Client, settings: &StorageSettings) -> Result<(), StoreError> {
    let settings = StorageSettings { provisioning: Provisioning::CreateOrUpdate, ..settings.clone() };
    let storage = Storage::provision(jetstream::new(client.clone()), &settings).await?;
    crate::SearchStorage::provision(&storage, &settings).await?;
    crate::MediaStorage::provision(client.clone(), &settings).await?;
    crate::PushStorage::provision(client, &settings).await?;
    Ok(())
}

/// Opening a missing stream or bucket names the fix.
pub(crate) fn not_provisioned(name: &str, error: impl std::fmt::Display + std::fmt::Debug) -> StoreError {
    from_nats(&format!("failed to open {name} (a role with its own NATS user only opens the layout: run `natter provision` first)"), error)
}
