//! Validation of the parsed routes file into a [`Plan`]: the connections to open and the
//! routes to run, with conditions and templates compiled and every endpoint checked by its
//! adapter. All errors are collected; nothing here touches the network.
//!
//! One file per part of the routes file: `settings`, `connections`, `routes` (a route's
//! source, sinks and checks) and `replies` (a route's `reply` and `dedup`); `recovery`
//! reads a section with serde and goes on past each error, so that one pass reports every
//! bad field.

mod connections;
mod recovery;
mod replies;
mod routes;
mod settings;
mod shaping;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ConfigError;
use super::model::{CountHops, LimitsModel, Ordering, RetryPolicy, Select, Settings};
use super::yaml::{Document, child, index};
use crate::adapter::{Connection, SourceOptions};
use crate::address::Endpoint;
use crate::expr::{Condition, Template};
use crate::message::HopCounting;
use crate::message::limits::Limits;
use crate::transform::Transform;

pub use settings::check_listen;

/// A validated routes file, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub settings: Settings,
    pub connections: BTreeMap<String, Arc<dyn Connection>>,
    pub routes: Vec<RoutePlan>,
    /// Signs correlation tokens, when a route relays replies.
    pub signer: Option<crate::relay::Signer>,
    /// What is allowed but probably not meant, each with its place in the file.
    pub warnings: Vec<ConfigError>,
}

/// One validated route.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub name: String,
    pub source: SourcePlan,
    pub when: Option<Condition>,
    pub sinks: Vec<SinkPlan>,
    pub dead_letter: Option<SinkPlan>,
    pub retry: RetryPolicy,
    pub ordering: Ordering,
    pub max_in_flight: usize,
    /// `count_hops` as written.
    pub count_hops: CountHops,
    /// What the route does with `bridge-hops` on what it sends, resolved from `count_hops`
    /// against the whole file.
    pub hop_counting: HopCounting,
    pub reply: Option<ReplyPlan>,
    pub dedup: Option<DedupPlan>,
    /// The limits each message of the route's source is checked against.
    pub limits: Limits,
    /// Applied to each message after the route's `when`, before the sinks'.
    pub transform: Option<Transform>,
    /// How fast the route takes messages from its source.
    pub rate: Option<RatePlan>,
    /// Whether each message goes to every matching sink or to the first.
    pub select: Select,
    /// The key of `ordering: key`, when not the message's own.
    pub ordering_key: Option<Template>,
}

/// A checked rate limit: `messages` per `per`, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePlan {
    pub messages: u32,
    pub per: std::time::Duration,
    pub burst: u32,
}

/// A route's deduplication step, checked.
#[derive(Debug, Clone)]
pub struct DedupPlan {
    pub key: Option<Template>,
    pub window: std::time::Duration,
    /// `None` for memory, else the Redis URL.
    pub redis: Option<crate::secret::SecretUrl>,
    pub capacity: usize,
}

/// The reply half of a request-reply route.
#[derive(Debug, Clone)]
pub struct ReplyPlan {
    pub source: SourcePlan,
    pub address: String,
    pub timeout: std::time::Duration,
    pub unmatched: crate::relay::Unmatched,
    /// What the relay does with `bridge-hops` on the replies it sends (as the route's
    /// `hop_counting`).
    pub hop_counting: HopCounting,
    /// Where replies may go.
    pub allow: crate::relay::ReplyAllow,
    /// Relays each token at most once, when set (keyed on the token, for the timeout).
    pub dedup: Option<DedupPlan>,
    /// The limits each reply is checked against.
    pub limits: Limits,
}

/// The source of a route.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    pub endpoint: Endpoint,
    /// Parsed once, by the connection's adapter.
    pub options: SourceOptions,
}

/// A sink of a route (or its dead letter).
#[derive(Debug, Clone)]
pub struct SinkPlan {
    /// The connection, never templated.
    pub connection: String,
    /// The path after `CONNECTION:`, possibly a template.
    pub path: Template,
    /// Sets the message key before sending.
    pub key: Option<Template>,
    /// The sink only receives messages for which this holds.
    pub when: Option<Condition>,
    pub optional: bool,
    /// The destination is the message's reply-to, in the connection's terms (the reply
    /// half of a request-reply route); `path` is unused.
    pub to_reply_address: bool,
    /// Applied after the route's transform, for this sink only.
    pub transform: Option<Transform>,
    /// How fast this sink is sent to (every attempt counts).
    pub rate: Option<RatePlan>,
}

impl SinkPlan {
    /// The address as written, e.g. `kafka:orders-{{ headers.region }}`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.connection, self.path.source())
    }
}

struct Builder<'d> {
    document: &'d Document,
    errors: Vec<ConfigError>,
    connections: BTreeMap<String, Arc<dyn Connection>>,
    broken_connections: HashSet<String>,
    /// `settings.limits`, under each route's own.
    limits: LimitsModel,
    warnings: Vec<ConfigError>,
}

impl Builder<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(self.document.error(path, message));
    }

    fn warning(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(self.document.error(path, message));
    }

    /// Deserializes `value` found at `path`, recording every error with its inner path.
    fn parse<T: DeserializeOwned>(&mut self, path: &str, value: &Value) -> Option<T> {
        self.parse_with(path, value, crate::strict::parse_strict)
    }
}

/// Validates a parsed document into a plan, or every error found.
pub(super) fn build(document: &Document) -> Result<Plan, Vec<ConfigError>> {
    let mut builder = Builder {
        document,
        errors: Vec::new(),
        connections: BTreeMap::new(),
        broken_connections: HashSet::new(),
        limits: LimitsModel::default(),
        warnings: Vec::new(),
    };
    let empty = serde_json::Map::new();
    let top = match &document.root {
        Value::Object(map) => map,
        Value::Null => &empty,
        _ => {
            builder.error(
                "",
                "the routes file must be a mapping with `connections` and `routes`",
            );
            return Err(builder.errors);
        }
    };
    for key in top.keys() {
        if !["settings", "connections", "routes"].contains(&key.as_str()) {
            builder.error(
                key,
                format!(
                    "unknown field `{key}`, expected one of `settings`, `connections`, `routes`"
                ),
            );
        }
    }
    let settings = builder.settings(top.get("settings"));
    builder.limits = settings.limits.clone();
    builder.connections(top.get("connections"));
    let mut routes = Vec::new();
    match top.get("routes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut names = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(route) = builder.route(&index("routes", i), item, &mut names) {
                    routes.push(route);
                }
            }
        }
        Some(_) => builder.error("routes", "`routes` must be a list of routes"),
    }
    // Any route that asks for replies needs the key, even one with other mistakes.
    let first_relay = match top.get("routes") {
        Some(Value::Array(items)) => items.iter().position(|r| r.get("reply").is_some()),
        _ => None,
    };
    let signer = match (
        settings.reply_signing_key.as_ref().map(|k| k.expose()),
        first_relay,
    ) {
        (Some(key), _) if key.len() < 16 => {
            builder.error(
                "settings.reply_signing_key",
                "the reply signing key must be at least 16 bytes",
            );
            None
        }
        (Some(key), _) => Some(crate::relay::Signer::new(key.as_bytes())),
        (None, Some(at)) => {
            builder.error(
                &child(&index("routes", at), "reply"),
                "replies are relayed only with `settings.reply_signing_key` (at least 16 bytes, e.g. ${file:/run/secrets/bridge-reply-key})",
            );
            None
        }
        (None, None) => None,
    };
    if builder.errors.is_empty() {
        super::loops::resolve(&mut routes, &builder.connections);
        Ok(Plan {
            settings,
            connections: builder.connections,
            routes,
            signer,
            warnings: builder.warnings,
        })
    } else {
        let mut errors = builder.errors;
        errors.sort_by_key(|e| (e.line.unwrap_or(0), e.column.unwrap_or(0)));
        Err(errors)
    }
}
