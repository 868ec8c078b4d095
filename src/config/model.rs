//! The routes file as written: serde types whose doc comments are the reference for each
//! field (docs/configuration.md repeats them with examples). Unknown fields are refused
//! everywhere. Defaults are named functions so the numbers live in one place.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// Process-wide settings (`settings:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How long `bridge run` waits, after SIGTERM or SIGINT, for in-flight messages to be
    /// confirmed and acknowledged before it gives up and exits 1 (they are then redelivered
    /// by their brokers). Default 30s; match the pod's `terminationGracePeriodSeconds`.
    #[serde(default = "default_drain_timeout", deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// The loop guard: a message that has already been forwarded this many times by bridge
    /// (the `bridge-hops` header) is dead-lettered instead. Default 10, at least 1.
    #[serde(default = "default_max_hops")]
    pub max_hops: u32,
    /// The secret that signs correlation tokens of request-reply routes (`reply:`); at
    /// least 16 bytes, the same for every replica. Read it from a file or the environment
    /// (`${file:/run/secrets/bridge-reply-key}`); it is never printed.
    #[serde(default)]
    pub reply_signing_key: Option<Secret>,
    /// The HTTP port for `/metrics`, `/healthz` and `/readyz`.
    #[serde(default)]
    pub http: HttpSettings,
    /// Limits on each message every route receives (a route's own `limits` override
    /// them), and on the sinks a process keeps open.
    #[serde(default)]
    pub limits: LimitsModel,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            drain_timeout: default_drain_timeout(),
            max_hops: default_max_hops(),
            reply_signing_key: None,
            http: HttpSettings::default(),
            limits: LimitsModel::default(),
        }
    }
}

/// Limits (`settings.limits`, `routes[].limits`). A message over one is refused as a
/// permanent error: dead-lettered with the reason, never truncated (docs/security.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsModel {
    /// Largest message (body, key, envelope fields, header names and values together), in
    /// bytes. Default: the largest message the source's system delivers by default
    /// (Kafka 100000000, RabbitMQ 134217728, SQS and SNS 1048704, Pub/Sub 10000000).
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Most headers of one message. Default 1000.
    #[serde(default)]
    pub max_headers: Option<usize>,
    /// Longest header name, in bytes. Default 1024.
    #[serde(default)]
    pub max_header_name_bytes: Option<usize>,
    /// Longest header value, in bytes. Default 1048576.
    #[serde(default)]
    pub max_header_value_bytes: Option<usize>,
    /// `settings.limits` only: most sinks kept open for endpoints rendered from templates
    /// and for reply addresses; the least recently used is closed first. Default 1000.
    #[serde(default)]
    pub max_open_sinks: Option<usize>,
}

pub fn default_max_open_sinks() -> usize {
    1_000
}

/// The HTTP port (`settings.http`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `HOST:PORT` to listen on, or `off`. Default `127.0.0.1:9464`: loopback, so only the
    /// pod (kubelet probes, a Prometheus sidecar) reaches it; write `0.0.0.0:9464` to let
    /// Prometheus scrape it from outside. `bridge run --http-listen` overrides it.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// How often each source's backlog is asked of its broker. Default 15s.
    #[serde(default = "default_backlog_interval", deserialize_with = "duration")]
    pub backlog_interval: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: default_http_listen(),
            backlog_interval: default_backlog_interval(),
        }
    }
}

pub fn default_http_listen() -> String {
    "127.0.0.1:9464".to_owned()
}

pub fn default_backlog_interval() -> Duration {
    Duration::from_secs(15)
}

pub use crate::secret::Secret;

pub fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

pub fn default_max_hops() -> u32 {
    10
}

/// One route (`routes[]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteModel {
    /// Unique name, used in logs, metrics and dead-letter headers.
    pub name: String,
    /// The source endpoint: an address, or `{endpoint, options}`.
    pub from: SourceRef,
    /// One sink address, or a list of sinks (addresses or `{endpoint, key, when, optional}`).
    pub to: SinkList,
    /// CEL condition; messages for which it is false are acknowledged and not forwarded.
    #[serde(default)]
    pub when: Option<String>,
    /// Where messages go that cannot be delivered (any system). Without it, the source
    /// broker's own reject is used; sources without one (Kafka) require it.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Retry policy of every sink of the route.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `none` (default): messages are pipelined freely. `key`: messages with the same key
    /// are delivered one after another, in order; different keys run in parallel.
    #[serde(default)]
    pub ordering: Ordering,
    /// With `ordering: key`: a template giving the key messages are ordered by, instead
    /// of the key the source delivered (for sources without keys, or to order by a field).
    #[serde(default)]
    pub ordering_key: Option<String>,
    /// Most messages of this route being processed at once (the in-flight window).
    /// Default 256, at least 1.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Whether the route adds one to the `bridge-hops` header of what it sends (the loop
    /// guard): `auto` (default), `true` or `false`. See [`CountHops`].
    #[serde(default)]
    pub count_hops: CountHops,
    /// Makes the route a request-reply relay (docs/request-reply.md).
    #[serde(default)]
    pub reply: Option<ReplyModel>,
    /// Drops messages whose identity was already delivered within a time window
    /// (docs/reliability.md#deduplication).
    #[serde(default)]
    pub dedup: Option<DedupModel>,
    /// Limits on each message of this route, over `settings.limits`.
    #[serde(default)]
    pub limits: Option<LimitsModel>,
    /// Reshapes each message before it reaches the sinks (docs/configuration.md#transforms).
    #[serde(default)]
    pub transform: Option<TransformModel>,
    /// Most messages per interval the route takes from its source; past it the route
    /// waits (backpressure), it never drops.
    #[serde(default)]
    pub rate: Option<RateModel>,
    /// `all` (default): every sink whose `when` holds receives the message. `first`: only
    /// the first such sink, in the order of `to`; a last sink without `when` is the default.
    #[serde(default)]
    pub select: Select,
}

/// Which sinks of a route receive a message (`routes[].select`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    #[default]
    All,
    First,
}

/// A reshaping of each message (`routes[].transform`, `routes[].to[].transform`). Every
/// expression of one transform reads the message as it was before that transform; the
/// parts apply in this order: header operations, envelope fields, body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformModel {
    /// Operations on headers, applied as `rename`, `remove`, `keep`, `copy_origin`, `set`.
    #[serde(default)]
    pub headers: HeaderOpsModel,
    /// Template of the key; a rendering that is empty removes the key.
    #[serde(default)]
    pub key: Option<String>,
    /// Template of the correlation id; empty removes it.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Template of the reply-to address; empty removes it.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Template of the message id; empty removes it.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Template of the content type; empty removes it.
    #[serde(default)]
    pub content_type: Option<String>,
    /// A new body: `{jq: PROGRAM}` (a JSON projection of the body) or
    /// `{template: TEXT}`.
    #[serde(default)]
    pub body: Option<BodyModel>,
}

/// Header operations of a transform (`transform.headers`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsModel {
    /// Old name to new name; the values (every one of a repeated name) keep their place.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Names or globs (`x-internal-*`) of headers to drop.
    #[serde(default)]
    pub remove: Vec<String>,
    /// When given, only headers matching one of these names or globs stay (`bridge-*`
    /// bookkeeping such as the hop count always stays).
    #[serde(default)]
    pub keep: Option<Vec<String>>,
    /// Copies every `origin` field as a header `origin-NAME`, e.g. `origin-routing_key`.
    #[serde(default)]
    pub copy_origin: bool,
    /// Name to template; replaces every header of that name. A rendering that is empty
    /// removes the header instead.
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
}

/// A new body (`transform.body`): exactly one of `jq` or `template`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyModel {
    /// A jq program run on the body parsed as JSON; its one result, as JSON, is the body.
    #[serde(default)]
    pub jq: Option<String>,
    /// A template whose rendering is the body (UTF-8 text).
    #[serde(default)]
    pub template: Option<String>,
}

/// A rate limit (`rate`): at most `messages` per `per`, with bursts up to `burst`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateModel {
    /// Messages allowed per interval, at least 1.
    pub messages: u32,
    /// The interval. Default 1s.
    #[serde(default = "default_rate_per", deserialize_with = "duration")]
    pub per: Duration,
    /// Most messages let through at once after a quiet spell. Default: `messages`.
    #[serde(default)]
    pub burst: Option<u32>,
}

pub fn default_rate_per() -> Duration {
    Duration::from_secs(1)
}

/// Deduplication of a route (`routes[].dedup`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupModel {
    /// A template giving each message's identity, e.g. `{{ headers.order_id }}`. Default:
    /// the message id. Messages whose identity is empty are not deduplicated.
    #[serde(default)]
    pub key: Option<String>,
    /// How long an identity is remembered after its message was delivered. Default 10m.
    #[serde(default = "default_dedup_window", deserialize_with = "duration")]
    pub window: Duration,
    /// `memory` (default): this process only, forgotten on restart.
    /// `redis://[USER:PASSWORD@]HOST:PORT/DB` or `rediss://...` (TLS): shared by every
    /// replica and kept across restarts.
    #[serde(default = "default_dedup_store")]
    pub store: crate::secret::SecretUrl,
    /// The most identities the memory store keeps; the oldest are forgotten first.
    /// Default 1000000.
    #[serde(default = "default_dedup_capacity")]
    pub capacity: usize,
}

pub fn default_dedup_window() -> Duration {
    Duration::from_secs(600)
}

pub fn default_dedup_store() -> crate::secret::SecretUrl {
    crate::secret::SecretUrl::new("memory")
}

pub fn default_dedup_capacity() -> usize {
    1_000_000
}

/// The reply half of a request-reply route (`routes[].reply`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyModel {
    /// Where repliers answer; this route consumes it: an address or `{endpoint, options}`.
    pub from: SourceRef,
    /// The reply-to written into forwarded requests, in the replier's system's terms (a
    /// Kafka topic, a RabbitMQ queue, an SQS queue, an SNS or Pub/Sub topic). Default: the
    /// topic or queue of `from`; required when `from` is a Pub/Sub subscription.
    #[serde(default)]
    pub address: Option<String>,
    /// How long a reply may take; a later one is unmatched. Default 30s; hours are fine.
    #[serde(default = "default_reply_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// What becomes of a reply that is late or whose correlation id is not a valid token:
    /// `dead_letter` (default: the route's dead letter) or `drop` (logged).
    #[serde(default)]
    pub unmatched: crate::relay::Unmatched,
    /// Reply addresses a requester may name, as patterns of the address as the requester
    /// wrote it: `*` matches any text without `/` or `:`, `**` any text, and `default` the
    /// plain queue and topic names of the request connection (docs/request-reply.md).
    /// Default `[default]`. A reply to any other address is dead-lettered.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Relays each correlation token at most once: a replayed reply (the same token again
    /// before its deadline) is acknowledged without being relayed. Off by default.
    #[serde(default)]
    pub dedup: Option<ReplyDedupModel>,
}

/// Deduplication of relayed replies by their correlation token (`routes[].reply.dedup`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyDedupModel {
    /// `memory` (default) or `redis://HOST:PORT/DB`, as for a route's `dedup.store`.
    #[serde(default = "default_dedup_store")]
    pub store: crate::secret::SecretUrl,
    /// The most tokens the memory store keeps. Default 1000000.
    #[serde(default = "default_dedup_capacity")]
    pub capacity: usize,
}

pub fn default_reply_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `routes[].count_hops`: where the route adds one to the `bridge-hops` header of what it
/// sends (the loop guard, docs/guarantees.md#loop-guard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CountHops {
    /// `auto`: on every message when the route can feed its own source through the routes
    /// of this file (a loop is possible), else only on messages that already carry a count
    /// (from another bridge or route), so that no header is added where no loop can form.
    #[default]
    Auto,
    /// `true`: on every message.
    Always,
    /// `false`: never; a received count travels on unchanged.
    Never,
}

impl<'de> Deserialize<'de> for CountHops {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountHopsVisitor;

        impl Visitor<'_> for CountHopsVisitor {
            type Value = CountHops;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("`auto`, `true` or `false`")
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<CountHops, E> {
                Ok(if value {
                    CountHops::Always
                } else {
                    CountHops::Never
                })
            }

            // `true` and `false` also come as text from `${VAR}` interpolation.
            fn visit_str<E: de::Error>(self, value: &str) -> Result<CountHops, E> {
                match value {
                    "auto" => Ok(CountHops::Auto),
                    "true" => Ok(CountHops::Always),
                    "false" => Ok(CountHops::Never),
                    _ => Err(E::invalid_value(de::Unexpected::Str(value), &self)),
                }
            }
        }

        deserializer.deserialize_any(CountHopsVisitor)
    }
}

pub fn default_max_in_flight() -> usize {
    256
}

/// Per-key ordering of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    #[default]
    None,
    Key,
}

/// Retries of a sink: exponential backoff with jitter, bounded in attempts and in time.
/// After the last attempt the message goes to the dead letter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 5, at least 1.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt. Default 100ms.
    #[serde(default = "default_initial_backoff", deserialize_with = "duration")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts before jitter; jitter adds up to as much again.
    /// Default 10s. Also the pause before a message whose dead letter failed is handed
    /// back to its source.
    #[serde(default = "default_max_backoff", deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Growth of the wait per attempt. Default 2.0, at least 1.0.
    #[serde(default = "default_multiplier")]
    pub multiplier: f32,
    /// The waits between attempts add up to at most this (time spent waiting for
    /// confirmations is not counted). Default 60s.
    #[serde(default = "default_max_elapsed", deserialize_with = "duration")]
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            multiplier: default_multiplier(),
            max_elapsed: default_max_elapsed(),
        }
    }
}

pub fn default_max_attempts() -> u32 {
    5
}
pub fn default_initial_backoff() -> Duration {
    Duration::from_millis(100)
}
pub fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}
pub fn default_multiplier() -> f32 {
    2.0
}
pub fn default_max_elapsed() -> Duration {
    Duration::from_secs(60)
}

/// A source: `kafka:orders`, or `{endpoint: kafka:orders, options: {...}}`.
#[derive(Debug, Clone, Default)]
pub struct SourceRef {
    /// The endpoint address.
    pub endpoint: String,
    /// Options read by the source's adapter (see its page in docs/adapters).
    pub options: serde_json::Value,
}

/// What a value rendered from a message may hold in a templated endpoint path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathValues {
    /// One name: a value holding `/` or `:` fails the message (it would pick another
    /// exchange, partition or queue URL than the template's shape says).
    #[default]
    Name,
    /// Any text, `/` and `:` included: the message may choose the whole destination.
    Any,
}

/// A sink: `kafka:orders`, or `{endpoint, key, when, optional, path_values}`.
#[derive(Debug, Clone, Default)]
pub struct SinkRef {
    /// The endpoint address; the part after `CONNECTION:` may be a template.
    pub endpoint: String,
    /// What values rendered into a templated endpoint may hold. Default `name`.
    pub path_values: PathValues,
    /// Template that sets the message key before sending.
    pub key: Option<String>,
    /// CEL condition; the sink only receives messages for which it is true.
    pub when: Option<String>,
    /// An optional sink is tried with retries like the others, but its failure never
    /// prevents the acknowledgement: it is logged and counted, not dead-lettered. (The
    /// acknowledgement still waits until its attempts are over.) Default false.
    pub optional: bool,
    /// Reshapes what this sink receives, after the route's own `transform`.
    pub transform: Option<TransformModel>,
    /// Most messages per interval this sink is sent (every attempt counts).
    pub rate: Option<RateModel>,
}

/// `to:` accepts one sink or a list.
#[derive(Debug, Clone, Default)]
pub struct SinkList(pub Vec<SinkRef>);

/// Types that can also be written as a bare endpoint address.
trait FromAddress {
    fn from_address(address: String) -> Self;
}

impl FromAddress for SourceRef {
    fn from_address(endpoint: String) -> Self {
        SourceRef {
            endpoint,
            ..SourceRef::default()
        }
    }
}

impl FromAddress for SinkRef {
    fn from_address(endpoint: String) -> Self {
        SinkRef {
            endpoint,
            ..SinkRef::default()
        }
    }
}

struct AddressOrMap<T>(PhantomData<T>);

impl<'de, T: FromAddress + Deserialize<'de>> Visitor<'de> for AddressOrMap<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an endpoint address (CONNECTION:PATH) or a mapping with `endpoint`")
    }

    fn visit_str<E: de::Error>(self, address: &str) -> Result<T, E> {
        Ok(T::from_address(address.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de> Deserialize<'de> for SourceRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            endpoint: String,
            #[serde(default)]
            options: serde_json::Value,
        }
        impl FromAddress for Full {
            fn from_address(endpoint: String) -> Self {
                Full {
                    endpoint,
                    options: serde_json::Value::Null,
                }
            }
        }
        let full = deserializer.deserialize_any(AddressOrMap::<Full>(PhantomData))?;
        Ok(SourceRef {
            endpoint: full.endpoint,
            options: full.options,
        })
    }
}

impl<'de> Deserialize<'de> for SinkRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            endpoint: String,
            #[serde(default)]
            key: Option<String>,
            #[serde(default)]
            when: Option<String>,
            #[serde(default)]
            optional: bool,
            #[serde(default)]
            path_values: PathValues,
            #[serde(default)]
            transform: Option<TransformModel>,
            #[serde(default)]
            rate: Option<RateModel>,
        }
        impl FromAddress for Full {
            fn from_address(endpoint: String) -> Self {
                Full {
                    endpoint,
                    key: None,
                    when: None,
                    optional: false,
                    path_values: PathValues::Name,
                    transform: None,
                    rate: None,
                }
            }
        }
        let full = deserializer.deserialize_any(AddressOrMap::<Full>(PhantomData))?;
        Ok(SinkRef {
            endpoint: full.endpoint,
            path_values: full.path_values,
            key: full.key,
            when: full.when,
            optional: full.optional,
            transform: full.transform,
            rate: full.rate,
        })
    }
}

impl<'de> Deserialize<'de> for SinkList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = SinkList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sink address or a list of sinks")
            }

            fn visit_str<E: de::Error>(self, address: &str) -> Result<SinkList, E> {
                Ok(SinkList(vec![SinkRef::from_address(address.to_owned())]))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SinkList, A::Error> {
                SinkRef::deserialize(MapAccessDeserializer::new(map))
                    .map(|sink| SinkList(vec![sink]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<SinkList, A::Error> {
                Vec::<SinkRef>::deserialize(SeqAccessDeserializer::new(seq)).map(SinkList)
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

/// Reads a duration written with a unit: `250ms`, `30s`, `5m`, `2h`, `1h 30m`.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit, like `500ms`, `30s` or `5m`")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text).map_err(|e| {
                E::custom(format!(
                    "`{text}` is not a duration ({e}); write e.g. `500ms`, `30s`, `5m`"
                ))
            })
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "`{n}` has no unit; write e.g. `{n}s` or `{n}ms`"
            )))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "`{n}` has no unit; write e.g. `{n}s` or `{n}ms`"
            )))
        }
    }
    deserializer.deserialize_any(DurationVisitor)
}
