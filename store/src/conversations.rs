//! Direct and group conversations and their members, kept both ways in KV (conversation → members, user → conversations).

use std::sync::Arc;

use schemas::{Conversation, ConversationKind, ConversationRecord, Member, MemberRecord, Role};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use subjects::Id;

use crate::error::{from_nats, StoreError};
use crate::kv_listing::list_entries;
use crate::{MembershipCache, Storage};

/// Longest group title we store.
const MAX_TITLE_CHARS: usize = 200;
/// Members named when a group is created, beyond the owner.
const MAX_INITIAL_MEMBERS: usize = 1_000;

/// The one direct conversation between two users: the same id whichever side asks. The
/// end-to-end encrypted one is a second conversation beside the plain one, never a switch of it:
/// a conversation's encryption is fixed at creation, so no history is ever half plaintext.
pub fn direct_conversation_id(one: &Id, other: &Id, encrypted: bool) -> Id {
    let (low, high) = if one <= other { (one, other) } else { (other, one) };
    let mut hasher = Sha256::new();
    if encrypted {
        hasher.update(b"e2ee\0");
    }
    hasher.update(low.as_str().as_bytes());
    hasher.update([0u8]);
    hasher.update(high.as_str().as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    Id::parse(&format!("d-{hex}")).expect("hex ids are valid")
}

/// Caps that keep one user from growing a conversation, or someone's inbox, without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationLimits {
    /// Members of one group, the owner included.
    pub max_group_members: usize,
    /// Conversations one user belongs to; also bounds how many groups others can pull them into.
    pub max_conversations_per_user: usize,
}

impl Default for ConversationLimits {
    fn default() -> Self {
        ConversationLimits { max_group_members: 10_000, max_conversations_per_user: 10_000 }
    }
}

/// Membership listings run at once while checking the initial members of a new group.
const MEMBER_CHECK_CONCURRENCY: usize = 16;

pub struct Conversations {
    limits: ConversationLimits,
    pub(crate) client: async_nats::Client,
    pub(crate) storage: Storage,
    membership: Arc<MembershipCache>,
}

impl Conversations {
    pub fn new(client: async_nats::Client, storage: Storage, membership: Arc<MembershipCache>) -> Conversations {
        Conversations { limits: ConversationLimits::default(), client, storage, membership }
    }

    pub fn with_limits(mut self, limits: ConversationLimits) -> Conversations {
        self.limits = limits;
        self
    }

    /// `forbidden` when `user` already belongs to as many conversations as allowed.
    async fn require_room_for_another_conversation(&self, user: &Id) -> Result<(), StoreError> {
        let count = self.conversations_of(user).await?.len();
        if count >= self.limits.max_conversations_per_user {
            let limit = self.limits.max_conversations_per_user;
            return Err(StoreError::Forbidden(format!("{user} is in {count} conversations; the limit is {limit}")));
        }
        Ok(())
    }

    /// Whether `conversation` accepts only ciphertext; an unknown conversation is not encrypted
    /// (sends to it are refused by the membership check anyway).
    pub async fn is_encrypted(&self, conversation: &Id) -> Result<bool, StoreError> {
        Ok(self.storage.fixed_facts(conversation).await?.is_some_and(|facts| facts.encrypted))
    }

    pub async fn open_direct(&self, caller: &Id, other: &Id, encrypted: bool) -> Result<Conversation, StoreError> {
        if caller == other {
            return Err(StoreError::Invalid("a direct conversation needs two different users".to_owned()));
        }
        let id = direct_conversation_id(caller, other, encrypted);
        if let Some(existing) = self.read_record(&id).await? {
            if self.membership.role_of(&id, caller).await?.is_some() {
                return self.describe(existing).await;
            }
        }
        self.require_room_for_another_conversation(caller).await?;
        self.require_room_for_another_conversation(other).await?;
        let shard = self.storage.shard_for_new_conversation(&id).0;
        let record = ConversationRecord { v: 1, id: id.to_string(), kind: ConversationKind::Direct, title: None, owner: None, created_at: now(), encrypted, shard };
        // Members first, record last: a crash in between leaves nothing visible, and the retry completes it.
        self.put_member(&id, caller, Role::Member).await?;
        self.put_member(&id, other, Role::Member).await?;
        let record = self.create_record(record).await?;
        self.describe(record).await
    }

    pub async fn create_group(&self, owner: &Id, title: Option<String>, members: &[Id], encrypted: bool) -> Result<Conversation, StoreError> {
        let title = title.map(|title| title.trim().to_owned()).filter(|title| !title.is_empty());
        if title.as_ref().is_some_and(|title| title.chars().count() > MAX_TITLE_CHARS) {
            return Err(StoreError::Invalid(format!("title is longer than {MAX_TITLE_CHARS} characters")));
        }
        if members.len() > MAX_INITIAL_MEMBERS {
            return Err(StoreError::Invalid(format!("at most {MAX_INITIAL_MEMBERS} members at creation; add more afterwards")));
        }
        let distinct: std::collections::BTreeSet<&Id> = members.iter().chain(std::iter::once(owner)).collect();
        if distinct.len() > self.limits.max_group_members {
            return Err(StoreError::Invalid(format!("a group has at most {} members", self.limits.max_group_members)));
        }
        let users: Vec<Id> = distinct.into_iter().cloned().collect();
        futures::stream::iter(users)
            .map(|user| async move { self.require_room_for_another_conversation(&user).await })
            .buffer_unordered(MEMBER_CHECK_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let id = Id::parse(&format!("g-{}", ulid::Ulid::new())).expect("ulids are valid ids");
        self.put_member(&id, owner, Role::Owner).await?;
        for member in members.iter().filter(|member| *member != owner) {
            self.put_member(&id, member, Role::Member).await?;
        }
        let shard = self.storage.shard_for_new_conversation(&id).0;
        let record = ConversationRecord { v: 1, id: id.to_string(), kind: ConversationKind::Group, title, owner: Some(owner.to_string()), created_at: now(), encrypted, shard };
        let record = self.create_record(record).await?;
        self.describe(record).await
    }

    /// The conversation as its member `caller` sees it; `not_found` for everyone else, so ids cannot be probed.
    pub async fn get_for_member(&self, conversation: &Id, caller: &Id) -> Result<Conversation, StoreError> {
        let record = self.read_record(conversation).await?;
        match record {
            Some(record) if self.membership.role_of(conversation, caller).await?.is_some() => self.describe(record).await,
            _ => Err(StoreError::NotFound(format!("no conversation {conversation}"))),
        }
    }

    /// The owner adds someone to a group.
    pub async fn add_member(&self, conversation: &Id, actor: &Id, user: &Id) -> Result<Conversation, StoreError> {
        let record = self.get_for_member(conversation, actor).await?;
        if record.kind == ConversationKind::Direct {
            return Err(StoreError::Invalid("a direct conversation has exactly two members".to_owned()));
        }
        if self.membership.role_of(conversation, actor).await? != Some(Role::Owner) {
            return Err(StoreError::Forbidden("only the group's owner adds members".to_owned()));
        }
        if self.membership.role_of(conversation, user).await?.is_none() {
            let members = self.membership.members(conversation).await?.len();
            if members >= self.limits.max_group_members {
                return Err(StoreError::Forbidden(format!("{conversation} has {members} members; the limit is {}", self.limits.max_group_members)));
            }
            self.require_room_for_another_conversation(user).await?;
            self.put_member(conversation, user, Role::Member).await?;
        }
        self.get_for_member(conversation, actor).await
    }

    /// The owner removes a member, or a member leaves.
    pub async fn remove_member(&self, conversation: &Id, actor: &Id, user: &Id) -> Result<(), StoreError> {
        let record = self.get_for_member(conversation, actor).await?;
        if record.kind == ConversationKind::Direct {
            return Err(StoreError::Invalid("members cannot leave a direct conversation".to_owned()));
        }
        let actor_role = self.membership.role_of(conversation, actor).await?;
        if actor != user && actor_role != Some(Role::Owner) {
            return Err(StoreError::Forbidden("only the group's owner removes other members".to_owned()));
        }
        if self.membership.role_of(conversation, user).await?.is_none() {
            return Err(StoreError::NotFound(format!("{user} is not a member of {conversation}")));
        }
        // Conversation side first: that is what authorises reads and sends.
        self.storage
            .members
            .delete(subjects::member_key(conversation, user))
            .await
            .map_err(|error| from_nats("failed to remove member", error))?;
        self.storage
            .memberships
            .delete(subjects::membership_key(user, conversation))
            .await
            .map_err(|error| from_nats("failed to remove membership", error))?;
        self.membership.invalidate(conversation.clone());
        Ok(())
    }

    /// Ids of every conversation `user` belongs to.
    pub async fn conversations_of(&self, user: &Id) -> Result<Vec<Id>, StoreError> {
        let entries = list_entries(&self.client, &self.storage.memberships, &subjects::memberships_of_user_filter(user)).await?;
        Ok(entries.into_iter().filter_map(|(key, _)| subjects::parse_membership_key(&key).map(|(_, conversation)| conversation)).collect())
    }

    pub async fn read_record(&self, conversation: &Id) -> Result<Option<ConversationRecord>, StoreError> {
        let bytes = self.storage.conversations.get(conversation.as_str()).await.map_err(|error| from_nats("failed to read conversation", error))?;
        bytes.map(|bytes| ConversationRecord::from_bytes(&bytes).map_err(StoreError::internal)).transpose()
    }

    async fn create_record(&self, record: ConversationRecord) -> Result<ConversationRecord, StoreError> {
        match self.storage.conversations.create(&record.id, record.to_bytes().into()).await {
            Ok(_) => Ok(record),
            Err(error) if error.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                let id = Id::parse(&record.id).map_err(StoreError::internal)?;
                self.read_record(&id).await?.ok_or_else(|| StoreError::Internal("conversation vanished while being created".to_owned()))
            }
            Err(error) => Err(from_nats("failed to create conversation", error)),
        }
    }

    async fn put_member(&self, conversation: &Id, user: &Id, role: Role) -> Result<(), StoreError> {
        let record = MemberRecord { v: 1, role, joined_at: now() };
        self.storage
            .members
            .put(subjects::member_key(conversation, user), record.to_bytes().into())
            .await
            .map_err(|error| from_nats("failed to add member", error))?;
        self.storage
            .memberships
            .put(subjects::membership_key(user, conversation), record.to_bytes().into())
            .await
            .map_err(|error| from_nats("failed to add membership", error))?;
        self.membership.invalidate(conversation.clone());
        Ok(())
    }

    async fn describe(&self, record: ConversationRecord) -> Result<Conversation, StoreError> {
        let id = Id::parse(&record.id).map_err(StoreError::internal)?;
        let members = self.membership.members(&id).await?;
        Ok(Conversation {
            id: record.id,
            kind: record.kind,
            title: record.title,
            members: members.iter().map(|(user, role)| Member { user: user.to_string(), role: *role }).collect(),
            created_at: record.created_at,
            encrypted: record.encrypted,
        })
    }
}

fn now() -> schemas::Timestamp {
    time::OffsetDateTime::now_utc()
}
