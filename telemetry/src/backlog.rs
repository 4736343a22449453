//! Samples a durable consumer's `num_pending` into `natter_consumer_pending` until shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::consumer_metrics;

/// Often enough for a 10-minute alert window, rarely enough that consumer info requests cost the server nothing.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Runs until `shutdown`; a failed sample is logged at debug and the gauge keeps its last value.
pub async fn sample_consumer_backlog(nats: async_nats::Client, stream: String, consumer: String, shutdown: CancellationToken) {
    let jetstream = async_nats::jetstream::new(nats);
    let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let info = async {
            let stream_handle = jetstream.get_stream_no_info(&stream).await.map_err(|error| error.to_string())?;
            stream_handle.consumer_info(&consumer).await.map_err(|error| error.to_string())
        };
        match tokio::time::timeout(SAMPLE_INTERVAL, info).await {
            Ok(Ok(info)) => consumer_metrics().set_pending(&stream, &consumer, info.num_pending),
            Ok(Err(error)) => tracing::debug!(%stream, %consumer, %error, "failed to sample consumer backlog"),
            Err(_) => tracing::debug!(%stream, %consumer, "consumer backlog sample timed out"),
        }
    }
}
