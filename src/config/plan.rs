//! Validation of the parsed routes file into a [`Plan`]: the connections to open and the
//! routes to run, with conditions and templates compiled and every endpoint checked by its
//! adapter. All errors are collected; nothing here touches the network.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::ConfigError;
use super::model::{
    CountHops, LimitsModel, Ordering, PathValues, RetryPolicy, RouteModel, Settings, SinkRef,
};
use super::yaml::{Document, child, index};
use crate::adapter::{ConnectionSpec, Role, System};
use crate::address::Endpoint;
use crate::expr::{Condition, Template};
use crate::message::HopCounting;
use crate::message::limits::Limits;

/// `off`, or an address `bridge run` can bind.
pub fn check_listen(listen: &str) -> Result<(), String> {
    if listen == "off" || listen.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    // A host name is resolved only when binding; insist on HOST:PORT with a numeric port
    // and a host that can be a name (not `http://HOST`).
    let is_host_name = |host: &str| {
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    match listen.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && is_host_name(host) && port.parse::<u16>().is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{listen}` is not `HOST:PORT` or `off`; write e.g. `127.0.0.1:9464` or `0.0.0.0:9464`"
        )),
    }
}

/// Whether `url` is a Redis URL this build can use. The error never shows its password.
fn check_redis_url(url: &str) -> Result<(), String> {
    #[cfg(feature = "redis")]
    return redis::Client::open(url).map(drop).map_err(|e| {
        crate::secret::hide_url_secrets(&format!("not a usable Redis URL: {e}"), url)
    });
    #[cfg(not(feature = "redis"))]
    return Err(format!(
        "this build of bridge has no Redis support (cargo feature `redis`) for `{}`",
        crate::secret::redact_url(url)
    ));
}

/// A validated routes file, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub settings: Settings,
    pub connections: BTreeMap<String, ConnectionSpec>,
    pub routes: Vec<RoutePlan>,
    /// Signs correlation tokens, when a route relays replies.
    pub signer: Option<crate::relay::Signer>,
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
    pub options: Value,
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
}

impl SinkPlan {
    /// The address as written, e.g. `kafka:orders-{{ headers.region }}`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.connection, self.path.source())
    }
}

/// The value at `segments`, if there is one.
fn value_at<'v>(value: &'v mut Value, segments: &[Segment]) -> Option<&'v mut Value> {
    let mut node = value;
    for segment in segments {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => map.get_mut(key)?,
            (Segment::Seq { index }, Value::Array(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Fixes a scalar of the wrong kind where the text is unambiguous: `"10"` where a number
/// is expected (a `${VAR}` always gives text) and `10` or `true` where text is expected
/// (librdkafka options, queue attributes). Returns whether it changed anything.
fn coerce_at(value: &mut Value, segments: &[Segment], message: &str) -> bool {
    let Some(node) = value_at(value, segments) else {
        return false;
    };
    let wants_text = message.contains("expected a string");
    match node {
        Value::String(text) if message.starts_with("invalid type: string") && !wants_text => {
            let typed = if let Ok(n) = text.parse::<i64>() {
                Value::from(n)
            } else if let Ok(n) = text.parse::<u64>() {
                Value::from(n)
            } else if let Some(n) = text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Value::Number(n)
            } else if let Ok(b) = text.parse::<bool>() {
                Value::Bool(b)
            } else {
                return false;
            };
            *node = typed;
            true
        }
        Value::Number(_) | Value::Bool(_) if wants_text => {
            *node = Value::String(node.to_string());
            true
        }
        _ => false,
    }
}

/// Removes the value at `segments` from `value`; false when there is nothing to remove.
fn remove_at(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

/// Replaces template expressions and blocks by a placeholder so an adapter can check the rest.
fn placeholder_path(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    loop {
        let next = [("{{", "}}"), ("{%", "%}")]
            .into_iter()
            .filter_map(|(open, close)| rest.find(open).map(|at| (at, close)))
            .min_by_key(|(at, _)| *at);
        let Some((start, close)) = next else { break };
        out.push_str(&rest[..start]);
        out.push_str("tmpl");
        match rest[start..].find(close) {
            Some(end) => rest = &rest[start + end + close.len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

struct Builder<'d> {
    document: &'d Document,
    errors: Vec<ConfigError>,
    connections: BTreeMap<String, ConnectionSpec>,
    broken_connections: HashSet<String>,
    /// `settings.limits`, under each route's own.
    limits: LimitsModel,
}

impl Builder<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(self.document.error(path, message));
    }

    /// Deserializes `value` found at `path`, recording every error with its inner path.
    fn parse<T: DeserializeOwned>(&mut self, path: &str, value: &Value) -> Option<T> {
        self.parse_with(path, value, crate::adapter::parse_strict)
    }

    /// Deserializes with `parse`, and after each error removes the offending field and
    /// tries again, so that one pass reports every bad field of a section, not the first.
    fn parse_with<T>(
        &mut self,
        path: &str,
        value: &Value,
        parse: impl Fn(Value) -> Result<T, serde_path_to_error::Error<serde_json::Error>>,
    ) -> Option<T> {
        const MAX_ERRORS_PER_SECTION: usize = 20;
        let mut value = value.clone();
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_SECTION {
            let error = match parse(value.clone()) {
                // The section goes on being checked without the removed fields; their errors
                // are recorded, so the file is refused all the same.
                Ok(parsed) => return Some(parsed),
                Err(error) => error,
            };
            let segments: Vec<Segment> = error.path().iter().cloned().collect();
            let inner = error.path().to_string();
            let at = if inner == "." {
                path.to_owned()
            } else if inner.starts_with('[') {
                format!("{path}{inner}")
            } else {
                child(path, &inner)
            };
            let message = error.into_inner().to_string();
            if coerce_at(&mut value, &segments, &message) {
                continue;
            }
            let consequence = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .is_some_and(|field| removed.iter().any(|r| r == &child(&at, field)));
            if !consequence {
                self.error(&at, super::wording::in_yaml_terms(&message));
            }
            if segments.is_empty() || !remove_at(&mut value, &segments) {
                return None;
            }
            removed.push(at);
        }
        None
    }

    fn settings(&mut self, value: Option<&Value>) -> Settings {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Settings::default();
        };
        let settings = self
            .parse::<Settings>("settings", value)
            .unwrap_or_default();
        if settings.max_hops == 0 {
            self.error("settings.max_hops", "max_hops must be at least 1");
        }
        if let Err(message) = check_listen(&settings.http.listen) {
            self.error("settings.http.listen", message);
        }
        self.limits_at_least_one("settings.limits", Some(&settings.limits));
        if settings.http.backlog_interval.is_zero() {
            self.error(
                "settings.http.backlog_interval",
                "backlog_interval must be longer than zero",
            );
        }
        settings
    }

    fn connections(&mut self, value: Option<&Value>) {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return;
        };
        let Some(map) = value.as_object() else {
            self.error(
                "connections",
                "`connections` must be a mapping of names to connections",
            );
            return;
        };
        for (name, spec) in map {
            let path = child("connections", name);
            if !crate::address::is_connection_name(name) {
                self.error(
                    &path,
                    "connection names may only hold letters, digits, `_` and `-`",
                );
                self.broken_connections.insert(name.clone());
                continue;
            }
            match self.connection(&path, spec) {
                Some(spec) => {
                    self.connections.insert(name.clone(), spec);
                }
                None => {
                    self.broken_connections.insert(name.clone());
                }
            }
        }
    }

    fn connection(&mut self, path: &str, value: &Value) -> Option<ConnectionSpec> {
        let Some(fields) = value.as_object() else {
            self.error(path, "a connection must be a mapping with a `type`");
            return None;
        };
        let known: Vec<&str> = System::ALL.iter().map(|s| s.type_name()).collect();
        let type_path = child(path, "type");
        let Some(type_value) = fields.get("type") else {
            self.error(path, format!("missing `type`; one of {}", known.join(", ")));
            return None;
        };
        let Some(type_name) = type_value.as_str() else {
            self.error(
                &type_path,
                format!("`type` is one word, one of {}", known.join(", ")),
            );
            return None;
        };
        let Some(system) = System::from_type(type_name) else {
            self.error(
                &type_path,
                format!(
                    "unknown connection type `{type_name}`; one of {}",
                    known.join(", ")
                ),
            );
            return None;
        };
        if !system.is_built() {
            self.error(
                &type_path,
                format!(
                    "this bridge was built without the `{}` feature; rebuild with `--features {}`",
                    system.feature().unwrap_or_default(),
                    system.feature().unwrap_or_default()
                ),
            );
            return None;
        }
        let mut rest = fields.clone();
        rest.remove("type");
        let spec = self.parse_with(path, &Value::Object(rest), |v| {
            ConnectionSpec::parse(system, v)
        })?;
        if let Err(problem) = spec.check() {
            let at = problem
                .field
                .map_or(path.to_owned(), |field| child(path, field));
            self.error(&at, problem.message);
            return None;
        }
        Some(spec)
    }

    /// Checks a source's address with its options. A mistake that goes away without the
    /// options is theirs, so it points at `options`; any other at the address.
    fn check_source(
        &mut self,
        spec: &ConnectionSpec,
        endpoint: &Endpoint,
        options: &Value,
        (endpoint_path, options_path): (&str, &str),
    ) -> bool {
        let Err(message) = spec.check_endpoint(&endpoint.path, Role::Source, options) else {
            return true;
        };
        let options_at_fault = !options.is_null()
            && spec
                .check_endpoint(&endpoint.path, Role::Source, &Value::Null)
                .is_ok();
        self.error(
            if options_at_fault {
                options_path
            } else {
                endpoint_path
            },
            super::wording::in_yaml_terms(&message),
        );
        false
    }

    /// Resolves an address's connection, or records why it cannot.
    fn endpoint_connection(&mut self, path: &str, endpoint: &Endpoint) -> Option<ConnectionSpec> {
        if let Some(spec) = self.connections.get(&endpoint.connection) {
            return Some(spec.clone());
        }
        if !self.broken_connections.contains(&endpoint.connection) {
            let mut known: Vec<&str> = self.connections.keys().map(String::as_str).collect();
            known.sort_unstable();
            let hint = if known.is_empty() {
                "no connections are defined".to_owned()
            } else {
                format!("defined: {}", known.join(", "))
            };
            self.error(
                path,
                format!("unknown connection `{}` ({hint})", endpoint.connection),
            );
        }
        None
    }

    fn condition(&mut self, path: &str, source: Option<&String>) -> Option<Condition> {
        let source = source?;
        match Condition::compile(source) {
            Ok(condition) => Some(condition),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    fn sink(&mut self, path: &str, sink: &SinkRef) -> Option<SinkPlan> {
        let endpoint_path = if sink.key.is_some()
            || sink.when.is_some()
            || sink.optional
            || sink.path_values != PathValues::Name
        {
            child(path, "endpoint")
        } else {
            path.to_owned()
        };
        let endpoint: Endpoint = match sink.endpoint.parse() {
            Ok(endpoint) => endpoint,
            Err(error) => {
                let message = if sink
                    .endpoint
                    .split(':')
                    .next()
                    .is_some_and(|c| c.contains("{{"))
                {
                    "the connection part of a sink address cannot be a template".to_owned()
                } else {
                    error.to_string()
                };
                self.error(&endpoint_path, message);
                return None;
            }
        };
        let spec = self.endpoint_connection(&endpoint_path, &endpoint);
        let one_name = sink.path_values == PathValues::Name;
        let template = match Template::compile_path(&endpoint.path, one_name) {
            Ok(template) => Some(template),
            Err(message) => {
                self.error(&endpoint_path, message);
                None
            }
        };
        if let Some(spec) = &spec
            && let Err(message) =
                spec.check_endpoint(&placeholder_path(&endpoint.path), Role::Sink, &Value::Null)
        {
            self.error(&endpoint_path, message);
        }
        let key = match &sink.key {
            Some(source) => match Template::compile(source) {
                Ok(key) => Some(key),
                Err(message) => {
                    self.error(&child(path, "key"), message);
                    None
                }
            },
            None => None,
        };
        let when = self.condition(&child(path, "when"), sink.when.as_ref());
        if sink.key.is_some() && key.is_none() || sink.when.is_some() && when.is_none() {
            return None;
        }
        Some(SinkPlan {
            connection: endpoint.connection,
            path: template?,
            key,
            when,
            optional: sink.optional,
            to_reply_address: false,
        })
        .filter(|_| spec.is_some())
    }

    fn route(
        &mut self,
        path: &str,
        value: &Value,
        names: &mut HashMap<String, String>,
    ) -> Option<RoutePlan> {
        let model: RouteModel = self.parse(path, value)?;
        let mut ok = true;
        if model.name.trim().is_empty() {
            self.error(&child(path, "name"), "route names cannot be empty");
            ok = false;
        } else if let Some(first) = names.insert(model.name.clone(), path.to_owned()) {
            self.error(
                &child(path, "name"),
                format!("route name `{}` is already used by {first}", model.name),
            );
            ok = false;
        }
        let from_path = if model.from.options.is_null() {
            child(path, "from")
        } else {
            child(&child(path, "from"), "endpoint")
        };
        let mut source_spec = None;
        let source = match model.from.endpoint.parse::<Endpoint>() {
            Ok(endpoint) => {
                source_spec = self.endpoint_connection(&from_path, &endpoint);
                let options_path = child(&child(path, "from"), "options");
                if let Some(spec) = &source_spec {
                    ok &= self.check_source(
                        spec,
                        &endpoint,
                        &model.from.options,
                        (&from_path, &options_path),
                    );
                }
                Some(SourcePlan {
                    endpoint,
                    options: model.from.options.clone(),
                })
            }
            Err(error) => {
                self.error(&from_path, error.to_string());
                None
            }
        };
        let when = self.condition(&child(path, "when"), model.when.as_ref());
        ok &= model.when.is_none() || when.is_some();
        let to_path = child(path, "to");
        if model.to.0.is_empty() {
            self.error(&to_path, "a route needs at least one sink in `to`");
            ok = false;
        }
        let single = model.to.0.len() == 1 && !value.get("to").is_some_and(Value::is_array);
        let mut sinks = Vec::new();
        for (i, sink) in model.to.0.iter().enumerate() {
            let sink_path = if single {
                to_path.clone()
            } else {
                index(&to_path, i)
            };
            match self.sink(&sink_path, sink) {
                Some(sink) => sinks.push(sink),
                None => ok = false,
            }
        }
        if !sinks.is_empty() && sinks.iter().all(|s| s.optional) {
            self.error(
                &to_path,
                "every sink is optional; mark at least one as required",
            );
            ok = false;
        }
        let dead_letter = match &model.dead_letter {
            Some(address) => {
                let plan = self.sink(
                    &child(path, "dead_letter"),
                    &SinkRef {
                        endpoint: address.clone(),
                        ..SinkRef::default()
                    },
                );
                ok &= plan.is_some();
                plan
            }
            None => {
                if let (Some(spec), Some(source)) = (&source_spec, &source)
                    && let Err(reason) = spec
                        .check_reject_without_dead_letter(&source.endpoint.path, &source.options)
                {
                    self.error(
                        path,
                        format!("route `{}` needs a `dead_letter`: {reason}", model.name),
                    );
                    ok = false;
                }
                None
            }
        };
        ok &= self.retry(&child(path, "retry"), &model.retry);
        if model.max_in_flight == 0 {
            self.error(
                &child(path, "max_in_flight"),
                "max_in_flight must be at least 1",
            );
            ok = false;
        }
        let dedup = match &model.dedup {
            Some(dedup) => {
                let plan = self.dedup(&child(path, "dedup"), dedup);
                ok &= plan.is_some();
                plan
            }
            None => None,
        };
        if let Some(limits) = &model.limits
            && limits.max_open_sinks.is_some()
        {
            self.error(
                &child(&child(path, "limits"), "max_open_sinks"),
                "max_open_sinks is a limit of the whole process: set it under settings.limits",
            );
            ok = false;
        }
        ok &= self.limits_at_least_one(&child(path, "limits"), model.limits.as_ref());
        let route_limits = model.limits.clone().unwrap_or_default();
        let limits = source_spec
            .as_ref()
            .map(|spec| self.resolve_limits(&route_limits, spec));
        let reply = match &model.reply {
            Some(reply) => {
                let plan = self.reply(
                    &child(path, "reply"),
                    reply,
                    source_spec.as_ref(),
                    dead_letter.is_some(),
                    &route_limits,
                );
                ok &= plan.is_some();
                plan
            }
            None => None,
        };
        if !ok {
            return None;
        }
        Some(RoutePlan {
            name: model.name,
            source: source?,
            when,
            sinks,
            dead_letter,
            retry: model.retry,
            ordering: model.ordering,
            max_in_flight: model.max_in_flight,
            count_hops: model.count_hops,
            // Resolved once every route is known (`loops::resolve`).
            hop_counting: HopCounting::Always,
            reply,
            dedup,
            limits: limits?,
        })
    }

    /// Refuses a limit of 0 (it would refuse every message).
    fn limits_at_least_one(&mut self, path: &str, limits: Option<&LimitsModel>) -> bool {
        let Some(limits) = limits else {
            return true;
        };
        let fields = [
            ("max_message_bytes", limits.max_message_bytes),
            ("max_headers", limits.max_headers),
            ("max_header_name_bytes", limits.max_header_name_bytes),
            ("max_header_value_bytes", limits.max_header_value_bytes),
            ("max_open_sinks", limits.max_open_sinks),
        ];
        let mut ok = true;
        for (field, value) in fields {
            if value == Some(0) {
                self.error(&child(path, field), format!("{field} must be at least 1"));
                ok = false;
            }
        }
        ok
    }

    /// A route's limits: its own, else the file's settings, else the defaults (the largest
    /// message of the source's system).
    fn resolve_limits(&self, route: &LimitsModel, source: &ConnectionSpec) -> Limits {
        let settings = &self.limits;
        let defaults = Limits::with_max_message_bytes(source.max_message_bytes());
        Limits {
            max_message_bytes: route
                .max_message_bytes
                .or(settings.max_message_bytes)
                .unwrap_or(defaults.max_message_bytes),
            max_headers: route
                .max_headers
                .or(settings.max_headers)
                .unwrap_or(defaults.max_headers),
            max_header_name_bytes: route
                .max_header_name_bytes
                .or(settings.max_header_name_bytes)
                .unwrap_or(defaults.max_header_name_bytes),
            max_header_value_bytes: route
                .max_header_value_bytes
                .or(settings.max_header_value_bytes)
                .unwrap_or(defaults.max_header_value_bytes),
        }
    }

    /// Checks a route's `dedup`.
    fn dedup(&mut self, path: &str, model: &super::model::DedupModel) -> Option<DedupPlan> {
        let mut ok = true;
        let key = match &model.key {
            None => None,
            Some(source) => match Template::compile(source) {
                Ok(template) => Some(template),
                Err(message) => {
                    self.error(&child(path, "key"), message);
                    ok = false;
                    None
                }
            },
        };
        if model.window.is_zero() {
            self.error(
                &child(path, "window"),
                "the dedup window must be longer than zero",
            );
            ok = false;
        }
        if model.capacity == 0 {
            self.error(&child(path, "capacity"), "capacity must be at least 1");
            ok = false;
        }
        let redis = match model.store.expose() {
            "memory" => None,
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                if let Err(problem) = check_redis_url(url) {
                    self.error(&child(path, "store"), problem);
                    ok = false;
                }
                Some(model.store.clone())
            }
            _ => {
                self.error(
                    &child(path, "store"),
                    format!(
                        "unknown store `{}`: write `memory` or a `redis://HOST:PORT/DB` URL",
                        model.store.redacted()
                    ),
                );
                ok = false;
                None
            }
        };
        ok.then(|| DedupPlan {
            key,
            window: model.window,
            redis,
            capacity: model.capacity,
        })
    }

    /// Checks the reply half of a request-reply route.
    fn reply(
        &mut self,
        path: &str,
        reply: &crate::config::model::ReplyModel,
        requests_from: Option<&ConnectionSpec>,
        has_dead_letter: bool,
        route_limits: &LimitsModel,
    ) -> Option<ReplyPlan> {
        let from_path = if reply.from.options.is_null() {
            child(path, "from")
        } else {
            child(&child(path, "from"), "endpoint")
        };
        let endpoint: Endpoint = match reply.from.endpoint.parse() {
            Ok(endpoint) => endpoint,
            Err(error) => {
                self.error(&from_path, error.to_string());
                return None;
            }
        };
        let spec = self.endpoint_connection(&from_path, &endpoint)?;
        let options_path = child(&child(path, "from"), "options");
        let mut ok = self.check_source(
            &spec,
            &endpoint,
            &reply.from.options,
            (&from_path, &options_path),
        );
        if !has_dead_letter
            && let Err(reason) =
                spec.check_reject_without_dead_letter(&endpoint.path, &reply.from.options)
        {
            self.error(
                path,
                format!(
                    "a reply route needs a `dead_letter` for replies it cannot relay: {reason}"
                ),
            );
            ok = false;
        }
        if let Some(requests) = requests_from
            && !requests.accepts_replies()
        {
            self.error(
                path,
                format!(
                    "{} cannot receive relayed replies",
                    requests.system().type_name()
                ),
            );
            ok = false;
        }
        let address = match (&reply.address, spec.reply_address(&endpoint.path)) {
            (Some(address), _) => Some(address.clone()),
            (None, Some(address)) => Some(address),
            (None, None) => {
                self.error(path, format!("give `reply.address`: the reply-to repliers answer to (for `{endpoint}`, the topic it subscribes to)"));
                None
            }
        };
        if reply.timeout.is_zero() {
            self.error(
                &child(path, "timeout"),
                "the reply timeout must be longer than zero",
            );
            ok = false;
        } else if reply.timeout > crate::relay::MAX_REPLY_TIMEOUT {
            self.error(
                &child(path, "timeout"),
                "the reply timeout is at most 30 days (720h)",
            );
            ok = false;
        }
        let allow = match &reply.allow {
            None => Some(crate::relay::ReplyAllow::default()),
            Some(patterns) if patterns.is_empty() => {
                self.error(
                    &child(path, "allow"),
                    "an empty list allows no reply at all; list `default` or patterns",
                );
                None
            }
            Some(patterns) => match crate::relay::ReplyAllow::compile(patterns) {
                Ok(allow) => Some(allow),
                Err(message) => {
                    self.error(&child(path, "allow"), message);
                    None
                }
            },
        };
        let dedup = match &reply.dedup {
            None => Some(None),
            Some(model) => self
                .dedup(
                    &child(path, "dedup"),
                    &super::model::DedupModel {
                        key: None,
                        window: reply.timeout,
                        store: model.store.clone(),
                        capacity: model.capacity,
                    },
                )
                .map(Some),
        };
        let limits = self.resolve_limits(route_limits, &spec);
        (ok && address.is_some()).then_some(())?;
        Some(ReplyPlan {
            source: SourcePlan {
                endpoint,
                options: reply.from.options.clone(),
            },
            address: address.unwrap_or_default(),
            timeout: reply.timeout,
            unmatched: reply.unmatched,
            hop_counting: HopCounting::Always,
            allow: allow?,
            dedup: dedup?,
            limits,
        })
    }

    fn retry(&mut self, path: &str, retry: &RetryPolicy) -> bool {
        let mut ok = true;
        if retry.max_attempts == 0 {
            self.error(
                &child(path, "max_attempts"),
                "max_attempts must be at least 1",
            );
            ok = false;
        }
        if retry.initial_backoff > retry.max_backoff {
            self.error(
                &child(path, "initial_backoff"),
                "initial_backoff is longer than max_backoff",
            );
            ok = false;
        }
        if retry.multiplier.is_nan() || retry.multiplier < 1.0 {
            self.error(
                &child(path, "multiplier"),
                "multiplier must be at least 1.0",
            );
            ok = false;
        }
        ok
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
        })
    } else {
        let mut errors = builder.errors;
        errors.sort_by_key(|e| (e.line.unwrap_or(0), e.column.unwrap_or(0)));
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_replaces_each_template_expression() {
        assert_eq!(
            placeholder_path("exchange/{{ headers.x }}/k-{{key}}"),
            "exchange/tmpl/k-tmpl"
        );
        assert_eq!(
            placeholder_path("q-{% if key %}a{% endif %}"),
            "q-tmplatmpl"
        );
    }
}
