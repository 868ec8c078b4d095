//! The loop of one route: receive, dispatch, settle; and its drain.
//!
//! Without ordering, the loop enqueues each delivery's first attempts itself (so sinks see
//! messages in source order) and settles them concurrently, at most `max_in_flight` at a
//! time. With `ordering: key`, deliveries are spread over `max_in_flight` lanes by key;
//! a lane settles one delivery completely before the next, so messages with one key reach
//! every sink in order even across retries, while different keys proceed in parallel.
//! Keyless messages are spread round-robin and have no order promise.
//!
//! On shutdown the loop stops receiving, waits for everything in flight to settle, then
//! closes the source so its last acknowledgements reach the broker.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::adapter::{AdapterError, Delivery, Source};
use crate::config::Ordering;

use super::dispatch::{self, RouteContext};

/// How a route loop ended.
#[derive(Debug)]
pub enum RouteEnd {
    /// The source has no more messages (finite sources) and everything settled.
    Finished,
    /// Shutdown was requested and everything in flight settled.
    Drained,
    /// The source failed beyond recovery.
    Failed(AdapterError),
}

/// Runs one route until its source ends, it fails, or `shutdown` is cancelled.
pub async fn run(
    context: Arc<RouteContext>,
    mut source: Box<dyn Source>,
    ordering: Ordering,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> RouteEnd {
    let end = match ordering {
        Ordering::None => run_pipelined(&context, source.as_mut(), max_in_flight, &shutdown).await,
        Ordering::Key => run_by_key(&context, source.as_mut(), max_in_flight, &shutdown).await,
    };
    source.close().await;
    tracing::info!(route = %context.name, end = ?end, "route stopped");
    end
}

/// The next delivery with a permit, or why the loop must stop.
async fn next(
    context: &RouteContext,
    source: &mut dyn Source,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Result<(Delivery, OwnedSemaphorePermit), RouteEnd> {
    let permit = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Err(RouteEnd::Drained),
        permit = permits.clone().acquire_owned() => permit.expect("route semaphore is never closed"),
    };
    // The route's rate limit holds the source back: nothing is received early and dropped.
    if let Some(rate) = &context.rate {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(RouteEnd::Drained),
            () = rate.until_ready() => {}
        }
    }
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(RouteEnd::Drained),
        received = source.recv() => match received {
            Ok(Some(delivery)) => Ok((delivery, permit)),
            Ok(None) => Err(RouteEnd::Finished),
            Err(error) => Err(RouteEnd::Failed(error)),
        },
    }
}

async fn run_pipelined(
    context: &Arc<RouteContext>,
    source: &mut dyn Source,
    max_in_flight: usize,
    shutdown: &CancellationToken,
) -> RouteEnd {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut in_flight = JoinSet::new();
    let end = loop {
        let (delivery, permit) = match next(context, source, &permits, shutdown).await {
            Ok(next) => next,
            Err(end) => break end,
        };
        let started = dispatch::start(context, delivery).await;
        let context = context.clone();
        in_flight.spawn(async move {
            dispatch::finish(&context, started).await;
            drop(permit);
        });
        while in_flight.try_join_next().is_some() {}
    };
    while in_flight.join_next().await.is_some() {}
    end
}

/// The lane of a delivery: by its ordering key (the route's `ordering_key` rendered, else
/// the message's key); round-robin without one (an empty or failed rendering included).
fn lane_of(
    context: &RouteContext,
    delivery: &Delivery,
    lanes: usize,
    round_robin: &mut usize,
) -> usize {
    let rendered;
    let key: Option<&[u8]> = match &context.lane_key {
        Some(template) => {
            rendered = template.render(&delivery.message).unwrap_or_default();
            (!rendered.is_empty()).then_some(rendered.as_bytes())
        }
        None => delivery.message.key.as_deref(),
    };
    match key {
        Some(key) => {
            let mut hasher = DefaultHasher::new();
            key.hash(&mut hasher);
            (hasher.finish() % lanes as u64) as usize
        }
        None => {
            *round_robin = (*round_robin + 1) % lanes;
            *round_robin
        }
    }
}

async fn run_by_key(
    context: &Arc<RouteContext>,
    source: &mut dyn Source,
    max_in_flight: usize,
    shutdown: &CancellationToken,
) -> RouteEnd {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut lanes = Vec::with_capacity(max_in_flight);
    let mut workers = JoinSet::new();
    for _ in 0..max_in_flight {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(Delivery, OwnedSemaphorePermit)>();
        let context = context.clone();
        workers.spawn(async move {
            while let Some((delivery, permit)) = receiver.recv().await {
                let started = dispatch::start(&context, delivery).await;
                dispatch::finish(&context, started).await;
                drop(permit);
            }
        });
        lanes.push(sender);
    }
    let mut round_robin = 0;
    let end = loop {
        let (delivery, permit) = match next(context, source, &permits, shutdown).await {
            Ok(next) => next,
            Err(end) => break end,
        };
        let lane = lane_of(context, &delivery, lanes.len(), &mut round_robin);
        if lanes[lane].send((delivery, permit)).is_err() {
            unreachable!("lane workers live until their sender is dropped");
        }
    };
    drop(lanes);
    while workers.join_next().await.is_some() {}
    end
}
