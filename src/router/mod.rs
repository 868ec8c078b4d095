//! The router: opens every connection a plan uses, runs each route's loop, and drains on
//! shutdown.
//!
//! Start-up waits for brokers that are not reachable yet (retrying with backoff and saying
//! so in the log) rather than failing, because a sidecar often starts before its broker.
//! Endpoints that are wrong (a missing queue, a bad option) fail start-up at once.
//! Shutdown follows one sequence: stop receiving on every route, wait up to
//! `settings.drain_timeout` for in-flight messages to settle, close sources (their last
//! acknowledgements reach the brokers), flush sinks.

mod backlog;
mod dead_letter;
pub mod dedup;
mod dispatch;
pub mod explain;
pub mod rate;
mod retry;
mod route;
mod sinks;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::adapter::{AdapterError, ConnectContext, Connector, Source, SourceSettings};
use crate::address::Endpoint;
use crate::config::{Plan, RoutePlan};

pub use dead_letter::Failure;
pub use route::RouteEnd;

use dispatch::{RouteContext, RouteSink};
use sinks::SinkCache;

/// A failure that stops `bridge run`.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("the routes file has no routes to run")]
    NoRoutes,
    // The adapter's error is part of the message, not a `source`: printed as a chain,
    // it would appear twice.
    #[error("connection `{connection}`: {error}")]
    Connect {
        connection: String,
        error: AdapterError,
    },
    #[error("route `{route}`: cannot open {endpoint}: {error}")]
    Open {
        route: String,
        endpoint: String,
        error: AdapterError,
    },
    #[error("shutdown was requested before every connection was open")]
    Interrupted,
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Routes whose source failed beyond recovery, with the error.
    pub failed_routes: Vec<(String, String)>,
    /// True when the drain timeout passed with messages still in flight.
    pub drain_timed_out: bool,
}

impl RunReport {
    pub fn is_clean(&self) -> bool {
        self.failed_routes.is_empty() && !self.drain_timed_out
    }
}

/// Connections opened and sources ready; [`run`](Router::run) starts moving messages.
pub struct Router {
    loops: Vec<Loop>,
    cache: Arc<SinkCache>,
    drain_timeout: Duration,
    backlog_interval: Duration,
}

/// Retries `open` while it fails with a retryable error, until `shutdown` (then `None`).
async fn with_patience<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut open: F,
) -> Result<T, Option<AdapterError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AdapterError>>,
{
    let mut wait = Duration::from_millis(200);
    loop {
        match open().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, retry_in = ?wait, "{what} is not available yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(None),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(error) => return Err(Some(error)),
        }
    }
}

/// One route loop to run: a route, or the reply half of a request-reply route.
struct Loop {
    context: Arc<RouteContext>,
    source: Box<dyn Source>,
    /// The source's address, for the backlog gauge.
    endpoint: String,
    ordering: crate::config::Ordering,
    max_in_flight: usize,
}

/// A route's deduplication step with its store.
fn dedup_step(
    plan: &crate::config::DedupPlan,
    route: &str,
    identity: dedup::IdentityOf,
) -> dedup::Dedup {
    let store: Box<dyn dedup::DedupStore> = match &plan.redis {
        #[cfg(feature = "redis")]
        Some(url) => Box::new(
            dedup::RedisStore::new(url.expose(), route, plan.window)
                .expect("the Redis URL was checked when the routes file was loaded"),
        ),
        #[cfg(not(feature = "redis"))]
        Some(_) => unreachable!("a Redis store is refused when the routes file is loaded: {route}"),
        None => Box::new(dedup::MemoryStore::new(plan.window, plan.capacity)),
    };
    dedup::Dedup::new(identity, store)
}

/// The context of a route's forward loop.
fn route_context(plan: &Plan, route: &RoutePlan, cache: &Arc<SinkCache>) -> RouteContext {
    let metrics = crate::telemetry::metrics::RouteMetrics::new(
        &route.name,
        &route.source.endpoint.to_string(),
    );
    RouteContext {
        name: route.name.clone(),
        when: route.when.clone(),
        sinks: route
            .sinks
            .iter()
            .map(|sink| RouteSink::new(sink, &metrics))
            .collect(),
        dead_letter: route
            .dead_letter
            .as_ref()
            .map(|sink| RouteSink::new(sink, &metrics)),
        retry: route.retry.clone(),
        max_hops: plan.settings.max_hops,
        hop_counting: route.hop_counting,
        cache: cache.clone(),
        requests: route
            .reply
            .as_ref()
            .zip(plan.signer.as_ref())
            .map(|(reply, signer)| crate::relay::RequestRelay {
                signer: signer.for_route(&route.name),
                address: reply.address.clone(),
                timeout: reply.timeout,
            }),
        replies: None,
        dedup: route.dedup.as_ref().map(|dedup| {
            let identity = match &dedup.key {
                Some(template) => dedup::IdentityOf::Template(template.clone()),
                None => dedup::IdentityOf::MessageId,
            };
            dedup_step(dedup, &route.name, identity)
        }),
        limits: route.limits,
        transform: route.transform.clone(),
        select: route.select,
        rate: route
            .rate
            .map(|rate| rate::RateLimit::new(&rate, metrics.throttled("route"))),
        lane_key: route.ordering_key.clone(),
        metrics,
    }
}

/// The context of the loop that relays a route's replies back to the requesters, on the
/// connection the requests came from.
fn reply_context(plan: &Plan, route: &RoutePlan, cache: &Arc<SinkCache>) -> Option<RouteContext> {
    let (reply, signer) = route.reply.as_ref().zip(plan.signer.as_ref())?;
    let back = crate::config::SinkPlan {
        connection: route.source.endpoint.connection.clone(),
        path: crate::expr::Template::compile("<reply-to>").expect("a constant is a template"),
        key: None,
        when: None,
        optional: false,
        to_reply_address: true,
        transform: None,
        rate: None,
    };
    let metrics = crate::telemetry::metrics::RouteMetrics::new(
        &format!("{}/replies", route.name),
        &reply.source.endpoint.to_string(),
    );
    Some(RouteContext {
        name: format!("{}/replies", route.name),
        when: None,
        sinks: vec![RouteSink::new(&back, &metrics)],
        dead_letter: route
            .dead_letter
            .as_ref()
            .map(|sink| RouteSink::new(sink, &metrics)),
        retry: route.retry.clone(),
        max_hops: plan.settings.max_hops,
        // A reply goes back to its requester: a hop like any forward, counted as the
        // reply flow's `count_hops` resolves (config::loops).
        hop_counting: reply.hop_counting,
        cache: cache.clone(),
        requests: None,
        replies: Some(crate::relay::ReplyRelay {
            signer: signer.for_route(&route.name),
            unmatched: reply.unmatched,
            allow: reply.allow.clone(),
        }),
        // Keyed on the token as received, under the route's name like its forward half.
        dedup: reply.dedup.as_ref().map(|dedup| {
            dedup_step(
                dedup,
                &format!("{}/replies", route.name),
                dedup::IdentityOf::CorrelationId,
            )
        }),
        limits: reply.limits,
        transform: None,
        select: crate::config::Select::All,
        rate: None,
        lane_key: None,
        metrics,
    })
}

/// Opens a source of `route`, waiting for its broker.
async fn open_source(
    connectors: &HashMap<String, Arc<dyn Connector>>,
    route: &RoutePlan,
    source: &crate::config::SourcePlan,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<Box<dyn Source>, RouterError> {
    let endpoint = &source.endpoint;
    let connector = connectors[&endpoint.connection].clone();
    let settings = SourceSettings {
        route: name.to_owned(),
        options: source.options.clone(),
        max_in_flight: route.max_in_flight,
        dead_letter: route.dead_letter.is_some(),
    };
    with_patience(&format!("source {endpoint}"), shutdown, || {
        connector.open_source(endpoint, &settings)
    })
    .await
    .map_err(|error| match error {
        None => RouterError::Interrupted,
        Some(error) => RouterError::Open {
            route: route.name.clone(),
            endpoint: endpoint.to_string(),
            error,
        },
    })
}

/// Notes a route's end in the report; a failed route stops the others.
fn record(report: &mut RunReport, name: String, end: RouteEnd, stop: &CancellationToken) {
    if let RouteEnd::Failed(error) = end {
        tracing::error!(route = %name, %error, "route failed; stopping bridge");
        report.failed_routes.push((name, error.to_string()));
        stop.cancel();
    }
}

impl Router {
    /// Opens every connection, source and constant sink of `plan`.
    pub async fn connect(
        plan: &Plan,
        context: &ConnectContext,
        shutdown: &CancellationToken,
    ) -> Result<Router, RouterError> {
        if plan.routes.is_empty() {
            return Err(RouterError::NoRoutes);
        }
        let mut used: Vec<&str> = Vec::new();
        for route in &plan.routes {
            used.push(&route.source.endpoint.connection);
            used.extend(route.sinks.iter().map(|s| s.connection.as_str()));
            used.extend(route.dead_letter.iter().map(|s| s.connection.as_str()));
            used.extend(
                route
                    .reply
                    .iter()
                    .map(|r| r.source.endpoint.connection.as_str()),
            );
        }
        used.sort_unstable();
        used.dedup();
        let mut connectors: HashMap<String, Arc<dyn Connector>> = HashMap::new();
        for name in used {
            let spec = &plan.connections[name];
            let what = format!("connection `{name}` ({})", spec.describe());
            let connector = with_patience(&what, shutdown, || spec.connect(context))
                .await
                .map_err(|source| match source {
                    None => RouterError::Interrupted,
                    Some(error) => RouterError::Connect {
                        connection: name.to_owned(),
                        error,
                    },
                })?;
            connectors.insert(name.to_owned(), connector);
        }
        if shutdown.is_cancelled() {
            return Err(RouterError::Interrupted);
        }
        let max_open_sinks = plan
            .settings
            .limits
            .max_open_sinks
            .unwrap_or_else(crate::config::model::default_max_open_sinks);
        let cache = Arc::new(SinkCache::new(connectors.clone(), max_open_sinks));
        let mut loops = Vec::new();
        for route in &plan.routes {
            for sink in route.sinks.iter().chain(&route.dead_letter) {
                if sink.path.is_constant() {
                    let endpoint = Endpoint {
                        connection: sink.connection.clone(),
                        path: sink.path.source().to_owned(),
                    };
                    with_patience(&format!("sink {endpoint}"), shutdown, || {
                        cache.pin(&endpoint)
                    })
                    .await
                    .map_err(|source| match source {
                        None => RouterError::Interrupted,
                        Some(error) => RouterError::Open {
                            route: route.name.clone(),
                            endpoint: endpoint.to_string(),
                            error,
                        },
                    })?;
                }
            }
            let source =
                open_source(&connectors, route, &route.source, &route.name, shutdown).await?;
            loops.push(Loop {
                context: Arc::new(route_context(plan, route, &cache)),
                source,
                endpoint: route.source.endpoint.to_string(),
                ordering: route.ordering,
                max_in_flight: route.max_in_flight,
            });
            if let (Some(reply), Some(context)) = (&route.reply, reply_context(plan, route, &cache))
            {
                let source =
                    open_source(&connectors, route, &reply.source, &context.name, shutdown).await?;
                loops.push(Loop {
                    context: Arc::new(context),
                    source,
                    endpoint: reply.source.endpoint.to_string(),
                    ordering: crate::config::Ordering::None,
                    max_in_flight: route.max_in_flight,
                });
            }
        }
        Ok(Router {
            loops,
            cache,
            drain_timeout: plan.settings.drain_timeout,
            backlog_interval: plan.settings.http.backlog_interval,
        })
    }

    /// Moves messages until every source ends or `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> RunReport {
        let stop_routes = shutdown.child_token();
        let mut loops = JoinSet::new();
        let stop_watchers = CancellationToken::new();
        let _stop_watchers_on_return = stop_watchers.clone().drop_guard();
        for Loop {
            context,
            source,
            endpoint,
            ordering,
            max_in_flight,
        } in self.loops
        {
            if let Some(probe) = source.backlog() {
                tokio::spawn(backlog::watch(
                    probe,
                    context.name.clone(),
                    endpoint,
                    self.backlog_interval,
                    stop_watchers.clone(),
                ));
            }
            let token = stop_routes.clone();
            let name = context.name.clone();
            loops.spawn(async move {
                let end = route::run(context, source, ordering, max_in_flight, token).await;
                (name, end)
            });
        }
        let mut report = RunReport::default();
        loop {
            tokio::select! {
                joined = loops.join_next() => match joined {
                    Some(Ok((name, end))) => record(&mut report, name, end, &stop_routes),
                    Some(Err(panic)) => {
                        report.failed_routes.push(("?".into(), format!("route task panicked: {panic}")));
                        stop_routes.cancel();
                    }
                    None => break,
                },
                _ = stop_routes.cancelled() => break,
            }
        }
        if !loops.is_empty() {
            tracing::info!(timeout = ?self.drain_timeout, in_flight_routes = loops.len(), "draining");
            let drained = tokio::time::timeout(self.drain_timeout, async {
                while let Some(joined) = loops.join_next().await {
                    if let Ok((name, end)) = joined {
                        record(&mut report, name, end, &stop_routes);
                    }
                }
            })
            .await;
            if drained.is_err() {
                tracing::error!(timeout = ?self.drain_timeout, "drain timed out; unsettled messages will be redelivered");
                report.drain_timed_out = true;
                loops.abort_all();
                while loops.join_next().await.is_some() {}
            }
        }
        // Everything acknowledged was confirmed already; flushing only settles what a
        // timed-out drain left behind, so it gets a short, bounded wait.
        if tokio::time::timeout(Duration::from_secs(5), self.cache.flush_all())
            .await
            .is_err()
        {
            tracing::warn!("sinks did not finish flushing within 5 s");
        }
        report
    }
}
