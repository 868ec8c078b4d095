//! What happens to one delivery: loop guard, `when` filter, fan-out to every matching sink
//! with per-sink retries, then one outcome for the source.
//!
//! The outcome follows one rule: the source is acknowledged only when every required sink
//! has confirmed, or when every failure has been confirmed by the dead letter. A required
//! sink that fails permanently, or transiently until its retries run out, is dead-lettered
//! (one dead letter per failing sink). Without a dead letter the source's own reject is
//! used; when the dead letter itself cannot be written the delivery is retried, never
//! acknowledged. Optional sinks are retried the same way but their failures are only
//! logged.
//!
//! Processing is split in two so a route can pipeline: [`start`] renders the targets and
//! enqueues the first attempt on every sink in call order; [`finish`] awaits the
//! confirmations, retries, and settles the delivery.

use std::sync::Arc;
use std::time::SystemTime;

use crate::ack::AckHandle;
use crate::adapter::{Confirmation, Delivery, ErrorClass, Receipt, SendError, Sink};
use crate::address::Endpoint;
use crate::config::{RetryPolicy, Select, SinkPlan};
use crate::expr::{Condition, EvalError, Scope};
use crate::message::limits::Limits;
use crate::message::{HopCounting, Message};
use crate::telemetry::metrics::{RouteMetrics, SinkMetrics};
use crate::transform::Transform;

use super::dead_letter::{self, Failure};
use super::rate::RateLimit;
use super::retry;
use super::sinks::SinkCache;

/// What a route needs to process its deliveries.
pub struct RouteContext {
    pub name: String,
    pub when: Option<Condition>,
    pub sinks: Vec<RouteSink>,
    pub dead_letter: Option<RouteSink>,
    pub retry: RetryPolicy,
    pub max_hops: u32,
    /// What sent messages' `bridge-hops` becomes (`routes[].count_hops`, resolved).
    pub hop_counting: HopCounting,
    pub cache: Arc<SinkCache>,
    /// Request half of a request-reply route: requests leave with a token.
    pub requests: Option<crate::relay::RequestRelay>,
    /// Reply half: replies are checked and sent back to their requester.
    pub replies: Option<crate::relay::ReplyRelay>,
    /// Skips messages whose identity was already delivered.
    pub dedup: Option<super::dedup::Dedup>,
    /// Checked before any other work on a message.
    pub limits: Limits,
    /// Reshapes each message after `when`, before the sinks see it.
    pub transform: Option<Transform>,
    /// Every matching sink, or the first.
    pub select: Select,
    /// How fast the route takes messages from its source.
    pub rate: Option<RateLimit>,
    /// The key of `ordering: key`, when the route's `ordering_key` gives one.
    pub lane_key: Option<crate::expr::Template>,
    pub metrics: RouteMetrics,
}

/// A sink of a route with its metric handles, registered once when the route starts so
/// the hot path neither formats the label nor looks the series up.
#[derive(Clone)]
pub struct RouteSink {
    pub plan: SinkPlan,
    pub metrics: SinkMetrics,
    /// The sink's own rate limit, shared by all its attempts.
    pub rate: Option<Arc<RateLimit>>,
}

impl RouteSink {
    pub fn new(plan: &SinkPlan, route: &RouteMetrics) -> RouteSink {
        let label = plan.label();
        RouteSink {
            plan: plan.clone(),
            rate: plan
                .rate
                .map(|rate| Arc::new(RateLimit::new(&rate, route.throttled(&label)))),
            metrics: route.sink(&label),
        }
    }
}

/// Where an attempt goes: a rendered endpoint, or, when none could be made, the name of
/// the sink for the failure to carry.
enum Target {
    Endpoint(Endpoint),
    Unresolved(String),
}

impl Target {
    /// Only formatted on failure: a successful send never builds it.
    fn label(&self) -> String {
        match self {
            Target::Endpoint(endpoint) => endpoint.to_string(),
            Target::Unresolved(label) => label.clone(),
        }
    }
}

/// One enqueued (or failed-to-enqueue) send to one sink.
struct Attempt {
    target: Target,
    /// Labelled with the sink as configured (`CONNECTION:TEMPLATE`), so rendered paths and
    /// reply addresses do not multiply series.
    metric: SinkMetrics,
    message: Message,
    optional: bool,
    sink: Option<Arc<dyn Sink>>,
    rate: Option<Arc<RateLimit>>,
    first: Result<Confirmation, SendError>,
}

/// A delivery after its first attempts were enqueued.
pub struct Started {
    original: Message,
    ack: AckHandle,
    state: StartState,
    /// Remembered by the route's deduplication once the delivery is acknowledged.
    identity: Option<String>,
    /// Counts the delivery in flight until it is settled.
    _in_flight: crate::telemetry::metrics::InFlight,
}

enum StartState {
    /// Nothing to send (filtered out): acknowledge.
    Done,
    /// Refused before reaching any sink.
    Refused(Failure),
    Sending(Vec<Attempt>),
}

fn eval_failure(sink: &str, error: EvalError) -> Failure {
    Failure {
        sink: sink.to_owned(),
        ..Failure::of_route(error.to_string())
    }
}

/// The message a sink receives: the original with one more hop, the rendered key and the
/// route's deduplication identity. The origin stays attached (read-only) so a sink can
/// derive stable ids from it.
fn outgoing(
    context: &RouteContext,
    scope: &Scope<'_>,
    plan: &SinkPlan,
    dedup_identity: Option<&str>,
) -> Result<Message, EvalError> {
    let mut message = match &plan.transform {
        Some(transform) => transform.apply(scope, context.limits.max_message_bytes)?,
        None => scope.message().clone(),
    };
    if let Some(key) = &plan.key {
        message.key = Some(key.render_in(scope)?.into());
    }
    // A send still unconfirmed when bridge dies is sent again after the redelivery; a sink
    // that deduplicates by this identity (SQS FIFO) drops the second copy. Set afresh by
    // every route, so none inherits another's.
    message.set_dedup_identity(dedup_identity.map(str::to_owned));
    if plan.to_reply_address {
        // The reply-to was where this reply goes; a reply carries none of its own.
        message.reply_to = None;
    }
    if let Some(requests) = &context.requests {
        requests.apply(&mut message);
    }
    message.count_hop(context.hop_counting);
    Ok(message)
}

async fn enqueue(sink: &Arc<dyn Sink>, message: &Message) -> Result<Confirmation, SendError> {
    sink.send(message).await
}

/// Opens (or reuses) the sink of `endpoint` and enqueues the first attempt on it.
async fn first_attempt(
    context: &RouteContext,
    endpoint: Endpoint,
    message: Message,
    metric: &SinkMetrics,
    optional: bool,
    rate: Option<&Arc<RateLimit>>,
) -> Attempt {
    if let Some(rate) = rate {
        rate.until_ready().await;
    }
    let (sink, first) = match context.cache.get_for_send(&endpoint).await {
        Ok(sink) => {
            let first = enqueue(&sink, &message).await;
            (Some(sink), first)
        }
        Err(error) => (None, Err(error)),
    };
    Attempt {
        target: Target::Endpoint(endpoint),
        metric: metric.clone(),
        message,
        optional,
        sink,
        rate: rate.cloned(),
        first,
    }
}

/// The endpoint path of a requester's reply address, if `reply.allow` lets replies go
/// there (a refusal is counted as `not_allowed`).
fn reply_path(context: &RouteContext, plan: &SinkPlan, address: &str) -> Result<String, Failure> {
    let refused = |reason: String| Failure {
        sink: plan.label(),
        ..Failure::of_route(reason)
    };
    if let Some(replies) = &context.replies {
        let plain = |address: &str| {
            context
                .cache
                .is_plain_reply_address(&plan.connection, address)
        };
        if !replies.allow.permits(address, plain) {
            context.metrics.reply_refused("not_allowed");
            return Err(refused(format!(
                "the reply address `{address}` is not allowed by reply.allow"
            )));
        }
    }
    context
        .cache
        .reply_path(&plan.connection, address)
        .map_err(|reason| refused(format!("cannot reach reply address `{address}`: {reason}")))
}

/// What one sink is to receive, worked out before anything is sent.
pub struct Prepared {
    pub endpoint: Endpoint,
    pub message: Message,
}

/// The endpoint and message of one sink, or `None` when its `when` does not hold.
pub fn prepare(
    context: &RouteContext,
    scope: &Scope<'_>,
    RouteSink { plan, metrics, .. }: &RouteSink,
    dedup_identity: Option<&str>,
) -> Result<Option<Prepared>, Failure> {
    if let Some(when) = &plan.when {
        match when.matches_in(scope) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(error) => return Err(eval_failure(&metrics.label, error)),
        }
    }
    let label = &metrics.label;
    let path = if plan.to_reply_address {
        let address = scope.message().reply_to.as_deref().unwrap_or_default();
        reply_path(context, plan, address)?
    } else {
        plan.path
            .render_in(scope)
            .map_err(|e| eval_failure(label, e))?
    };
    let endpoint = Endpoint {
        connection: plan.connection.clone(),
        path,
    };
    let message = outgoing(context, scope, plan, dedup_identity)
        .map_err(|e| eval_failure(&endpoint.to_string(), e))?;
    Ok(Some(Prepared { endpoint, message }))
}

/// Whether a sink's result takes the message under `select: first`: it does unless its
/// `when` did not hold.
pub fn takes_the_message<T>(result: &Result<Option<T>, Failure>) -> bool {
    !matches!(result, Ok(None))
}

/// The route's own steps for a message, before its sinks.
pub enum RouteStep {
    /// `when` is false: acknowledge without forwarding.
    Filtered,
    /// Refused by the loop guard, `when` or the transform: dead-letter.
    Refused(Failure),
    /// On to the sinks, with the message the route's transform made (if it has one).
    Pass(Option<Box<Message>>),
}

/// The loop guard, the route's `when`, then its transform.
pub fn route_steps(context: &RouteContext, scope: &Scope<'_>) -> RouteStep {
    let message = scope.message();
    if message.hops() >= context.max_hops {
        return RouteStep::Refused(Failure::of_route(format!(
            "hop limit reached: bridge already forwarded this message {} times (settings.max_hops = {})",
            message.hops(),
            context.max_hops
        )));
    }
    if let Some(when) = &context.when {
        match when.matches_in(scope) {
            Ok(true) => {}
            Ok(false) => return RouteStep::Filtered,
            Err(error) => return RouteStep::Refused(eval_failure("route", error)),
        }
    }
    match &context.transform {
        Some(transform) => match transform.apply(scope, context.limits.max_message_bytes) {
            Ok(message) => RouteStep::Pass(Some(Box::new(message))),
            Err(error) => RouteStep::Refused(eval_failure("route transform", error)),
        },
        None => RouteStep::Pass(None),
    }
}

/// Checks, filters and enqueues the first attempt on every matching sink, in call order.
pub async fn start(context: &RouteContext, delivery: Delivery) -> Started {
    let Delivery { mut message, ack } = delivery;
    let in_flight = context.metrics.start();
    if let Err(reason) = context.limits.check(&message) {
        context.metrics.over_limit.increment(1);
        return Started {
            original: message,
            ack,
            state: StartState::Refused(Failure::of_route(reason)),
            identity: None,
            _in_flight: in_flight,
        };
    }
    // A reply route deduplicates by the token as it arrived, before it is restored.
    let token_identity = match &context.dedup {
        Some(dedup) if dedup.by_correlation_id() => dedup.identity_in(&Scope::new(&message)),
        _ => None,
    };
    if let Some(replies) = &context.replies
        && let Err(refusal) = replies.restore(&mut message)
    {
        context.metrics.reply_refused(match refusal {
            crate::relay::Refusal::Late(_) => "late",
            _ => "invalid",
        });
        let state = match replies.unmatched {
            crate::relay::Unmatched::DeadLetter => {
                StartState::Refused(Failure::of_route(format!("reply not relayed: {refusal}")))
            }
            crate::relay::Unmatched::Drop => {
                tracing::warn!(route = %context.name, reason = %refusal, "reply not relayed; dropped as configured");
                StartState::Done
            }
        };
        return Started {
            original: message,
            ack,
            state,
            identity: None,
            _in_flight: in_flight,
        };
    }
    let scope = Scope::new(&message);
    let identity = match &context.dedup {
        Some(dedup) if dedup.by_correlation_id() => token_identity,
        Some(dedup) => dedup.identity_in(&scope),
        None => None,
    };
    let duplicate = match (&context.dedup, &identity) {
        // A reply's token is claimed at once: replayed copies arriving together are not
        // relayed twice (docs/request-reply.md).
        (Some(dedup), Some(identity)) if dedup.by_correlation_id() => {
            !dedup.claim(&context.name, identity).await
        }
        (Some(dedup), Some(identity)) => dedup.seen(&context.name, identity).await,
        _ => false,
    };
    if duplicate {
        context.metrics.deduplicated.increment(1);
        drop(scope);
        return Started {
            original: message,
            ack,
            state: StartState::Done,
            identity: None,
            _in_flight: in_flight,
        };
    }
    // Scoped by route, as the store is, so that two routes into one FIFO queue never drop
    // each other's messages.
    let fifo_identity = identity
        .as_ref()
        .map(|identity| format!("{}/{identity}", context.name));
    let state = start_state(context, &scope, fifo_identity.as_deref()).await;
    drop(scope);
    Started {
        original: message,
        ack,
        state,
        identity,
        _in_flight: in_flight,
    }
}

/// Remembers a delivered message's identity, then acknowledges it.
async fn remember_and_ack(context: &RouteContext, identity: Option<&str>, ack: AckHandle) {
    if let (Some(dedup), Some(identity)) = (&context.dedup, identity) {
        dedup.remember(&context.name, identity).await;
    }
    ack.ack();
}

async fn start_state(
    context: &RouteContext,
    scope: &Scope<'_>,
    dedup_identity: Option<&str>,
) -> StartState {
    // The sinks see the message as the route's transform made it.
    let transformed = match route_steps(context, scope) {
        RouteStep::Filtered => {
            context.metrics.filtered.increment(1);
            return StartState::Done;
        }
        RouteStep::Refused(failure) => return StartState::Refused(failure),
        RouteStep::Pass(transformed) => transformed,
    };
    let transformed_scope = transformed.as_deref().map(Scope::new);
    let scope = transformed_scope.as_ref().unwrap_or(scope);
    let message = scope.message();
    let mut attempts = Vec::with_capacity(context.sinks.len());
    for sink in &context.sinks {
        let result = prepare(context, scope, sink, dedup_identity);
        // Under `select: first` the first sink whose `when` holds is the only one.
        let chosen = takes_the_message(&result);
        match result {
            Ok(Some(Prepared { endpoint, message })) => attempts.push(
                first_attempt(
                    context,
                    endpoint,
                    message,
                    &sink.metrics,
                    sink.plan.optional,
                    sink.rate.as_ref(),
                )
                .await,
            ),
            Ok(None) => {}
            Err(failure) if sink.plan.optional => {
                tracing::warn!(route = %context.name, sink = %failure.sink, error = %failure.error, "optional sink skipped");
            }
            Err(failure) => {
                // Already-enqueued attempts still complete; the failure is dead-lettered.
                attempts.push(Attempt {
                    target: Target::Unresolved(failure.sink.clone()),
                    metric: sink.metrics.clone(),
                    message: message.without_origin(),
                    optional: false,
                    sink: None,
                    rate: None,
                    first: Err(SendError::permanent(failure.error)),
                });
            }
        }
        if chosen && context.select == Select::First {
            break;
        }
    }
    if attempts.is_empty() {
        StartState::Done
    } else {
        StartState::Sending(attempts)
    }
}

/// Awaits one attempt's confirmation and retries it per the policy.
async fn complete(context: &RouteContext, attempt: Attempt) -> (Attempt, Result<Receipt, Failure>) {
    let Attempt {
        target,
        metric,
        message,
        optional,
        mut sink,
        rate,
        first,
    } = attempt;
    let mut first_failure_at: Option<SystemTime> = None;
    let mut attempts = 1;
    let mut result = match first {
        Ok(confirmation) => confirmation.await,
        Err(error) => Err(error),
    };
    let mut waits = retry::schedule(&context.retry);
    let mut unavailable_waits = retry::unavailable_schedule(&context.retry);
    let outcome = loop {
        let error = match result {
            Ok(receipt) => {
                metric.sent.increment(1);
                break Ok(receipt);
            }
            Err(error) => error,
        };
        context.metrics.failed(&metric.label, error.class.as_str());
        let first = *first_failure_at.get_or_insert_with(SystemTime::now);
        let failure = |error: SendError, attempts| Failure {
            sink: target.label(),
            error: error.message,
            class: error.class,
            attempts,
            first,
            last: SystemTime::now(),
        };
        let wait = match error.class {
            ErrorClass::Permanent => break Err(failure(error, attempts)),
            // An outage does not use up attempts: the message waits for the broker (an
            // optional sink must not hold the route up, so it keeps its budget).
            ErrorClass::Unavailable if !optional => unavailable_waits
                .next()
                .unwrap_or(context.retry.max_backoff),
            ErrorClass::Transient | ErrorClass::Unavailable => match waits.next() {
                Some(wait) => {
                    attempts += 1;
                    wait
                }
                None => {
                    let mut failure = failure(error, attempts);
                    failure.error =
                        format!("{} (gave up after {attempts} attempts)", failure.error);
                    break Err(failure);
                }
            },
        };
        tracing::debug!(route = %context.name, sink = %target.label(), attempt = attempts, error = %error, ?wait, "send failed; retrying");
        tokio::time::sleep(wait).await;
        if let Some(rate) = &rate {
            rate.until_ready().await;
        }
        metric.retried.increment(1);
        result = match (&sink, &target) {
            (Some(open), _) => enqueue_and_confirm(open, &message).await,
            (None, Target::Endpoint(endpoint)) => {
                match context.cache.get_for_send(endpoint).await {
                    Ok(open) => {
                        let result = enqueue_and_confirm(&open, &message).await;
                        sink = Some(open);
                        result
                    }
                    Err(error) => Err(error),
                }
            }
            (None, Target::Unresolved(_)) => Err(SendError::permanent("no sink to retry")),
        };
    };
    let attempt = Attempt {
        target,
        metric,
        message,
        optional,
        sink,
        rate,
        first: Err(SendError::permanent("settled")),
    };
    (attempt, outcome)
}

async fn enqueue_and_confirm(
    sink: &Arc<dyn Sink>,
    message: &Message,
) -> Result<Receipt, SendError> {
    enqueue(sink, message).await?.await
}

/// Awaits every sink's confirmation (with retries) and settles the delivery.
pub async fn finish(context: &RouteContext, started: Started) {
    let Started {
        original,
        ack,
        state,
        identity,
        _in_flight,
    } = started;
    let attempts = match state {
        StartState::Done => return ack.ack(),
        StartState::Refused(failure) => {
            return dead_letter_or_reject(
                context,
                &original,
                identity.as_deref(),
                vec![failure],
                ack,
            )
            .await;
        }
        StartState::Sending(attempts) => attempts,
    };
    let results =
        futures::future::join_all(attempts.into_iter().map(|a| complete(context, a))).await;
    let mut failures = Vec::new();
    for (attempt, result) in results {
        match result {
            Ok(_) => {}
            Err(failure) if attempt.optional => {
                tracing::warn!(route = %context.name, sink = %failure.sink, error = %failure.error, "optional sink failed; not dead-lettered");
            }
            Err(failure) => failures.push(failure),
        }
    }
    if failures.is_empty() {
        if context.replies.is_some() {
            context.metrics.replies_relayed.increment(1);
        }
        remember_and_ack(context, identity.as_deref(), ack).await;
    } else {
        dead_letter_or_reject(context, &original, identity.as_deref(), failures, ack).await;
    }
}

/// Gives back the claim on a reply's token when the reply is handed back to its source,
/// so that it is relayed when it is delivered again.
async fn give_back_claim(context: &RouteContext, identity: Option<&str>) {
    if let (Some(dedup), Some(identity)) = (&context.dedup, identity)
        && dedup.by_correlation_id()
    {
        dedup.forget(&context.name, identity).await;
    }
}

/// Dead-letters each failure and acknowledges once all are confirmed; rejects at the source
/// when the route has no dead letter; retries when the dead letter cannot be written.
async fn dead_letter_or_reject(
    context: &RouteContext,
    original: &Message,
    identity: Option<&str>,
    failures: Vec<Failure>,
    ack: AckHandle,
) {
    for failure in &failures {
        tracing::warn!(
            route = %context.name,
            sink = %failure.sink,
            class = %failure.class,
            attempts = failure.attempts,
            error = %failure.error,
            message_id = original.message_id.as_deref().unwrap_or(""),
            trace_id = original.trace_id().unwrap_or(""),
            "message cannot be delivered"
        );
    }
    let Some(RouteSink { plan, metrics, .. }) = &context.dead_letter else {
        let reason = failures
            .iter()
            .map(|f| format!("{}: {}", f.sink, f.error))
            .collect::<Vec<_>>()
            .join("; ");
        context.metrics.rejected.increment(1);
        // A reject may mean "deliver again" (SQS, Pub/Sub): the claimed token goes back.
        give_back_claim(context, identity).await;
        return ack.reject(reason);
    };
    let letters = failures.iter().map(|failure| {
        let letter = dead_letter::build(&context.name, original, failure);
        async move {
            // Rendered from the original, which still has its origin.
            let path = plan.path.render(original).map_err(|e| e.to_string())?;
            let endpoint = Endpoint {
                connection: plan.connection.clone(),
                path,
            };
            let attempt = first_attempt(context, endpoint, letter, metrics, false, None).await;
            complete(context, attempt)
                .await
                .1
                .map_err(|f| format!("{}: {}", f.sink, f.error))
        }
    });
    let results = futures::future::join_all(letters).await;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        context
            .metrics
            .dead_letters
            .increment(failures.len() as u64);
        remember_and_ack(context, identity, ack).await;
    } else {
        context.metrics.source_retries.increment(1);
        give_back_claim(context, identity).await;
        // Never acknowledged; handed back after a pause so a dead letter that keeps
        // failing does not turn into a busy loop of redeliveries.
        tracing::error!(route = %context.name, errors = ?errors, pause = ?context.retry.max_backoff, "dead letter could not be written; the message will be redelivered");
        tokio::time::sleep(context.retry.max_backoff).await;
        ack.retry(format!("dead letter failed: {}", errors.join("; ")));
    }
}
