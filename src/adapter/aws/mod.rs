//! Amazon SQS and SNS (`type: aws`), through the official AWS SDK for Rust.
//!
//! Endpoints: `NAME:sqs/QUEUE` (source and sink; a queue URL works too) and
//! `NAME:sns/TOPIC` (sink; a topic ARN works too). An SNS source reads the SQS queue given
//! in `from.options.queue`, subscribed to the topic, and unwraps SNS notifications (raw
//! delivery works too). Names ending in `.fifo` are FIFO queues and topics.
//!
//! - Source ([`source`]): long polling, batches of 10, batch deletes after the router's ack,
//!   visibility extended while in flight, retry = visible again after a backoff, reject =
//!   visible at once for the queue's redrive policy (a source queue without a redrive
//!   policy needs a route `dead_letter`, checked when the route starts).
//! - Sinks ([`sink`]): SendMessageBatch / PublishBatch of 10 with per-message results,
//!   FIFO group and deduplication ids, the size limit checked before sending.
//! - Mapping ([`mapping`]): the 10-attribute limit and name rules are met by a
//!   reversible packing of overflow headers; binary bodies are base64 with a marker.
//! - Tail: SQS has no safe peek, so reading a queue needs `--disturb` (messages are held
//!   invisible while tail runs and released when it ends; receive counts grow). A topic is
//!   read through a temporary queue subscribed for the duration of tail.
//! - Credentials: the SDK's default chain, or `access_key_id`/`secret_access_key`.

mod batcher;
mod client;
mod config;
mod mapping;
mod sink;
mod source;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;

use client::AwsClients;
pub use config::Config;
use config::{SourceOptions as AwsSourceOptions, Target};

use super::{
    Adapter, AdapterError, ConnectContext, Connection, Connector, DeadLetterRead, FieldError,
    OriginField, Role, Sink, Source, SourceOptions, SourceSettings, TailSettings,
};
use crate::address::Endpoint;

const DEFAULT_WAIT_SECONDS: u8 = 20;

/// Static credentials come as a pair.
fn check_config(config: &Config) -> Result<(), FieldError> {
    match (&config.access_key_id, &config.secret_access_key) {
        (Some(_), None) | (None, Some(_)) => Err(FieldError::whole(
            "`access_key_id` and `secret_access_key` go together; give both or neither",
        )),
        _ => Ok(()),
    }
}

/// Whether a message sent to `sink` can reach a source on `source`: a queue only itself
/// (by name, whether written as a name or a URL), a topic any queue (its subscriptions are
/// the account's, not the routes file's).
fn may_feed(sink: &str, source: &str) -> bool {
    match (Target::parse(sink), Target::parse(source)) {
        (Ok(Target::Queue(sink)), Ok(Target::Queue(source))) => {
            sink.rsplit('/').next() == source.rsplit('/').next()
        }
        _ => true,
    }
}

/// The `aws` system: SQS and SNS (`type: aws`, `--url aws://REGION`).
pub struct Aws;

impl Adapter for Aws {
    fn type_name(&self) -> &'static str {
        "aws"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["aws"]
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
    /// Only a FIFO queue's messages have a key of their own, the group id.
    fn source_has_keys(&self, path: &str) -> bool {
        path.ends_with(".fifo")
    }

    fn type_name(&self) -> &'static str {
        "aws"
    }

    fn check(&self) -> Result<(), FieldError> {
        check_config(self)
    }

    fn check_endpoint(&self, path: &str, _role: Role) -> Result<(), String> {
        Target::parse(path).map(drop)
    }

    fn source_options(
        &self,
        path: &str,
        options: &serde_json::Value,
    ) -> Result<SourceOptions, String> {
        let target = Target::parse(path)?;
        let options: AwsSourceOptions = if options.is_null() {
            AwsSourceOptions::default()
        } else {
            crate::strict::parse_strict(options.clone())
                .map_err(|e| format!("AWS source options: {e}"))?
        };
        if options.wait_seconds.is_some_and(|w| w > 20) {
            return Err("`wait_seconds` is at most 20".into());
        }
        match (&target, &options.queue) {
            (Target::Topic(topic), None) => Err(format!(
                "an SNS source reads an SQS queue subscribed to `{topic}`: give it as `options: {{queue: NAME}}`"
            )),
            (Target::Queue(_), Some(_)) => {
                Err("`queue` is an option of SNS sources; an SQS source reads its own path".into())
            }
            _ => Ok(SourceOptions::new(options)),
        }
    }

    /// Checked when the source opens: the queue needs a redrive policy.
    fn check_reject_without_dead_letter(&self, _: &str, _: &SourceOptions) -> Result<(), String> {
        Ok(())
    }

    fn reply_address(&self, path: &str) -> Option<String> {
        path.strip_prefix("sqs/")
            .or_else(|| path.strip_prefix("sns/"))
            .map(str::to_owned)
    }

    fn may_feed(&self, sink: Option<&str>, source: &str) -> bool {
        sink.is_none_or(|sink| may_feed(sink, source))
    }

    /// ApproximateReceiveCount and the SQS MessageId.
    fn origin_fields(&self) -> &'static [OriginField] {
        &[
            OriginField::ReceiveCount,
            OriginField::BrokerMessageId,
            OriginField::Named("queue"),
            OriginField::Named("topic"),
            OriginField::Named("subject"),
        ]
    }

    /// SQS's limit for body and attributes (SNS reaches bridge through SQS), and the 128
    /// bytes of a FIFO group id, which SQS does not count but bridge counts as the key.
    fn max_message_bytes(&self) -> usize {
        (1 << 20) + 128
    }

    fn describe(&self) -> String {
        describe(self)
    }

    async fn connect(&self, _context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        connect(self).await
    }
}

/// `aws://REGION[?endpoint_url=URL&profile=NAME]` for `--url`.
fn parse_url(url: &str) -> Result<Config, String> {
    let rest = url
        .strip_prefix("aws://")
        .ok_or_else(|| format!("`{url}` is not aws://REGION[?endpoint_url=URL]"))?;
    let (region, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut fields = serde_json::Map::new();
    if !region.trim_end_matches('/').is_empty() {
        fields.insert("region".into(), region.trim_end_matches('/').into());
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not KEY=VALUE"))?;
        match key {
            "endpoint_url" | "profile" => {
                fields.insert(key.into(), value.into());
            }
            other => {
                return Err(format!(
                    "unknown aws:// parameter `{other}`; use endpoint_url or profile"
                ));
            }
        }
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| e.to_string())
}

fn describe(config: &Config) -> String {
    let region = config.region.as_deref().unwrap_or("the default region");
    match &config.endpoint_url {
        Some(url) => format!("SQS/SNS at {} ({region})", url.redacted()),
        None => format!("AWS SQS/SNS in {region}"),
    }
}

async fn connect(config: &Config) -> Result<Arc<dyn Connector>, AdapterError> {
    let clients = Arc::new(AwsClients::new(config).await?);
    clients.probe().await?;
    clients.declare(&config.declare).await?;
    Ok(Arc::new(AwsConnector { clients }))
}

struct AwsConnector {
    clients: Arc<AwsClients>,
}

impl AwsConnector {
    async fn visibility(&self, queue_url: &str) -> Result<(Duration, bool), AdapterError> {
        let attributes = self.clients.queue_attributes(queue_url).await?;
        let seconds = attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30);
        let has_redrive = attributes.contains_key(&QueueAttributeName::RedrivePolicy);
        Ok((Duration::from_secs(seconds), has_redrive))
    }
}

#[async_trait]
impl Connector for AwsConnector {
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        let options: AwsSourceOptions = settings.options.get()?;
        let (queue, sns_topic) = match (&target, &options.queue) {
            (Target::Queue(queue), _) => (queue.clone(), None),
            (Target::Topic(topic), Some(queue)) => (
                queue.clone(),
                Some(topic.rsplit(':').next().unwrap_or(topic).to_owned()),
            ),
            (Target::Topic(topic), None) => {
                return Err(AdapterError::Invalid(format!(
                    "an SNS source needs `options.queue` (subscribed to `{topic}`)"
                )));
            }
        };
        let queue_url = self.clients.queue_url(&queue).await?;
        let (visibility, has_redrive) = self.visibility(&queue_url).await?;
        if !has_redrive && !settings.dead_letter {
            return Err(AdapterError::Invalid(format!(
                "SQS queue `{queue}` has no redrive policy and route `{}` has no `dead_letter`: a message that cannot be delivered would be received forever; add either",
                settings.route
            )));
        }
        Ok(Box::new(source::SqsSource::start(
            self.clients.clone(),
            source::ReadSpec {
                queue_url,
                endpoint: endpoint.to_string(),
                sns_topic,
                wait_seconds: i32::from(options.wait_seconds.unwrap_or(DEFAULT_WAIT_SECONDS)),
                visibility,
                buffer: settings.max_in_flight,
                peek: None,
                retry_at_once: false,
            },
        )))
    }

    /// Dead letters are read from a queue, whether a route sent them there or to a topic
    /// the queue is subscribed to: notifications of any topic are unwrapped.
    async fn open_dead_letters(
        &self,
        endpoint: &Endpoint,
        read: DeadLetterRead<'_>,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let Target::Queue(queue) = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?
        else {
            return Err(AdapterError::Invalid(format!(
                "the dead letters sent to the SNS topic of {endpoint} are read from the queue subscribed to it: give {}:sqs/QUEUE",
                endpoint.connection
            )));
        };
        let any_topic = Some(source::ANY_TOPIC.to_owned());
        match read {
            DeadLetterRead::Peek { disturb } => {
                let settings = DeadLetterRead::tail_settings(disturb);
                tail::open_queue(self, endpoint, &queue, &settings, any_topic).await
            }
            DeadLetterRead::Take { window, .. } => {
                let queue_url = self.clients.queue_url(&queue).await?;
                let (visibility, _) = self.visibility(&queue_url).await?;
                Ok(Box::new(source::SqsSource::start(
                    self.clients.clone(),
                    source::ReadSpec {
                        queue_url,
                        endpoint: endpoint.to_string(),
                        sns_topic: any_topic,
                        wait_seconds: 2,
                        visibility,
                        buffer: window,
                        peek: None,
                        retry_at_once: true,
                    },
                )))
            }
        }
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        let resolved = self.clients.resolve(&target).await?;
        let fifo = target.is_fifo() || resolved.ends_with(".fifo");
        let max_bytes = match target {
            Target::Queue(_) => self.clients.config.max_message_bytes,
            Target::Topic(_) => self.clients.config.sns_max_message_bytes,
        };
        let (api, sns): (Arc<dyn batcher::SendBatch>, bool) = match target {
            Target::Queue(_) => (
                Arc::new(sink::SqsBatch {
                    clients: self.clients.clone(),
                    queue_url: resolved,
                }),
                false,
            ),
            Target::Topic(_) => (
                Arc::new(sink::SnsBatch {
                    clients: self.clients.clone(),
                    topic_arn: resolved,
                }),
                true,
            ),
        };
        Ok(Arc::new(sink::AwsSink {
            batcher: batcher::Batcher::start(api, fifo, 1000, max_bytes),
            mode: mapping::Mode {
                fifo,
                sns,
                sns_binary: self.clients.config.sns_binary_attributes,
            },
            max_bytes,
            target: endpoint.to_string(),
        }))
    }

    /// A reply-to is an SQS queue name or URL, or an SNS topic ARN.
    /// A queue name, or the ARN of an SNS topic of the connection's own account (known once
    /// the connection has resolved a queue URL or topic ARN, as its request source has).
    fn is_plain_reply_address(&self, address: &str) -> bool {
        if let Some(arn) = address.strip_prefix("arn:aws:sns:") {
            let parts: Vec<&str> = arn.split(':').collect();
            return match (parts.as_slice(), self.clients.account()) {
                ([_region, account, topic], Some(own)) => {
                    *account == own && crate::relay::allow::is_plain_name(topic)
                }
                _ => false,
            };
        }
        crate::relay::allow::is_plain_name(address)
    }

    fn reply_path(&self, address: &str) -> Result<String, String> {
        let path = if address.starts_with("arn:aws:sns:") {
            format!("sns/{address}")
        } else {
            format!("sqs/{address}")
        };
        Target::parse(&path).map(|_| path)
    }

    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        tail::open(self, endpoint, settings).await
    }
}
