//! Asks each source's broker for its backlog every interval and sets the
//! `bridge_source_backlog_messages` gauge. A failed probe is logged at debug and retried
//! next interval (the route itself reports broker outages); the gauge keeps its last value.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::adapter::Backlog;
use crate::telemetry::metrics;

pub async fn watch(
    probe: Arc<dyn Backlog>,
    route: String,
    endpoint: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let measured = tokio::select! {
            _ = stop.cancelled() => return,
            measured = probe.messages() => measured,
        };
        match measured {
            Ok(messages) => metrics::backlog(&route, &endpoint, messages),
            Err(error) => {
                tracing::debug!(%route, %endpoint, %error, "cannot measure the source's backlog");
            }
        }
    }
}
