//! Configuration of a `type: kafka` connection and of Kafka sources.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Text, or a list of texts joined with commas (`brokers: [a:9092, b:9092]`).
fn comma_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string or a list of strings")]
    enum TextOrList {
        Text(String),
        List(Vec<String>),
    }
    Ok(match TextOrList::deserialize(deserializer)? {
        TextOrList::Text(text) => text,
        TextOrList::List(items) => items.join(","),
    })
}

/// A Kafka cluster (`type: kafka`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bootstrap servers, `host:port` separated by commas (a YAML list of them is joined
    /// with commas).
    #[serde(deserialize_with = "comma_list")]
    pub brokers: String,
    /// Consumer group of sources on this connection; a source can override it.
    /// Default `bridge`.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Client id reported to the brokers. Default `bridge`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Header names that carry the envelope fields Kafka has no place for.
    #[serde(default)]
    pub header_names: HeaderNames,
    /// Extra librdkafka properties for every client of this connection (e.g.
    /// `security.protocol`, `sasl.mechanism`); they override bridge's defaults. Properties
    /// that switch off certificate checks or load code are refused unless
    /// `allow_insecure` is true ([`INSECURE_OPTIONS`]).
    #[serde(default)]
    pub options: ClientOptions,
    /// Extra librdkafka properties for consumers only (e.g. `session.timeout.ms`).
    #[serde(default)]
    pub consumer_options: ClientOptions,
    /// Extra librdkafka properties for the producer only (e.g. `compression.type`,
    /// `linger.ms`).
    #[serde(default)]
    pub producer_options: ClientOptions,
    /// Accept librdkafka properties that switch off certificate verification or load code
    /// (see [`INSECURE_OPTIONS`]); `bridge run` logs a warning when it is on. Default false.
    #[serde(default)]
    pub allow_insecure: bool,
    /// Topics to create at start-up when missing (brokers without auto-creation).
    #[serde(default)]
    pub declare: Vec<TopicDeclaration>,
    /// TLS to the brokers (`security.protocol` `ssl`, or `sasl_ssl` with `sasl`): an extra
    /// CA and a client certificate for mutual TLS. Certificates and host names are verified.
    #[serde(default)]
    pub tls: Option<crate::adapter::tls::TlsFiles>,
    /// SASL authentication (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`). Without `tls` the
    /// password crosses the network in the clear (PLAIN) or hashed (SCRAM): use both.
    #[serde(default)]
    pub sasl: Option<Sasl>,
}

/// librdkafka properties as written in the routes file. `Debug` hides the values of the
/// properties that hold credentials, and those values are remembered as secrets so that no
/// log line shows them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientOptions(BTreeMap<String, String>);

impl ClientOptions {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// The properties that [`INSECURE_OPTIONS`] names, with the reason for each.
    pub fn insecure(&self) -> Vec<(&str, &'static str)> {
        self.0
            .iter()
            .filter_map(|(key, value)| insecure_reason(key, value).map(|why| (key.as_str(), why)))
            .collect()
    }
}

impl<'a> IntoIterator for &'a ClientOptions {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<BTreeMap<String, String>> for ClientOptions {
    fn from(map: BTreeMap<String, String>) -> Self {
        for (key, value) in &map {
            if is_sensitive(key) {
                crate::secret::remember(value);
            }
        }
        ClientOptions(map)
    }
}

impl<'de> Deserialize<'de> for ClientOptions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(ClientOptions::from)
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, value)| {
                let shown = if is_sensitive(key) {
                    "<redacted>"
                } else {
                    value
                };
                (key, shown)
            }))
            .finish()
    }
}

/// Whether a librdkafka property holds a credential (a password, a private key, a token).
pub fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "key.pem",
        "jaas",
        "oauthbearer.config",
        "token",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// librdkafka properties refused unless the connection says `allow_insecure: true`: they
/// switch off the checks that make TLS and SASL worth having, or make librdkafka load or
/// run code named in the routes file.
pub const INSECURE_OPTIONS: [(&str, &str); 7] = [
    (
        "enable.ssl.certificate.verification",
        "anything but `true` accepts any broker certificate",
    ),
    (
        "ssl.endpoint.identification.algorithm",
        "anything but `https` accepts a certificate issued for another host",
    ),
    (
        "enable.sasl.oauthbearer.unsecure.jwt",
        "anything but `false` accepts unsigned OAuth tokens",
    ),
    ("plugin.library.paths", "loads a shared library into bridge"),
    ("ssl.engine.location", "loads an OpenSSL engine into bridge"),
    ("ssl.providers", "loads OpenSSL providers into bridge"),
    ("sasl.kerberos.kinit.cmd", "runs a shell command"),
];

/// Why `key = value` is insecure, if it is.
fn insecure_reason(key: &str, value: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let value = value.trim().to_ascii_lowercase();
    let (_, why) = INSECURE_OPTIONS.iter().find(|(name, _)| *name == key)?;
    // librdkafka reads `true`, `t`, `1` and `false`, `f`, `0` (any case) as booleans:
    // anything but the secure value counts as switching the check off.
    let insecure = match key.as_str() {
        "enable.ssl.certificate.verification" => !matches!(value.as_str(), "true" | "t" | "1"),
        "ssl.endpoint.identification.algorithm" => value != "https",
        "enable.sasl.oauthbearer.unsecure.jwt" => !matches!(value.as_str(), "false" | "f" | "0"),
        _ => true,
    };
    insecure.then_some(*why)
}

/// SASL credentials of a Kafka connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    /// Read it from a file or the environment: `${file:/run/secrets/kafka-password}`.
    pub password: crate::secret::Secret,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Names of the Kafka headers that hold the correlation id, reply-to, message id and
/// content type of the envelope.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderNames {
    #[serde(default = "default_correlation_id_header")]
    pub correlation_id: String,
    #[serde(default = "default_reply_to_header")]
    pub reply_to: String,
    #[serde(default = "default_message_id_header")]
    pub message_id: String,
    #[serde(default = "default_content_type_header")]
    pub content_type: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            correlation_id: default_correlation_id_header(),
            reply_to: default_reply_to_header(),
            message_id: default_message_id_header(),
            content_type: default_content_type_header(),
        }
    }
}

fn default_correlation_id_header() -> String {
    "correlation-id".into()
}
fn default_reply_to_header() -> String {
    "reply-to".into()
}
fn default_message_id_header() -> String {
    "message-id".into()
}
fn default_content_type_header() -> String {
    "content-type".into()
}
fn default_group_id() -> String {
    "bridge".into()
}
fn default_client_id() -> String {
    "bridge".into()
}

/// A topic bridge creates if it does not exist.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDeclaration {
    pub name: String,
    /// Default 1.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Default 1.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
}

fn default_partitions() -> i32 {
    1
}
fn default_replication() -> i32 {
    1
}

/// Options of a Kafka source (`from.options`). Missing fields take their values from
/// `Default`, the one place the defaults are written, so a route without options and one
/// with `options: {}` cannot differ.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceOptions {
    /// Consumer group for this route, instead of the connection's.
    pub group_id: Option<String>,
    /// Where a group without committed offsets starts: `earliest` (default) or `latest`.
    pub start: Start,
    /// How often settled offsets are committed, in milliseconds. Default 500.
    pub commit_interval_ms: u64,
}

impl Default for SourceOptions {
    fn default() -> SourceOptions {
        SourceOptions {
            group_id: None,
            start: Start::default(),
            commit_interval_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    #[default]
    Earliest,
    Latest,
}

/// A Kafka endpoint path: `TOPIC` or `TOPIC/PARTITION` (sinks only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPath {
    pub topic: String,
    pub partition: Option<i32>,
}

impl TopicPath {
    pub fn parse(path: &str) -> Result<TopicPath, String> {
        let (topic, partition) = match path.split_once('/') {
            Some((topic, partition)) => {
                let partition = partition
                    .parse::<i32>()
                    .ok()
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| {
                        format!("`{partition}` is not a partition number in `{path}`")
                    })?;
                (topic, Some(partition))
            }
            None => (path, None),
        };
        let valid = !topic.is_empty()
            && topic.len() <= 249
            && topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(format!(
                "`{topic}` is not a Kafka topic name (letters, digits, `.`, `_`, `-`, at most 249)"
            ));
        }
        Ok(TopicPath {
            topic: topic.to_owned(),
            partition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_paths_take_an_optional_partition() {
        assert_eq!(TopicPath::parse("orders").unwrap().partition, None);
        assert_eq!(TopicPath::parse("orders/3").unwrap().partition, Some(3));
        assert!(TopicPath::parse("orders/x").is_err());
        assert!(TopicPath::parse("bad topic").is_err());
    }

    #[test]
    fn brokers_are_text_or_a_list() {
        let parse = |brokers: serde_json::Value| {
            serde_json::from_value::<Config>(serde_json::json!({ "brokers": brokers }))
                .map(|config| config.brokers)
        };
        assert_eq!(parse("a:1,b:2".into()).unwrap(), "a:1,b:2");
        assert_eq!(parse(serde_json::json!(["a:1", "b:2"])).unwrap(), "a:1,b:2");
        let refused = parse(serde_json::json!({"a": 1})).unwrap_err().to_string();
        assert!(
            refused.contains("a string or a list of strings"),
            "{refused}"
        );
    }

    /// A route without `options` used to get `commit_interval_ms: 0` from a derived
    /// `Default` (and commit every 10 ms) while `options: {}` got 500.
    #[test]
    fn no_options_means_the_documented_defaults() {
        let empty: SourceOptions = serde_json::from_value(serde_json::json!({})).unwrap();
        let default = SourceOptions::default();
        assert_eq!(default.commit_interval_ms, 500);
        assert_eq!(empty.commit_interval_ms, default.commit_interval_ms);
        assert_eq!(empty.start, default.start);
        assert_eq!(empty.group_id, default.group_id);
    }
}
