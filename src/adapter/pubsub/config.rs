//! Configuration of a `type: pubsub` connection (Google Cloud Pub/Sub), its endpoint paths
//! and sources.

use serde::Deserialize;

/// A Google Cloud project's Pub/Sub (`type: pubsub`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The project that owns the topics and subscriptions named by short names.
    pub project: String,
    /// Service endpoint, e.g. `http://127.0.0.1:8085` for the emulator; default Google's.
    #[serde(default)]
    pub endpoint: Option<crate::secret::SecretUrl>,
    /// `default`: application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`,
    /// workload identity, the metadata server). `anonymous`: none, for the emulator.
    /// Default: `anonymous` when `endpoint` is plain `http://`, else `default`.
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Longest time a publish or an admin call keeps retrying, in milliseconds. Default 30000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Topics and subscriptions to create at start-up when missing.
    #[serde(default)]
    pub declare: Declarations,
}

fn default_timeout_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Credentials {
    Default,
    Anonymous,
}

impl Config {
    pub fn anonymous(&self) -> bool {
        match self.credentials {
            Some(credentials) => credentials == Credentials::Anonymous,
            None => self
                .endpoint
                .as_ref()
                .is_some_and(|e| e.expose().starts_with("http://")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declarations {
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionDeclaration>,
}

/// A subscription to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionDeclaration {
    pub name: String,
    pub topic: String,
    /// Deliver messages with the same ordering key in order. Default false.
    #[serde(default)]
    pub ordering: bool,
    /// Seconds, 10-600. Default 60.
    #[serde(default = "default_ack_deadline")]
    pub ack_deadline_seconds: i32,
    /// Topic that receives messages after `max_delivery_attempts` (dead-letter policy).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// 5-100. Default 5.
    #[serde(default = "default_max_delivery_attempts")]
    pub max_delivery_attempts: i32,
}

fn default_ack_deadline() -> i32 {
    60
}
fn default_max_delivery_attempts() -> i32 {
    5
}

/// Options of a Pub/Sub source (`from.options`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// How far each lease extension reaches, in seconds (10-600); also how soon a message
    /// whose acknowledgement was lost comes back. Default 60.
    #[serde(default)]
    pub lease_seconds: Option<u64>,
}

/// A Pub/Sub endpoint path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `topic/NAME` or `topic/projects/P/topics/NAME`.
    Topic(String),
    /// `subscription/NAME` or `subscription/projects/P/subscriptions/NAME`.
    Subscription(String),
}

/// Pub/Sub resource ids: 3-255 characters, starting with a letter.
fn valid_id(id: &str) -> bool {
    id.len() >= 3
        && id.len() <= 255
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
        && !id.starts_with("goog")
}

impl Target {
    pub fn parse(path: &str) -> Result<Target, String> {
        let bad = || format!("`{path}` is not a Pub/Sub path; use topic/NAME or subscription/NAME");
        let (kind, name) = path.split_once('/').ok_or_else(bad)?;
        let full = |collection: &str| {
            let parts: Vec<&str> = name.split('/').collect();
            match parts.as_slice() {
                [id] if valid_id(id) => Ok(()),
                ["projects", project, c, id]
                    if *c == collection && !project.is_empty() && valid_id(id) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "`{name}` is not a {collection} id (3-255 letters, digits, `-_.~+%`, starting with a letter) or full name"
                )),
            }
        };
        match kind {
            "topic" => full("topics").map(|()| Target::Topic(name.to_owned())),
            "subscription" => full("subscriptions").map(|()| Target::Subscription(name.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// The full resource name of a topic or subscription id in `project`.
pub fn full_name(project: &str, collection: &str, name: &str) -> String {
    if name.starts_with("projects/") {
        name.to_owned()
    } else {
        format!("projects/{project}/{collection}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_take_ids_or_full_names() {
        assert_eq!(
            Target::parse("topic/orders"),
            Ok(Target::Topic("orders".into()))
        );
        assert_eq!(
            Target::parse("subscription/projects/p/subscriptions/orders-sub"),
            Ok(Target::Subscription(
                "projects/p/subscriptions/orders-sub".into()
            ))
        );
        assert!(Target::parse("topic/projects/p/subscriptions/x").is_err());
        assert!(Target::parse("topic/ab").is_err());
        assert!(Target::parse("queue/orders").is_err());
        assert_eq!(full_name("p", "topics", "t"), "projects/p/topics/t");
    }

    #[test]
    fn credentials_default_to_anonymous_for_a_plain_http_endpoint() {
        let mut config: Config =
            serde_json::from_value(serde_json::json!({"project": "p"})).unwrap();
        assert!(!config.anonymous());
        config.endpoint = Some(crate::secret::SecretUrl::new("http://127.0.0.1:8085"));
        assert!(config.anonymous());
        config.credentials = Some(Credentials::Default);
        assert!(!config.anonymous());
    }
}
