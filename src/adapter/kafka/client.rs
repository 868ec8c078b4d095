//! Kafka clients from a connection's config: bootstrap servers, TLS and SASL as librdkafka
//! properties, bridge's producer defaults, the connection's own options on top, and topics
//! listed in `declare`. Settings errors never show a credential's value.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::METADATA_TIMEOUT;
use super::config::{self, Config};
use crate::adapter::AdapterError;

pub(super) fn base_config(config: &Config) -> ClientConfig {
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
pub(super) enum ClientRole {
    Consumer,
    Producer,
    Admin,
}

pub(super) fn apply_options(client: &mut ClientConfig, config: &Config, role: ClientRole) {
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
pub(super) fn settings_error(client: &str, error: KafkaError) -> AdapterError {
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
pub(super) fn warn_insecure(config: &Config) {
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

pub(super) fn unreachable(config: &Config, error: impl std::fmt::Display) -> AdapterError {
    AdapterError::Unavailable(format!(
        "cannot reach Kafka at {}: {error} (is the broker running and `brokers` right?)",
        config.brokers
    ))
}

/// The producer's settings: bridge's defaults, then the connection's options.
pub(super) fn producer_config(config: &Config) -> ClientConfig {
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

pub(super) async fn declare_topics(config: &Config) -> Result<(), AdapterError> {
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
