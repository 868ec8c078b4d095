//! Configuration of a `type: aws` connection (SQS and SNS), its endpoints and sources.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An AWS account and region (`type: aws`), for SQS and SNS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// AWS region; default: the SDK's default chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint URL for both services (LocalStack, moto, VPC endpoints); default: AWS.
    #[serde(default)]
    pub endpoint_url: Option<crate::secret::SecretUrl>,
    /// Named profile of the shared config files; default: the SDK's default chain.
    #[serde(default)]
    pub profile: Option<String>,
    /// Static credentials; default: the SDK's default chain (environment, profile, web
    /// identity, container and instance roles). Prefer `${file:...}` for the secret.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<crate::secret::Secret>,
    /// Longest wait for any SQS or SNS call other than a long poll, in milliseconds.
    /// Default 30000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest SQS message accepted (body plus attributes), in bytes; bigger ones fail
    /// permanently before sending. Also the most one SendMessageBatch call carries.
    /// Default 1048576 (1 MiB, the SQS limit).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// The same for SNS messages and PublishBatch calls. Default 262144 (256 KiB, the SNS
    /// limit unless a topic's `MaximumMessageSize` says otherwise).
    #[serde(default = "default_sns_max_message_bytes")]
    pub sns_max_message_bytes: usize,
    /// SNS sinks send binary headers as Binary message attributes instead of base64 text
    /// listed in `bridge-binary-headers`: for topics whose subscribers are SQS queues and
    /// Lambda functions, which receive them; HTTP, e-mail and SMS subscribers do not, and
    /// some SNS implementations drop them on raw delivery. Default false.
    #[serde(default)]
    pub sns_binary_attributes: bool,
    /// Queues and topics to create at start-up when missing.
    #[serde(default)]
    pub declare: Declarations,
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_max_message_bytes() -> usize {
    1_048_576
}
fn default_sns_max_message_bytes() -> usize {
    262_144
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declarations {
    #[serde(default)]
    pub queues: Vec<QueueDeclaration>,
    #[serde(default)]
    pub topics: Vec<TopicDeclaration>,
}

/// A queue to create; a name ending in `.fifo` makes a FIFO queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDeclaration {
    pub name: String,
    /// Queue attributes as SQS names them (`VisibilityTimeout`, `ContentBasedDeduplication`...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Moves a message to this queue after `max_receive_count` receives (redrive policy).
    #[serde(default)]
    pub dead_letter_queue: Option<String>,
    /// Default 5.
    #[serde(default = "default_max_receive_count")]
    pub max_receive_count: u32,
}

fn default_max_receive_count() -> u32 {
    5
}

/// A topic to create; a name ending in `.fifo` makes a FIFO topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDeclaration {
    pub name: String,
    /// Queues to subscribe to the topic.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub queue: String,
    /// Raw message delivery (no SNS envelope). Default false.
    #[serde(default)]
    pub raw: bool,
}

/// Options of an SQS or SNS source (`from.options`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// SNS sources: the SQS queue subscribed to the topic, which bridge reads.
    #[serde(default)]
    pub queue: Option<String>,
    /// Long-poll wait per receive, in seconds (0-20). Default 20.
    #[serde(default)]
    pub wait_seconds: Option<u8>,
}

/// An SQS or SNS endpoint path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `sqs/NAME`, or `sqs/https://...` (a queue URL).
    Queue(String),
    /// `sns/NAME`, or `sns/arn:aws:sns:...`.
    Topic(String),
}

impl Target {
    pub fn parse(path: &str) -> Result<Target, String> {
        let (kind, name) = path
            .split_once('/')
            .ok_or_else(|| format!("`{path}` is not an AWS path; use sqs/QUEUE or sns/TOPIC"))?;
        if name.is_empty() {
            return Err(format!("`{path}` names no queue or topic"));
        }
        // SQS: at most 80 characters, the `.fifo` suffix included; SNS: at most 256.
        let valid = |n: &str, limit: usize| {
            let base = n.strip_suffix(".fifo").unwrap_or(n);
            !base.is_empty()
                && n.len() <= limit
                && base
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        match kind {
            "sqs" if name.starts_with("https://") || name.starts_with("http://") => {
                Ok(Target::Queue(name.to_owned()))
            }
            "sqs" if valid(name, 80) => Ok(Target::Queue(name.to_owned())),
            "sns" if name.starts_with("arn:") => Ok(Target::Topic(name.to_owned())),
            "sns" if valid(name, 256) => Ok(Target::Topic(name.to_owned())),
            "sqs" => Err(format!(
                "`{name}` is not an SQS queue name (letters, digits, `-`, `_`, optional `.fifo`, at most 80 in all)"
            )),
            "sns" => Err(format!(
                "`{name}` is not an SNS topic name (letters, digits, `-`, `_`, optional `.fifo`, at most 256 in all)"
            )),
            _ => Err(format!(
                "`{path}` is not an AWS path; use sqs/QUEUE or sns/TOPIC"
            )),
        }
    }

    /// FIFO queues and topics have names ending in `.fifo`.
    pub fn is_fifo(&self) -> bool {
        match self {
            Target::Queue(name) | Target::Topic(name) => name.ends_with(".fifo"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_queues_topics_urls_and_arns() {
        assert_eq!(
            Target::parse("sqs/orders"),
            Ok(Target::Queue("orders".into()))
        );
        assert!(Target::parse("sqs/orders.fifo").unwrap().is_fifo());
        assert_eq!(
            Target::parse("sns/arn:aws:sns:eu-west-1:1:t"),
            Ok(Target::Topic("arn:aws:sns:eu-west-1:1:t".into()))
        );
        assert!(Target::parse("sqs/bad name").is_err());
        assert!(Target::parse("s3/bucket").is_err());
        assert!(Target::parse("sqs/").is_err());
        let long = "q".repeat(76);
        assert!(
            Target::parse(&format!("sqs/{long}.fifo")).is_err(),
            "`.fifo` counts toward 80"
        );
        assert!(Target::parse(&format!("sns/{}", "t".repeat(200))).is_ok());
    }
}
