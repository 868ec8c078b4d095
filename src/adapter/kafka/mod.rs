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

mod config;
mod groups;
mod lag;
mod mapping;
mod offsets;
mod sink;
mod source;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

pub use config::Config;
use config::{SourceOptions, Start, TopicPath};

use super::spec::FieldError;
use super::{AdapterError, Connector, Delivery, Role, Sink, Source, SourceSettings, TailSettings};
use crate::ack::AckHandle;
use crate::address::Endpoint;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn check_endpoint(
    path: &str,
    role: Role,
    options: &serde_json::Value,
) -> Result<(), String> {
    let target = TopicPath::parse(path)?;
    if role == Role::Source {
        if target.partition.is_some() {
            return Err("a Kafka source reads a whole topic through its consumer group; drop the `/PARTITION`".into());
        }
        if !options.is_null() {
            super::spec::parse_strict::<SourceOptions>(options.clone())
                .map_err(|e| format!("Kafka source options: {e}"))?;
        }
    } else if !options.is_null() {
        return Err("Kafka sinks take no options".into());
    }
    Ok(())
}

/// Whether a record sent to `sink` can be read by a source on `source`: when both name
/// one topic (whatever the sink's partition).
pub(super) fn may_feed(sink: &str, source: &str) -> bool {
    match (TopicPath::parse(sink), TopicPath::parse(source)) {
        (Ok(sink), Ok(source)) => sink.topic == source.topic,
        _ => true,
    }
}

/// `kafka://HOST:PORT[,HOST:PORT...]` for `--url`.
pub(super) fn from_url(url: &str) -> Result<Config, String> {
    let brokers = url
        .strip_prefix("kafka://")
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| format!("`{url}` is not kafka://HOST:PORT[,HOST:PORT]"))?;
    Ok(Config {
        brokers: brokers.trim_end_matches('/').to_owned(),
        ..serde_json::from_value(serde_json::json!({"brokers": ""})).expect("defaults deserialize")
    })
}

pub(super) fn describe(config: &Config) -> String {
    format!("Kafka at {}", config.brokers)
}

pub(super) fn check_config(config: &Config) -> Result<(), FieldError> {
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

fn base_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id);
    apply_security(&mut client, config);
    client
}

/// `tls` and `sasl` as librdkafka properties; explicit `options` still override them.
fn apply_security(client: &mut ClientConfig, config: &Config) {
    let protocol = match (&config.tls, &config.sasl) {
        (None, None) => return,
        (Some(_), None) => "ssl",
        (None, Some(_)) => "sasl_plaintext",
        (Some(_), Some(_)) => "sasl_ssl",
    };
    client.set("security.protocol", protocol);
    if let Some(tls) = &config.tls {
        client
            .set("enable.ssl.certificate.verification", "true")
            .set("ssl.endpoint.identification.algorithm", "https");
        let files = [
            ("ssl.ca.location", &tls.ca_file),
            ("ssl.certificate.location", &tls.cert_file),
            ("ssl.key.location", &tls.key_file),
        ];
        for (property, file) in files {
            if let Some(file) = file {
                client.set(property, file.to_string_lossy());
            }
        }
    }
    if let Some(sasl) = &config.sasl {
        client
            .set("sasl.mechanism", sasl.mechanism.as_str())
            .set("sasl.username", &sasl.username)
            .set("sasl.password", sasl.password.expose());
    }
}

/// Which kind of client extra properties are for.
#[derive(Clone, Copy)]
enum ClientRole {
    Consumer,
    Producer,
    Admin,
}

fn apply_options(client: &mut ClientConfig, config: &Config, role: ClientRole) {
    let extra = match role {
        ClientRole::Consumer => Some(&config.consumer_options),
        ClientRole::Producer => Some(&config.producer_options),
        ClientRole::Admin => None,
    };
    for (key, value) in config.options.iter().chain(extra.into_iter().flatten()) {
        client.set(key, value);
    }
}

/// A librdkafka settings error, without the value when the property holds a credential or
/// is unknown (a misspelt `sasl.passwd` holds one just the same).
fn settings_error(client: &str, error: KafkaError) -> AdapterError {
    let message = match error {
        KafkaError::ClientConfig(result, description, key, value) => {
            let hide = config::is_sensitive(&key)
                || result == rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN;
            let description = if hide && !value.is_empty() {
                description.replace(&value, crate::secret::MASK)
            } else {
                description
            };
            format!("Kafka {client} settings: `{key}`: {description}")
        }
        other => format!("Kafka {client} settings: {other}"),
    };
    AdapterError::Invalid(message)
}

/// Logs, once per connection, the insecure librdkafka properties it was allowed to use.
fn warn_insecure(config: &Config) {
    let allowed: Vec<&str> = [
        &config.options,
        &config.consumer_options,
        &config.producer_options,
    ]
    .into_iter()
    .flat_map(|options| options.insecure())
    .map(|(key, _)| key)
    .collect();
    if !allowed.is_empty() {
        tracing::warn!(
            brokers = %config.brokers,
            options = ?allowed,
            "Kafka connection uses insecure options (allow_insecure: true)"
        );
    }
}

fn unreachable(config: &Config, error: impl std::fmt::Display) -> AdapterError {
    AdapterError::Unavailable(format!(
        "cannot reach Kafka at {}: {error} (is the broker running and `brokers` right?)",
        config.brokers
    ))
}

/// The producer's settings: bridge's defaults, then the connection's options.
fn producer_config(config: &Config) -> ClientConfig {
    let mut producer_config = base_config(config);
    producer_config
        // A templated topic must never make the broker create a topic a message names.
        .set("allow.auto.create.topics", "false")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "60000");
    apply_options(&mut producer_config, config, ClientRole::Producer);
    producer_config
}

pub(super) async fn connect(config: &Config) -> Result<Arc<dyn Connector>, AdapterError> {
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

async fn declare_topics(config: &Config) -> Result<(), AdapterError> {
    let mut admin_config = base_config(config);
    apply_options(&mut admin_config, config, ClientRole::Admin);
    let admin: AdminClient<DefaultClientContext> = admin_config
        .create()
        .map_err(|e| settings_error("admin", e))?;
    let topics: Vec<NewTopic<'_>> = config
        .declare
        .iter()
        .map(|t| {
            NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(t.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| unreachable(config, e))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "Kafka topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(AdapterError::Invalid(format!(
                    "cannot create Kafka topic `{topic}`: {code}"
                )));
            }
        }
    }
    Ok(())
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
        let options: SourceOptions = if settings.options.is_null() {
            SourceOptions::default()
        } else {
            super::spec::parse_strict(settings.options.clone())
                .map_err(|e| AdapterError::Invalid(e.to_string()))?
        };
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

    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let target = TopicPath::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut client = base_config(&self.config);
        client
            .set(
                "group.id",
                format!("bridge-tail-{}-{nanos}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        apply_options(&mut client, &self.config, ClientRole::Consumer);
        let consumer: StreamConsumer =
            client.create().map_err(|e| settings_error("consumer", e))?;
        let consumer = Arc::new(consumer);
        let partitions = self.require_topic(consumer.clone(), &target.topic).await?;
        let start = if settings.from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            if target.partition.is_none_or(|p| p == partition) {
                let _ = assignment.add_partition_offset(&target.topic, partition, start);
            }
        }
        consumer
            .assign(&assignment)
            .map_err(|e| AdapterError::Invalid(format!("cannot read `{}`: {e}", target.topic)))?;
        Ok(Box::new(TailReader {
            consumer,
            endpoint: endpoint.to_string(),
            names: self.config.header_names.clone(),
        }))
    }
}

/// Reads assigned partitions without a group or commits; acks do nothing.
struct TailReader {
    consumer: Arc<StreamConsumer>,
    endpoint: String,
    names: config::HeaderNames,
}

#[async_trait]
impl Source for TailReader {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        loop {
            match self.consumer.recv().await {
                Ok(record) => {
                    return Ok(Some(Delivery {
                        message: mapping::incoming(&record, &self.endpoint, &self.names),
                        ack: AckHandle::noop(),
                    }));
                }
                Err(error) => {
                    tracing::warn!(%error, "Kafka read error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn close(self: Box<Self>) {}
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
