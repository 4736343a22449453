//! SIGINT and SIGTERM cancel the root `CancellationToken`; everything else stops by watching that token.

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGINT (terminal) or SIGTERM (service manager, container stop).
/// Abort the returned task once the work is done.
pub fn cancel_on_shutdown_signal(shutdown: CancellationToken) -> anyhow::Result<JoinHandle<()>> {
    // Installed before returning, so a signal that arrives during start-up is not lost to the default handler.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
        shutdown.cancel();
    }))
}
