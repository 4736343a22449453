//! Multicast for large groups at the gateway: one subscription to `mcast.<conv>` per group that has a member connected here, fanned out to those members' delivery tasks.
//!
//! Interest follows the members connected here: a group's subscription opens when its first
//! member here connects (or joins, or the group is flagged) and closes when its last one leaves.
//! One task owns that state (a closed command enum); a user's first device waits until the
//! user's groups are subscribed, as it waits for `deliver.<user>`, so nothing sent after the
//! upgrade is missed. What arrives goes through each member's usual ordering, dedupe and gap
//! filling. Only reactions' `me` differs per member: set here, from one state read per change.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use schemas::ServerFrame;
use store::{Conversations, LogReader, MembershipCache, MulticastGroups};
use subjects::Id;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::delivery_hub::DeliveryHub;

enum RouterCommand {
    /// The user's first device here: subscribe to the user's multicast groups, then answer.
    UserOnline { user: Id, done: oneshot::Sender<()> },
    UserOffline(Id),
}

/// How the delivery hub tells the router who is connected here.
#[derive(Clone)]
pub struct MulticastRouter {
    commands: mpsc::UnboundedSender<RouterCommand>,
}

impl MulticastRouter {
    pub async fn user_online(&self, user: &Id) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(RouterCommand::UserOnline { user: user.clone(), done }).is_ok() {
            let _ = wait.await;
        }
    }

    pub fn user_offline(&self, user: &Id) {
        let _ = self.commands.send(RouterCommand::UserOffline(user.clone()));
    }
}

/// A group subscribed here and its members connected here (shared with its forwarding task).
struct GroupHere {
    members: Arc<RwLock<Vec<Id>>>,
    forwarder: tokio::task::JoinHandle<()>,
}

pub struct RouterServices {
    pub client: async_nats::Client,
    pub hub: Arc<DeliveryHub>,
    pub groups: Arc<MulticastGroups>,
    pub membership: Arc<MembershipCache>,
    pub conversations: Arc<Conversations>,
    pub reader: LogReader,
}

struct RouterTask {
    services: RouterServices,
    online: HashSet<Id>,
    subscribed: HashMap<Id, GroupHere>,
    groups_of_user: HashMap<Id, BTreeSet<Id>>,
}

/// Starts the router's task; it ends with `shutdown`.
pub fn start(services: RouterServices, shutdown: CancellationToken) -> (MulticastRouter, tokio::task::JoinHandle<()>) {
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let flags = services.groups.subscribe();
    let memberships = services.membership.subscribe_changes();
    let task = RouterTask { services, online: HashSet::new(), subscribed: HashMap::new(), groups_of_user: HashMap::new() };
    (MulticastRouter { commands: commands_tx }, tokio::spawn(task.run(commands_rx, flags, memberships, shutdown)))
}

impl RouterTask {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<RouterCommand>,
        mut flags: broadcast::Receiver<Id>,
        mut memberships: broadcast::Receiver<store::MembershipChange>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(RouterCommand::UserOnline { user, done }) => {
                        self.user_online(user).await;
                        let _ = done.send(());
                    }
                    Some(RouterCommand::UserOffline(user)) => self.user_offline(&user),
                    None => break,
                },
                flagged = flags.recv() => match flagged {
                    Ok(conversation) => self.group_flagged(conversation).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for conversation in self.services.groups.all() {
                            self.group_flagged(conversation).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                change = memberships.recv() => match change {
                    Ok((conversation, user, member)) => self.membership_changed(conversation, user, member).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Joins are found again from the groups' member lists; a missed leave is
                        // harmless, since forwarding checks membership on every delivery.
                        tracing::warn!(missed, "membership changes missed by the multicast router; re-reading its groups");
                        for conversation in self.services.groups.all() {
                            self.group_flagged(conversation).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        for (_, group) in self.subscribed.drain() {
            group.forwarder.abort();
            telemetry::gateway_metrics().multicast_subscriptions.dec();
        }
    }

    async fn user_online(&mut self, user: Id) {
        self.online.insert(user.clone());
        let flagged = self.services.groups.all();
        if flagged.is_empty() {
            return;
        }
        match self.services.conversations.conversations_of(&user).await {
            Ok(conversations) => {
                let flagged: HashSet<Id> = flagged.into_iter().collect();
                for conversation in conversations.into_iter().filter(|conversation| flagged.contains(conversation)) {
                    self.add(conversation, user.clone()).await;
                }
            }
            // The device still gets everything: gap filling and sync read the log; only live frames would lag.
            Err(error) => tracing::warn!(%error, %user, "could not list the user's groups for multicast"),
        }
    }

    fn user_offline(&mut self, user: &Id) {
        self.online.remove(user);
        for conversation in self.groups_of_user.remove(user).unwrap_or_default() {
            self.remove(&conversation, user);
        }
    }

    async fn group_flagged(&mut self, conversation: Id) {
        if self.online.is_empty() {
            return;
        }
        match self.services.membership.members(&conversation).await {
            Ok(members) => {
                let here: Vec<Id> = members.keys().filter(|user| self.online.contains(*user)).cloned().collect();
                for user in here {
                    self.add(conversation.clone(), user).await;
                }
            }
            Err(error) => tracing::warn!(%error, %conversation, "could not read a new multicast group's members"),
        }
    }

    async fn membership_changed(&mut self, conversation: Id, user: Id, member: bool) {
        if !self.online.contains(&user) || self.services.groups.since(&conversation).is_none() {
            return;
        }
        if member {
            self.add(conversation.clone(), user.clone()).await;
            // Subscribed now; whatever the group got meanwhile is in the log. Handed off, not awaited:
            // it takes the hub's lock, which a connecting device holds while it waits for this task.
            let hub = self.services.hub.clone();
            tokio::spawn(async move { hub.catch_up(&user, &conversation).await });
        } else {
            self.remove(&conversation, &user);
            if let Some(groups) = self.groups_of_user.get_mut(&user) {
                groups.remove(&conversation);
            }
        }
    }

    async fn add(&mut self, conversation: Id, user: Id) {
        if self.groups_of_user.get(&user).is_some_and(|groups| groups.contains(&conversation)) {
            return;
        }
        if let Some(group) = self.subscribed.get(&conversation) {
            group.members.write().expect("group members lock poisoned").push(user.clone());
            self.groups_of_user.entry(user).or_default().insert(conversation);
            return;
        }
        let subscriber = match self.services.client.subscribe(subjects::multicast_subject(&conversation)).await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                tracing::warn!(%error, %conversation, "could not subscribe to a multicast group");
                return;
            }
        };
        // On the wire before the user's device is told it is connected.
        if let Err(error) = self.services.client.flush().await {
            tracing::warn!(%error, %conversation, "could not flush a multicast subscription");
        }
        self.groups_of_user.entry(user.clone()).or_default().insert(conversation.clone());
        let members = Arc::new(RwLock::new(vec![user]));
        let forwarding = Forwarding {
            conversation: conversation.clone(),
            members: members.clone(),
            hub: self.services.hub.clone(),
            membership: self.services.membership.clone(),
            reader: self.services.reader.clone(),
        };
        let forwarder = tokio::spawn(forwarding.run(subscriber));
        self.subscribed.insert(conversation, GroupHere { members, forwarder });
        telemetry::gateway_metrics().multicast_subscriptions.inc();
    }

    fn remove(&mut self, conversation: &Id, user: &Id) {
        let Some(group) = self.subscribed.get(conversation) else { return };
        let empty = {
            let mut members = group.members.write().expect("group members lock poisoned");
            members.retain(|member| member != user);
            members.is_empty()
        };
        if empty {
            // Aborting drops the subscriber, which unsubscribes: no interest, no traffic to this gateway.
            if let Some(group) = self.subscribed.remove(conversation) {
                group.forwarder.abort();
                telemetry::gateway_metrics().multicast_subscriptions.dec();
            }
        }
    }
}

/// How a serialized `message_updated` frame begins.
const MESSAGE_UPDATED_PREFIX: &[u8] = br#"{"type":"message_updated""#;

/// One group's subscription: every delivery goes to each member connected here.
struct Forwarding {
    conversation: Id,
    members: Arc<RwLock<Vec<Id>>>,
    hub: Arc<DeliveryHub>,
    membership: Arc<MembershipCache>,
    reader: LogReader,
}

impl Forwarding {
    async fn run(self, mut subscriber: async_nats::Subscriber) {
        while let Some(delivery) = subscriber.next().await {
            let here = self.members.read().expect("group members lock poisoned").clone();
            // Checked again per delivery (a cached set, invalidated by the membership watch): someone
            // who left is never sent the group's messages, even if the router missed the leave.
            let members: Vec<Id> = match self.membership.members(&self.conversation).await {
                Ok(current) => here.into_iter().filter(|user| current.contains_key(user)).collect(),
                Err(error) => {
                    tracing::warn!(%error, conversation = %self.conversation, "membership unknown; this delivery waits for gap filling");
                    continue;
                }
            };
            let reactors = self.reactors_among(&delivery, &members).await;
            self.hub.deliver_multicast(&members, &delivery, &reactors).await;
        }
    }

    /// For a change frame showing reactions: the frame each member here who reacts should get (`me` set).
    async fn reactors_among(&self, delivery: &async_nats::Message, members: &[Id]) -> HashMap<Id, bytes::Bytes> {
        // Most deliveries are messages: decide from the frame's first bytes (`ServerFrame` is tagged
        // by `type`, written first) rather than parse every message frame of a large group.
        if !delivery.payload.starts_with(MESSAGE_UPDATED_PREFIX) {
            return HashMap::new();
        }
        let Ok(ServerFrame::MessageUpdated { update, message: Some(message) }) = serde_json::from_slice::<ServerFrame>(&delivery.payload) else {
            return HashMap::new();
        };
        if message.reactions.is_empty() {
            return HashMap::new();
        }
        let state = match self.reader.states().get(&self.conversation, message.seq).await {
            Ok(Some((state, _))) => state,
            Ok(None) => return HashMap::new(),
            Err(error) => {
                tracing::warn!(%error, conversation = %self.conversation, "reaction state unknown; members here see `me` false");
                return HashMap::new();
            }
        };
        let mut personal = HashMap::new();
        for user in members {
            if !message.reactions.iter().any(|reaction| state.has_reaction(&reaction.emoji, user.as_str())) {
                continue;
            }
            let mut mine = message.clone();
            for reaction in &mut mine.reactions {
                reaction.me = state.has_reaction(&reaction.emoji, user.as_str());
            }
            let frame = ServerFrame::MessageUpdated { update: update.clone(), message: Some(mine) };
            personal.insert(user.clone(), bytes::Bytes::from(frame.to_json()));
        }
        personal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_how_a_message_updated_frame_serializes() {
        let entry = schemas::Message::new("c".into(), 2, "r".into(), "bob".into(), "d".into(), time::OffsetDateTime::UNIX_EPOCH, schemas::Body::default(), None);
        let change = schemas::Change { kind: schemas::ChangeKind::Reaction, target_seq: 1, emoji: Some("👍".into()), action: schemas::ReactionAction::Add };
        let frame = ServerFrame::MessageUpdated { update: schemas::MessageUpdate::new(&entry, &change), message: None };
        assert!(frame.to_json().as_bytes().starts_with(MESSAGE_UPDATED_PREFIX));
        let message = ServerFrame::Message { message: entry };
        assert!(!message.to_json().as_bytes().starts_with(MESSAGE_UPDATED_PREFIX));
    }
}
