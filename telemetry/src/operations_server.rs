//! `/metrics`, `/healthz` and `/readyz`: merged into the gateway's router, and served on their own listener by each worker.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{encode_metrics, OPENMETRICS_CONTENT_TYPE};
use crate::readiness::Readiness;

/// The three operations routes, for any router (state already applied).
pub fn operations_routes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

/// A worker's operations endpoint: serves until `shutdown`, on a listener the caller bound (port 0 in tests).
pub async fn serve_operations(listener: TcpListener, readiness: Readiness, shutdown: CancellationToken) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "operations endpoint listening (/metrics, /healthz, /readyz)");
    axum::serve(listener, operations_routes::<()>(readiness))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("operations http server failed")
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], encode_metrics())
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let problems = readiness.problems().await;
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", problems.join("\n")))
    }
}
