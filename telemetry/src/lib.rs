//! Operations surface shared by every `natter*` binary: the process-wide Prometheus registry and its metric families, the `/metrics` `/healthz` `/readyz` routes and server, readiness checks, and the consumer backlog sampler.

mod backlog;
mod metrics;
mod operations_server;
mod readiness;

pub use backlog::sample_consumer_backlog;
pub use metrics::{
    encode_metrics, consumer_metrics, fanout_metrics, gateway_metrics, FanoutMetrics, FANOUT_PATHS, indexer_metrics, push_metrics, store_metrics, ConsumerMetrics, GatewayMetrics,
    IndexerMetrics, PushOutcomeMetrics, StoreMetrics, OPENMETRICS_CONTENT_TYPE,
};
pub use operations_server::{operations_routes, serve_operations};
pub use readiness::Readiness;
