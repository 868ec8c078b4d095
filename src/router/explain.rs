//! What a route would do with one message, worked out without connecting to anything:
//! `bridge explain` and `bridge test`.
//!
//! It runs the same steps as a running route, through the same functions (limits, the loop
//! guard, `when`, the route's transform, then each sink's `when`, endpoint, transform and
//! key), and stops before the first send. What it cannot know is left out and said so:
//! deduplication (it needs the store), and whether the brokers accept the message.

use std::collections::HashMap;
use std::sync::Arc;

use crate::address::Endpoint;
use crate::config::{Plan, Select};
use crate::expr::Scope;
use crate::message::Message;

use super::dispatch::{Prepared, RouteContext, RouteStep, prepare, route_steps, takes_the_message};
use super::sinks::SinkCache;

/// What a route does with one message.
#[derive(Debug)]
pub enum Verdict {
    /// The route's `when` is false: acknowledged, not forwarded.
    Filtered,
    /// Refused before any sink: the whole message is dead-lettered.
    Refused { sink: String, reason: String },
    /// What each sink does with it, in the order of `to`.
    Sinks(Vec<SinkResult>),
}

/// One sink's part.
#[derive(Debug)]
pub struct SinkResult {
    /// The sink as configured.
    pub sink: String,
    pub optional: bool,
    pub outcome: SinkOutcome,
}

#[derive(Debug)]
pub enum SinkOutcome {
    /// Its `when` does not hold, or an earlier sink took the message (`select: first`).
    Skipped,
    /// It would be sent this message.
    Sent {
        endpoint: Endpoint,
        message: Box<Message>,
    },
    /// It cannot be sent: dead-lettered (or, for an optional sink, only logged).
    Failed(String),
}

/// A route's verdict on `message`, with where its dead letters go.
#[derive(Debug)]
pub struct Explanation {
    pub verdict: Verdict,
    /// The route's `dead_letter`, as written.
    pub dead_letter: Option<String>,
}

/// Explains what route `route` of `plan` does with `message`.
pub fn explain(plan: &Plan, route: &str, message: &Message) -> Result<Explanation, String> {
    let route_plan = plan
        .routes
        .iter()
        .find(|r| r.name == route)
        .ok_or_else(|| {
            let names: Vec<&str> = plan.routes.iter().map(|r| r.name.as_str()).collect();
            format!(
                "no route `{route}` in the file (its routes: {})",
                names.join(", ")
            )
        })?;
    // Nothing is opened: the cache has no connector to open a sink with.
    let cache = Arc::new(SinkCache::new(HashMap::new(), 1));
    let context = RouteContext {
        dedup: None,
        ..super::route_context(plan, route_plan, &cache)
    };
    let dead_letter = route_plan.dead_letter.as_ref().map(|d| d.label());
    if let Err(reason) = context.limits.check(message) {
        return Ok(Explanation {
            verdict: Verdict::Refused {
                sink: "route".into(),
                reason,
            },
            dead_letter,
        });
    }
    let scope = Scope::new(message);
    let transformed = match route_steps(&context, &scope) {
        RouteStep::Filtered => {
            return Ok(Explanation {
                verdict: Verdict::Filtered,
                dead_letter,
            });
        }
        RouteStep::Refused(failure) => {
            return Ok(Explanation {
                verdict: Verdict::Refused {
                    sink: failure.sink,
                    reason: failure.error,
                },
                dead_letter,
            });
        }
        RouteStep::Pass(transformed) => transformed,
    };
    let transformed_scope = transformed.as_deref().map(Scope::new);
    let scope = transformed_scope.as_ref().unwrap_or(&scope);
    let mut taken = false;
    let mut sinks = Vec::with_capacity(context.sinks.len());
    for sink in &context.sinks {
        let outcome = if taken {
            SinkOutcome::Skipped
        } else {
            let result = prepare(&context, scope, sink, None);
            taken = context.select == Select::First && takes_the_message(&result);
            match result {
                Ok(Some(Prepared { endpoint, message })) => SinkOutcome::Sent {
                    endpoint,
                    message: Box::new(message.without_origin()),
                },
                Ok(None) => SinkOutcome::Skipped,
                Err(failure) => SinkOutcome::Failed(failure.error),
            }
        };
        sinks.push(SinkResult {
            sink: sink.plan.label(),
            optional: sink.plan.optional,
            outcome,
        });
    }
    Ok(Explanation {
        verdict: Verdict::Sinks(sinks),
        dead_letter,
    })
}
