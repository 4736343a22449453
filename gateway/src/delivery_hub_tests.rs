//! A device's full queue: events (presence, typing, receipts) are dropped and counted, a message closes the device with 1013.

use super::*;

fn attachment(connection: ConnectionId, outbound: mpsc::Sender<Outbound>, control: mpsc::Sender<Outbound>) -> DeviceAttachment {
    DeviceAttachment { connection, device: Id::parse("phone").unwrap(), outbound, control, hold_until_synced: false, max_held: 16 }
}

#[tokio::test]
async fn a_full_queue_drops_events_but_a_message_closes_the_device() -> anyhow::Result<()> {
    let store_dir = tempfile::tempdir()?;
    let nats = devservers::NatsServer::start(store_dir.path()).await?;
    let client = async_nats::connect(nats.client_url()).await?;
    let storage = store::Storage::provision(async_nats::jetstream::new(client), &subjects::StorageSettings::default()).await?;
    let mut deliveries = UserDeliveries { user: Id::parse("bob")?, reader: LogReader::new(storage), devices: HashMap::new(), delivered: DeliveredSink::default() };
    // A queue of one frame, and nobody reading it.
    let (outbound, mut queued) = mpsc::channel(1);
    let (control, mut controls) = mpsc::channel(4);
    deliveries.apply(UserCommand::Attach(attachment(7, outbound, control))).await;

    let dropped_before = telemetry::gateway_metrics().events_dropped.get();
    let presence = Bytes::from_static(br#"{"type":"presence","user":"alice","status":"online"}"#);
    deliveries.forward_event(presence.clone());
    deliveries.forward_event(presence.clone());
    deliveries.forward_event(presence);
    assert!(deliveries.devices.contains_key(&7), "a burst of events does not close the device");
    assert!(controls.try_recv().is_err(), "nothing was sent on the control lane");
    assert_eq!(telemetry::gateway_metrics().events_dropped.get() - dropped_before, 2, "the two that did not fit are counted");

    let conversation = Id::parse("c1")?;
    let message = Delivery { conversation, seq: 1, sender: None, sent_at_micros: None, payload: Bytes::from_static(b"{}") };
    deliveries.offer(7, &message).await;
    assert!(!deliveries.devices.contains_key(&7), "a message that does not fit closes the device");
    match controls.try_recv() {
        Ok(Outbound::Close { code, reason }) => {
            assert_eq!(code, close_codes::TRY_AGAIN_LATER);
            assert!(reason.contains("sync"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    assert!(matches!(queued.try_recv(), Ok(Outbound::Text(_))), "the one event that fit was queued");
    Ok(())
}
