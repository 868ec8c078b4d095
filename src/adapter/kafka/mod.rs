//! Apache Kafka (`type: kafka`), through `rdkafka` and its bundled librdkafka.
//!
//! Endpoints: `NAME:TOPIC` (source or sink), `NAME:TOPIC/PARTITION` (sink to one partition).
//!
//! - Source: a consumer group (the connection's `group_id`, or the route's
//!   `from.options.group_id`). Ack settles an offset; offsets are committed only up to the
//!   lowest unsettled one per partition, periodically and before a rebalance gives a
//!   partition away. Retry hands the record out again from memory. Kafka has no reject:
//!   validation requires a `dead_letter` on routes from Kafka. Order is per partition.
//!   Routes that share a group are warned about ([`groups`]).
//! - Sink: an idempotent producer (`acks=all`) shared by the connection; the delivery report
//!   is the confirmation; the key chooses the partition (murmur2, as Java clients do) unless
//!   the endpoint names one. Producers are flushed on shutdown.
//! - Tail: assigns every partition of the topic from the end (or the beginning with
//!   `--from-beginning`) in a throw-away group and never commits.
//! - Mapping: see [`mapping`]; lossy only for null values and null header values.
//! - Topics listed in `declare` are created at start-up (brokers such as tansu do not
//!   create topics on first use).

mod client;
mod config;
mod groups;
mod lag;
mod mapping;
mod offsets;
mod sink;
mod source;
mod tail;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};

use client::{
    ClientRole, apply_options, base_config, declare_topics, producer_config, settings_error,
    unreachable, warn_insecure,
};
pub use config::Config;
use config::{SourceOptions as KafkaSourceOptions, Start, TopicPath};

use super::{
    Adapter, AdapterError, ConnectContext, Connection, Connector, FieldError, OriginField, Role,
    Sink, Source, SourceOptions, SourceSettings, TailSettings,
};
use crate::address::Endpoint;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The `kafka` system (`type: kafka`, `--url kafka://HOST:PORT`).
pub struct Kafka;

impl Adapter for Kafka {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["kafka"]
    }

    fn parse(&self, fields: serde_json::Value) -> crate::adapter::contract::Parsed {
        crate::adapter::contract::parse_connection::<Config>(fields)
    }

    fn parse_url(&self, url: &str) -> Result<Arc<dyn Connection>, String> {
        parse_url(url).map(|c| Arc::new(c) as Arc<dyn Connection>)
    }
}

#[async_trait]
impl Connection for Config {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn check(&self) -> Result<(), FieldError> {
        check_config(self)
    }

    fn check_endpoint(&self, path: &str, role: Role) -> Result<(), String> {
        let target = TopicPath::parse(path)?;
        if role == Role::Source && target.partition.is_some() {
            return Err("a Kafka source reads a whole topic through its consumer group; drop the `/PARTITION`".into());
        }
        Ok(())
    }

    fn source_options(
        &self,
        path: &str,
        options: &serde_json::Value,
    ) -> Result<SourceOptions, String> {
        self.check_endpoint(path, Role::Source)?;
        if options.is_null() {
            return Ok(SourceOptions::none());
        }
        crate::strict::parse_strict::<KafkaSourceOptions>(options.clone())
            .map(SourceOptions::new)
            .map_err(|e| format!("Kafka source options: {e}"))
    }

    fn check_reject_without_dead_letter(&self, _: &str, _: &SourceOptions) -> Result<(), String> {
        Err("Kafka has no reject of its own for messages that cannot be delivered".into())
    }

    fn reply_address(&self, path: &str) -> Option<String> {
        Some(path.to_owned())
    }

    fn may_feed(&self, sink: Option<&str>, source: &str) -> bool {
        sink.is_none_or(|sink| may_feed(sink, source))
    }

    /// The record's topic, partition, offset and timestamp; deliveries counted in process.
    fn origin_fields(&self) -> &'static [OriginField] {
        &[
            OriginField::Partition,
            OriginField::Offset,
            OriginField::ReceiveCount,
            OriginField::Named("topic"),
            OriginField::Named("timestamp"),
            OriginField::Named("timestamp_type"),
        ]
    }

    /// librdkafka's `receive.message.max.bytes`: nothing larger can be fetched.
    fn max_message_bytes(&self) -> usize {
        100_000_000
    }

    fn describe(&self) -> String {
        describe(self)
    }

    async fn connect(&self, _context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        connect(self).await
    }
}

/// Whether a record sent to `sink` can be read by a source on `source`: when both name
/// one topic (whatever the sink's partition).
fn may_feed(sink: &str, source: &str) -> bool {
    match (TopicPath::parse(sink), TopicPath::parse(source)) {
        (Ok(sink), Ok(source)) => sink.topic == source.topic,
        _ => true,
    }
}

/// `kafka://HOST:PORT[,HOST:PORT...]` for `--url`.
fn parse_url(url: &str) -> Result<Config, String> {
    let brokers = url
        .strip_prefix("kafka://")
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| format!("`{url}` is not kafka://HOST:PORT[,HOST:PORT]"))?;
    Ok(Config {
        brokers: brokers.trim_end_matches('/').to_owned(),
        ..serde_json::from_value(serde_json::json!({"brokers": ""})).expect("defaults deserialize")
    })
}

fn describe(config: &Config) -> String {
    format!("Kafka at {}", config.brokers)
}

fn check_config(config: &Config) -> Result<(), FieldError> {
    check_brokers(&config.brokers).map_err(|e| FieldError::at("brokers", e))?;
    if !config.allow_insecure {
        let sections = [
            ("options", &config.options),
            ("consumer_options", &config.consumer_options),
            ("producer_options", &config.producer_options),
        ];
        for (field, options) in sections {
            if let Some((key, why)) = options.insecure().first() {
                return Err(FieldError::at(
                    field,
                    format!(
                        "`{key}` {why}; set `allow_insecure: true` on the connection if you mean it"
                    ),
                ));
            }
        }
    }
    match &config.tls {
        Some(tls) => tls.check().map_err(|e| FieldError::at("tls", e)),
        None => Ok(()),
    }
}

/// `brokers` is librdkafka's `bootstrap.servers`: `HOST:PORT` entries separated by commas.
/// librdkafka would take a mistake silently and retry it forever.
fn check_brokers(brokers: &str) -> Result<(), String> {
    let hint = "give HOST:PORT[,HOST:PORT...]";
    if brokers.trim().is_empty() {
        return Err(format!("`brokers` is empty; {hint}"));
    }
    if brokers.contains('@') {
        return Err(format!(
            "`{}` holds credentials; give HOST:PORT entries and put the user and password under `sasl`",
            crate::secret::redact_url(brokers)
        ));
    }
    for entry in brokers.split(',').map(str::trim) {
        // A scheme such as `PLAINTEXT://` may precede the address, as in Kafka's own lists.
        let address = entry.rsplit_once("://").map_or(entry, |(_, rest)| rest);
        let port = address
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(port))) if !host.is_empty() && port > 0) {
            return Err(format!("`{entry}` is not HOST:PORT; {hint}"));
        }
    }
    Ok(())
}

async fn connect(config: &Config) -> Result<Arc<dyn Connector>, AdapterError> {
    warn_insecure(config);
    let producer: FutureProducer = producer_config(config)
        .create()
        .map_err(|e| settings_error("producer", e))?;
    let probe = producer.clone();
    tokio::task::spawn_blocking(move || {
        probe
            .client()
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map(|_| ())
    })
    .await
    .map_err(|e| AdapterError::Unavailable(e.to_string()))?
    .map_err(|e| unreachable(config, e))?;
    if !config.declare.is_empty() {
        declare_topics(config).await?;
    }
    Ok(Arc::new(KafkaConnector {
        config: config.clone(),
        producer: Arc::new(producer),
        groups: groups::GroupMembers::default(),
    }))
}

struct KafkaConnector {
    config: Config,
    producer: Arc<FutureProducer>,
    groups: groups::GroupMembers,
}

impl KafkaConnector {
    /// Fails when `topic` does not exist (a consumer would otherwise wait silently).
    async fn require_topic<C, K>(
        &self,
        consumer: Arc<K>,
        topic: &str,
    ) -> Result<Vec<i32>, AdapterError>
    where
        C: rdkafka::consumer::ConsumerContext + 'static,
        K: Consumer<C> + Send + Sync + 'static,
    {
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some(&name), METADATA_TIMEOUT)
        })
        .await
        .map_err(|e| AdapterError::Unavailable(e.to_string()))?
        .map_err(|e| unreachable(&self.config, e))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().iter().map(|p| p.id()).collect())
            }
            _ => Err(AdapterError::Invalid(format!(
                "Kafka topic `{topic}` does not exist at {}; create it or list it under `declare`",
                self.config.brokers
            ))),
        }
    }
}

#[async_trait]
impl Connector for KafkaConnector {
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let target = TopicPath::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        let options: KafkaSourceOptions = settings.options.get()?;
        let group = options.group_id.as_deref().unwrap_or(&self.config.group_id);
        let mut client = base_config(&self.config);
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match options.start {
                    Start::Earliest => "earliest",
                    Start::Latest => "latest",
                },
            );
        apply_options(&mut client, &self.config, ClientRole::Consumer);
        let tracker = Arc::new(Mutex::new(offsets::OffsetTracker::default()));
        let consumer: source::GroupConsumer = client
            .create_with_context(source::context(tracker.clone()))
            .map_err(|e| settings_error("consumer", e))?;
        let consumer = Arc::new(consumer);
        self.require_topic(consumer.clone(), &target.topic).await?;
        consumer.subscribe(&[&target.topic]).map_err(|e| {
            AdapterError::Invalid(format!("cannot subscribe to `{}`: {e}", target.topic))
        })?;
        if let Some(warning) = self.groups.join(group, &target.topic) {
            tracing::warn!("{warning}");
        }
        let consumer = Arc::into_inner(consumer).expect("the metadata probe has finished");
        let window = settings.max_in_flight.clamp(16, 1024);
        let source = source::KafkaSource::start(
            consumer,
            tracker,
            endpoint.to_string(),
            self.config.header_names.clone(),
            window,
            Duration::from_millis(options.commit_interval_ms.max(10)),
        );
        let lag = lag::probe(
            source.consumer(),
            &target.topic,
            matches!(options.start, Start::Earliest),
        );
        Ok(Box::new(source.with_backlog(lag)))
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        let target = TopicPath::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        Ok(Arc::new(sink::KafkaSink {
            producer: self.producer.clone(),
            target,
            names: self.config.header_names.clone(),
        }))
    }

    fn reply_path(&self, address: &str) -> Result<String, String> {
        TopicPath::parse(address).map(|_| address.to_owned())
    }

    /// Reads from the end, outside any consumer group: joining one would take partitions
    /// from the routes reading the same topic.
    async fn open_reply_reader(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Box<dyn Source>, AdapterError> {
        self.open_tail(endpoint, &TailSettings::default()).await
    }

    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        tail::open(self, endpoint, settings).await
    }

    /// Dead letters are taken in a consumer group of their own (`bridge-dlq`, or the
    /// `--group` of `bridge dlq redrive`), from the oldest: the connection's group belongs
    /// to its routes.
    fn dead_letter_reader_options(&self, reader: &str) -> SourceOptions {
        let options = KafkaSourceOptions {
            group_id: Some(reader.into()),
            start: Start::Earliest,
            ..KafkaSourceOptions::default()
        };
        SourceOptions::new(options)
    }

    /// A topic keeps every record: taking one commits the group past it, nothing more.
    fn dead_letter_take_is_positional(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Config, FutureProducer, base_config, check_brokers, check_config, producer_config,
        settings_error,
    };

    #[test]
    fn brokers_are_host_port_lists() {
        for good in [
            "127.0.0.1:9092",
            "k1:9092, k2:9093",
            "[::1]:9092",
            "SASL_SSL://broker.example:9096",
        ] {
            assert_eq!(check_brokers(good), Ok(()), "{good}");
        }
        for bad in ["", "localhost", "k1:9092,", ":9092", "k:0", "k:port"] {
            assert!(check_brokers(bad).is_err(), "{bad}");
        }
    }

    fn config(extra: serde_json::Value) -> Config {
        let mut value = serde_json::json!({"brokers": "k:9093"});
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn tls_and_sasl_become_librdkafka_properties() {
        let client = base_config(&config(serde_json::json!({
            "tls": {"ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem"},
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"},
        })));
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(client.get("ssl.certificate.location"), Some("/c.pem"));
        assert_eq!(client.get("ssl.key.location"), Some("/k.pem"));
        assert_eq!(
            client.get("enable.ssl.certificate.verification"),
            Some("true")
        );
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("sasl.password"), Some("p"));
    }

    #[test]
    fn sasl_without_tls_is_sasl_plaintext_and_no_security_is_plaintext() {
        let plain = base_config(&config(serde_json::json!({
            "sasl": {"mechanism": "PLAIN", "username": "u", "password": "p"},
        })));
        assert_eq!(plain.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(
            base_config(&config(serde_json::json!({}))).get("security.protocol"),
            None
        );
    }

    #[test]
    fn the_producer_never_asks_the_broker_to_create_a_topic() {
        let producer = producer_config(&config(serde_json::json!({})));
        assert_eq!(producer.get("allow.auto.create.topics"), Some("false"));
    }

    #[test]
    fn insecure_options_are_refused_unless_allowed() {
        for (key, value) in [
            ("enable.ssl.certificate.verification", "false"),
            ("enable.ssl.certificate.verification", "F"),
            ("ssl.endpoint.identification.algorithm", "none"),
            ("enable.sasl.oauthbearer.unsecure.jwt", "t"),
            ("plugin.library.paths", "/tmp/x.so"),
            ("ssl.engine.location", "/tmp/engine.so"),
            ("ssl.providers", "legacy"),
            ("sasl.kerberos.kinit.cmd", "touch /tmp/owned"),
        ] {
            for section in ["options", "consumer_options", "producer_options"] {
                let refused = config(serde_json::json!({section: {key: value}}));
                let error = check_config(&refused).unwrap_err();
                assert_eq!(error.field, Some(section), "{key}");
                assert!(
                    error.message.contains("allow_insecure"),
                    "{}",
                    error.message
                );
                let allowed =
                    config(serde_json::json!({section: {key: value}, "allow_insecure": true}));
                assert_eq!(check_config(&allowed), Ok(()), "{key}");
            }
        }
        let safe = config(serde_json::json!({"producer_options": {
            "ssl.endpoint.identification.algorithm": "https",
            "enable.ssl.certificate.verification": "true",
            "enable.sasl.oauthbearer.unsecure.jwt": "false",
        }}));
        assert_eq!(check_config(&safe), Ok(()));
    }

    #[test]
    fn credential_options_never_show_in_debug_or_settings_errors() {
        let with_secret = config(serde_json::json!({"options": {
            "sasl.password": "Zk-9931-canary",
            "sasl.passwd": "Zk-9932-canary",
        }}));
        let shown = format!("{with_secret:?}");
        assert!(
            !shown.contains("Zk-9931-canary") && !shown.contains("Zk-9932-canary"),
            "{shown}"
        );
        let error = match producer_config(&with_secret).create::<FutureProducer>() {
            Err(error) => settings_error("producer", error).to_string(),
            Ok(_) => panic!("an unknown property is refused"),
        };
        assert!(error.contains("sasl.passwd"), "{error}");
        assert!(!error.contains("Zk-9932-canary"), "{error}");
    }
}
