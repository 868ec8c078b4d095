//! Turns SIGTERM and SIGINT into a cancellation token.
//!
//! The first signal cancels the token: `bridge run` stops receiving and drains (see
//! [`crate::router`]). A second signal exits at once with status 130, for an operator who
//! does not want to wait; unsettled messages are then redelivered by their brokers.
//!
//! SIGHUP does not reload the routes file (docs/deploy.md says why); it is logged and
//! otherwise ignored, instead of killing the process without a drain as by default.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; draining"),
            _ = interrupt.recv() => tracing::info!("SIGINT received; draining"),
        }
        cancel.cancel();
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!("second signal received; exiting without draining");
        std::process::exit(130);
    });
    Ok(token)
}

/// For `bridge run`: SIGHUP is logged and ignored. By default it would end the process
/// at once, without a drain.
pub fn ignore_hangup() -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::warn!(
                "SIGHUP received: bridge does not reload its routes file; restart it (SIGTERM drains) to apply changes"
            );
        }
    });
    Ok(())
}
