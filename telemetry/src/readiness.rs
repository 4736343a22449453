//! What `/readyz` checks for a role: its NATS connection, its streams and durable consumers, and Redis where the role uses it.

use std::time::Duration;

use async_nats::connection::State;
use redis::aio::ConnectionManager;

/// One check's answer must come back within this, or the role counts as not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies one role needs before it can do its work.
#[derive(Clone)]
pub struct Readiness {
    nats: async_nats::Client,
    streams: Vec<String>,
    consumers: Vec<(String, String)>,
    redis: Option<ConnectionManager>,
}

impl Readiness {
    pub fn new(nats: async_nats::Client) -> Readiness {
        Readiness { nats, streams: Vec::new(), consumers: Vec::new(), redis: None }
    }

    pub fn stream(mut self, stream: impl Into<String>) -> Readiness {
        self.streams.push(stream.into());
        self
    }

    pub fn consumer(mut self, stream: impl Into<String>, consumer: impl Into<String>) -> Readiness {
        self.consumers.push((stream.into(), consumer.into()));
        self
    }

    pub fn redis(mut self, redis: Option<ConnectionManager>) -> Readiness {
        self.redis = redis;
        self
    }

    /// Every check that failed, each as one line; empty when the role is ready.
    pub async fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let state = self.nats.connection_state();
        if state != State::Connected {
            // Without a connection every JetStream check below would only wait out its timeout.
            problems.push(format!("nats: {state}"));
            return problems;
        }
        let jetstream = async_nats::jetstream::new(self.nats.clone());
        for stream in &self.streams {
            // `get_stream` asks the server for the stream's info, so a missing stream is an error here.
            match tokio::time::timeout(CHECK_TIMEOUT, jetstream.get_stream(stream)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => problems.push(format!("stream {stream}: {error}")),
                Err(_) => problems.push(format!("stream {stream}: no answer in {CHECK_TIMEOUT:?}")),
            }
        }
        for (stream, consumer) in &self.consumers {
            let info = async {
                let stream_handle = jetstream.get_stream_no_info(stream).await.map_err(|error| error.to_string())?;
                stream_handle.consumer_info(consumer).await.map_err(|error| error.to_string())
            };
            match tokio::time::timeout(CHECK_TIMEOUT, info).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => problems.push(format!("consumer {stream}/{consumer}: {error}")),
                Err(_) => problems.push(format!("consumer {stream}/{consumer}: no answer in {CHECK_TIMEOUT:?}")),
            }
        }
        if let Some(redis) = &self.redis {
            let mut redis = redis.clone();
            match tokio::time::timeout(CHECK_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut redis)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => problems.push(format!("redis: {error}")),
                Err(_) => problems.push(format!("redis: no answer in {CHECK_TIMEOUT:?}")),
            }
        }
        problems
    }
}
