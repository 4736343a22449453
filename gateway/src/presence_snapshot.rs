//! On connect, a device gets one `presence` frame per contact who is online now, so it starts in step; changes follow as they happen.
//!
//! The device is subscribed for deliveries before this runs, so no change after the read is
//! missed. A change racing the read can arrive just before the snapshot's frame for the same
//! user, leaving the device one change behind until that user's next change; the window is one
//! Redis round trip.

use std::time::Duration;

use subjects::Id;
use tokio::sync::mpsc;

use crate::outbound::Outbound;
use crate::state::AppState;

/// Longest a snapshot may hold up a new connection; past it the device starts without one.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn send_presence_snapshot(state: &AppState, user: &Id, outbound: &mpsc::Sender<Outbound>) {
    let Some((reader, directory)) = state.presence.reader_and_directory() else { return };
    // Within the heartbeat too: the reader starts after this, and a client's pongs wait for it.
    let timeout = SNAPSHOT_TIMEOUT.min(state.config.heartbeat_interval);
    let snapshot = async {
        let contacts: Vec<Id> = directory.contacts_of(user).await?.into_iter().collect();
        let statuses = reader.statuses(&contacts).await?;
        for (contact, presence) in contacts.iter().zip(statuses).filter(|(_, presence)| presence.online) {
            if outbound.send(Outbound::frame(&presence.to_frame(contact))).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(timeout, snapshot).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, %user, "presence snapshot failed"),
        Err(_) => tracing::warn!(%user, ?timeout, "presence snapshot timed out"),
    }
}
