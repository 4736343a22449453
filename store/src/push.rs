//! Push notifications in JetStream: registrations, notification settings, pending-burst markers, the job queue and dead letters.

use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use schemas::{PushJob, PushRegistrationRecord, SilenceRecord, Timestamp};
use subjects::{Id, Provisioning, StorageSettings};

use crate::error::{from_nats, StoreError};
use crate::kv_listing::list_entries;

/// Handles to everything push; cheap to clone. Gateways, fanout and push workers all provision it.
#[derive(Clone)]
pub struct PushStorage {
    pub jetstream: jetstream::Context,
    pub devices: kv::Store,
    pub settings: kv::Store,
    pub pending: kv::Store,
    client: async_nats::Client,
}

/// What a user silenced for one conversation at one moment: a mention still pushes through a mute, never through do-not-disturb.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Silence {
    pub do_not_disturb: bool,
    pub muted: bool,
}

impl Silence {
    /// Whether a message (a mention of the user, or not) may push.
    pub fn allows(self, mentioned: bool) -> bool {
        !self.do_not_disturb && (!self.muted || mentioned)
    }
}

/// A registration and the revision it was read at, so an invalid-token answer deletes only what it was sent to.
#[derive(Debug, Clone)]
pub struct VersionedRegistration {
    pub record: PushRegistrationRecord,
    pub revision: u64,
}

impl PushStorage {
    /// Creates or updates the job and dead-letter streams and the push buckets (safe from every process at every start), or opens the buckets only.
    pub async fn provision(client: async_nats::Client, settings: &StorageSettings) -> Result<PushStorage, StoreError> {
        let jetstream = jetstream::new(client.clone());
        if settings.provisioning == Provisioning::OpenExisting {
            let mut buckets = Vec::new();
            for config in subjects::push_bucket_configs(settings) {
                buckets.push(jetstream.get_key_value(&config.bucket).await.map_err(|error| crate::provision::not_provisioned(&config.bucket, error))?);
            }
            let [devices, settings, pending]: [kv::Store; 3] = buckets.try_into().map_err(|_| StoreError::internal("push buckets changed shape"))?;
            return Ok(PushStorage { jetstream, devices, settings, pending, client });
        }
        for config in [subjects::push_stream_config(settings), subjects::push_dead_letter_stream_config(settings)] {
            let name = config.name.clone();
            jetstream
                .create_or_update_stream(config)
                .await
                .map_err(|error| from_nats(&format!("failed to create or update stream {name}"), error))?;
        }
        let mut buckets = Vec::new();
        for config in subjects::push_bucket_configs(settings) {
            let name = config.bucket.clone();
            let bucket = jetstream
                .create_or_update_key_value(config)
                .await
                .map_err(|error| from_nats(&format!("failed to create or update bucket {name}"), error))?;
            buckets.push(bucket);
        }
        let [devices, settings, pending]: [kv::Store; 3] = buckets.try_into().map_err(|_| StoreError::internal("push buckets changed shape"))?;
        Ok(PushStorage { jetstream, devices, settings, pending, client })
    }

    pub async fn register(&self, user: &Id, device: &Id, record: &PushRegistrationRecord) -> Result<(), StoreError> {
        self.devices
            .put(subjects::push_device_key(user, device), record.to_bytes().into())
            .await
            .map_err(|error| from_nats("failed to store a push registration", error))?;
        Ok(())
    }

    pub async fn unregister(&self, user: &Id, device: &Id) -> Result<(), StoreError> {
        self.devices.delete(subjects::push_device_key(user, device)).await.map_err(|error| from_nats("failed to delete a push registration", error))
    }

    pub async fn registration(&self, user: &Id, device: &Id) -> Result<Option<VersionedRegistration>, StoreError> {
        let entry = self
            .devices
            .entry(subjects::push_device_key(user, device))
            .await
            .map_err(|error| from_nats("failed to read a push registration", error))?;
        let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let record = PushRegistrationRecord::from_bytes(&entry.value).map_err(StoreError::internal)?;
        Ok(Some(VersionedRegistration { record, revision: entry.revision }))
    }

    /// Deletes a registration the provider called invalid, unless the device registered again since (a new token).
    pub async fn forget_invalid_registration(&self, user: &Id, device: &Id, revision: u64) -> Result<bool, StoreError> {
        match self.devices.delete_expect_revision(subjects::push_device_key(user, device), Some(revision)).await {
            Ok(()) => Ok(true),
            Err(error) if error.to_string().to_lowercase().contains("wrong last sequence") => Ok(false),
            Err(error) => Err(from_nats("failed to delete an invalid push registration", error)),
        }
    }

    /// Every device of `user` with a registration, by device id; one batch get.
    pub async fn registrations_of(&self, user: &Id) -> Result<Vec<(Id, PushRegistrationRecord)>, StoreError> {
        let entries = list_entries(&self.client, &self.devices, &subjects::push_devices_of_user_filter(user)).await?;
        let mut registrations = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Some((_, device)) = subjects::parse_push_device_key(&key) else { continue };
            registrations.push((device, PushRegistrationRecord::from_bytes(&value).map_err(StoreError::internal)?));
        }
        Ok(registrations)
    }

    pub async fn set_conversation_mute(&self, user: &Id, conversation: &Id, until: Option<Timestamp>) -> Result<(), StoreError> {
        self.put_silence(subjects::conversation_mute_key(user, conversation), until).await
    }

    pub async fn set_do_not_disturb(&self, user: &Id, until: Option<Timestamp>) -> Result<(), StoreError> {
        self.put_silence(subjects::do_not_disturb_key(user), until).await
    }

    pub async fn do_not_disturb(&self, user: &Id) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.silence(subjects::do_not_disturb_key(user)).await?.and_then(|record| record.until))
    }

    /// Whether `user` wants no pushes for `conversation` at `now`: do-not-disturb or a mute in force.
    pub async fn is_silenced(&self, user: &Id, conversation: &Id, now: Timestamp) -> Result<bool, StoreError> {
        Ok(!self.silence_of(user, conversation, now).await?.allows(false))
    }

    /// Do-not-disturb and the conversation's mute at `now`, apart: they silence mentions differently.
    pub async fn silence_of(&self, user: &Id, conversation: &Id, now: Timestamp) -> Result<Silence, StoreError> {
        let (do_not_disturb, mute) =
            futures::try_join!(self.silence(subjects::do_not_disturb_key(user)), self.silence(subjects::conversation_mute_key(user, conversation)))?;
        let in_force = |record: Option<SilenceRecord>| record.is_some_and(|record| record.silences_at(now));
        Ok(Silence { do_not_disturb: in_force(do_not_disturb), muted: in_force(mute) })
    }

    async fn put_silence(&self, key: String, until: Option<Timestamp>) -> Result<(), StoreError> {
        let record = SilenceRecord { v: 1, until };
        self.settings.put(key, record.to_bytes().into()).await.map_err(|error| from_nats("failed to store notification settings", error))?;
        Ok(())
    }

    async fn silence(&self, key: String) -> Result<Option<SilenceRecord>, StoreError> {
        let entry = self.settings.entry(key).await.map_err(|error| from_nats("failed to read notification settings", error))?;
        match entry.filter(|entry| entry.operation == kv::Operation::Put) {
            Some(entry) => Ok(Some(SilenceRecord::from_bytes(&entry.value).map_err(StoreError::internal)?)),
            None => Ok(None),
        }
    }

    /// Marks a burst as waiting for its push. `false` when one already is: this message joins it.
    pub async fn begin_burst(&self, user: &Id, device: &Id, conversation: &Id) -> Result<bool, StoreError> {
        match self.pending.create(subjects::push_pending_key(user, device, conversation), bytes::Bytes::new()).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(from_nats("failed to mark a pending push", error)),
        }
    }

    /// Closes a burst: messages from now on start a new one (and a new push).
    pub async fn end_burst(&self, user: &Id, device: &Id, conversation: &Id) -> Result<(), StoreError> {
        self.pending
            .delete(subjects::push_pending_key(user, device, conversation))
            .await
            .map_err(|error| from_nats("failed to clear a pending push", error))
    }

    /// Queues a job and waits for JetStream to hold it. A redelivered log entry publishes the same
    /// `Nats-Msg-Id`, so a fanout retry does not queue the job twice. `request_id` names the send
    /// that began the burst, for the push worker's log lines.
    pub async fn enqueue(&self, job: &PushJob, user: &Id, device: &Id, conversation: &Id, request_id: Option<&str>) -> Result<(), StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("push:{user}:{device}:{conversation}:{}", job.seq).as_str());
        if let Some(request_id) = request_id {
            headers.insert(subjects::HEADER_REQUEST_ID, request_id);
        }
        self.jetstream
            .publish_with_headers(subjects::push_job_subject(user, device, conversation), headers, job.to_bytes().into())
            .await
            .map_err(|error| from_nats("failed to queue a push job", error))?
            .await
            .map_err(|error| from_nats("push job was not stored", error))?;
        Ok(())
    }

    /// Stores a job that failed its last attempt, with why and which provider, for an operator.
    pub async fn dead_letter(&self, job: &PushJob, provider: &str, reason: &str) -> Result<(), StoreError> {
        let ids = (Id::parse(&job.user), Id::parse(&job.device), Id::parse(&job.conversation_id));
        let (Ok(user), Ok(device), Ok(conversation)) = ids else {
            return Err(StoreError::Invalid("a push job with invalid ids cannot be dead-lettered".to_owned()));
        };
        let mut headers = HeaderMap::new();
        headers.insert(subjects::HEADER_PUSH_FAILURE_REASON, reason);
        headers.insert(subjects::HEADER_PUSH_PROVIDER, provider);
        self.jetstream
            .publish_with_headers(subjects::push_dead_letter_subject(&user, &device, &conversation), headers, job.to_bytes().into())
            .await
            .map_err(|error| from_nats("failed to dead-letter a push job", error))?
            .await
            .map_err(|error| from_nats("dead letter was not stored", error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(do_not_disturb: bool, muted: bool, mentioned: bool, expected: bool) {
        assert_eq!(Silence { do_not_disturb, muted }.allows(mentioned), expected, "dnd {do_not_disturb} muted {muted} mentioned {mentioned}");
    }

    #[test]
    fn a_mention_pushes_through_a_mute_but_not_through_do_not_disturb() {
        check(false, false, false, true);
        check(false, false, true, true);
        check(false, true, false, false);
        check(false, true, true, true);
        check(true, false, false, false);
        check(true, false, true, false);
        check(true, true, true, false);
    }
}
