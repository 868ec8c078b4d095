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
//! - Mapping ([`attributes`]): the 10-attribute limit and name rules are met by a
//!   reversible packing of overflow headers; binary bodies are base64 with a marker.
//! - Tail: SQS has no safe peek, so reading a queue needs `--disturb` (messages are held
//!   invisible while tail runs and released when it ends; receive counts grow). A topic is
//!   read through a temporary queue subscribed for the duration of tail.
//! - Credentials: the SDK's default chain, or `access_key_id`/`secret_access_key`.

mod attributes;
mod batcher;
mod client;
mod config;
mod sink;
mod source;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;

use client::AwsClients;
pub use config::Config;
use config::{SourceOptions, Target};

use super::spec::FieldError;
use super::{AdapterError, Connector, Delivery, Role, Sink, Source, SourceSettings, TailSettings};
use crate::address::Endpoint;

const DEFAULT_WAIT_SECONDS: u8 = 20;

/// Static credentials come as a pair.
pub(super) fn check_config(config: &Config) -> Result<(), FieldError> {
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
pub(super) fn may_feed(sink: &str, source: &str) -> bool {
    match (Target::parse(sink), Target::parse(source)) {
        (Ok(Target::Queue(sink)), Ok(Target::Queue(source))) => {
            sink.rsplit('/').next() == source.rsplit('/').next()
        }
        _ => true,
    }
}

pub(super) fn check_endpoint(
    path: &str,
    role: Role,
    options: &serde_json::Value,
) -> Result<(), String> {
    let target = Target::parse(path)?;
    match role {
        Role::Source => {
            let options: SourceOptions = if options.is_null() {
                SourceOptions::default()
            } else {
                super::spec::parse_strict(options.clone())
                    .map_err(|e| format!("AWS source options: {e}"))?
            };
            if options.wait_seconds.is_some_and(|w| w > 20) {
                return Err("`wait_seconds` is at most 20".into());
            }
            match (&target, &options.queue) {
                (Target::Topic(topic), None) => Err(format!(
                    "an SNS source reads an SQS queue subscribed to `{topic}`: give it as `options: {{queue: NAME}}`"
                )),
                (Target::Queue(_), Some(_)) => Err(
                    "`queue` is an option of SNS sources; an SQS source reads its own path".into(),
                ),
                _ => Ok(()),
            }
        }
        Role::Sink if !options.is_null() => Err("SQS and SNS sinks take no options".into()),
        Role::Sink => Ok(()),
    }
}

/// `aws://REGION[?endpoint_url=URL&profile=NAME]` for `--url`.
pub(super) fn from_url(url: &str) -> Result<Config, String> {
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

pub(super) fn describe(config: &Config) -> String {
    let region = config.region.as_deref().unwrap_or("the default region");
    match &config.endpoint_url {
        Some(url) => format!("SQS/SNS at {} ({region})", url.redacted()),
        None => format!("AWS SQS/SNS in {region}"),
    }
}

pub(super) async fn connect(config: &Config) -> Result<Arc<dyn Connector>, AdapterError> {
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
        let options: SourceOptions = if settings.options.is_null() {
            SourceOptions::default()
        } else {
            super::spec::parse_strict(settings.options.clone())
                .map_err(|e| AdapterError::Invalid(e.to_string()))?
        };
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
            },
        )))
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
            mode: attributes::Mode { fifo, sns },
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
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        match target {
            Target::Queue(queue) => {
                if !settings.disturb {
                    return Err(AdapterError::Invalid(format!(
                        "SQS has no safe way to peek: reading `{queue}` hides its messages from other consumers while tail runs and raises their receive counts. Pass --disturb to read anyway; the messages are released when tail ends"
                    )));
                }
                let queue_url = self.clients.queue_url(&queue).await?;
                Ok(Box::new(source::SqsSource::start(
                    self.clients.clone(),
                    source::ReadSpec {
                        queue_url,
                        endpoint: endpoint.to_string(),
                        sns_topic: None,
                        wait_seconds: 2,
                        visibility: Duration::from_secs(60),
                        buffer: 10,
                        peek: Some(Duration::from_secs(60)),
                    },
                )))
            }
            Target::Topic(topic) => {
                let tail = TopicTail::open(self.clients.clone(), endpoint, &topic).await?;
                Ok(Box::new(tail))
            }
        }
    }
}

/// Reads a topic through a temporary queue subscribed for the duration of tail.
struct TopicTail {
    reader: Box<dyn Source>,
    clients: Arc<AwsClients>,
    queue_url: String,
    subscription_arn: String,
}

impl TopicTail {
    async fn open(
        clients: Arc<AwsClients>,
        endpoint: &Endpoint,
        topic: &str,
    ) -> Result<TopicTail, AdapterError> {
        let topic_arn = clients.topic_arn(topic).await?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let fifo = topic_arn.ends_with(".fifo");
        let name = format!(
            "bridge-tail-{}-{nanos}{}",
            std::process::id(),
            if fifo { ".fifo" } else { "" }
        );
        let declarations = config::Declarations {
            queues: vec![config::QueueDeclaration {
                name: name.clone(),
                attributes: Default::default(),
                dead_letter_queue: None,
                max_receive_count: 1,
            }],
            topics: Vec::new(),
        };
        clients.declare(&declarations).await?;
        let queue_url = clients.queue_url(&name).await?;
        let queue_arn = clients.arn_of_queue(&queue_url).await?;
        let subscription_arn = match clients
            .subscribe_queue(&topic_arn, &queue_url, &queue_arn, false)
            .await
        {
            Ok(arn) => arn,
            Err(error) => {
                let _ = clients
                    .sqs
                    .delete_queue()
                    .queue_url(&queue_url)
                    .send()
                    .await;
                return Err(error);
            }
        };
        let reader = source::SqsSource::start(
            clients.clone(),
            source::ReadSpec {
                queue_url: queue_url.clone(),
                endpoint: endpoint.to_string(),
                sns_topic: Some(topic_arn.rsplit(':').next().unwrap_or(topic).to_owned()),
                wait_seconds: 2,
                visibility: Duration::from_secs(30),
                buffer: 10,
                peek: None,
            },
        );
        Ok(TopicTail {
            reader: Box::new(reader),
            clients,
            queue_url,
            subscription_arn,
        })
    }
}

#[async_trait]
impl Source for TopicTail {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        self.reader.recv().await
    }

    async fn close(self: Box<Self>) {
        let TopicTail {
            reader,
            clients,
            queue_url,
            subscription_arn,
        } = *self;
        reader.close().await;
        if !subscription_arn.is_empty() {
            let _ = clients
                .sns
                .unsubscribe()
                .subscription_arn(&subscription_arn)
                .send()
                .await;
        }
        let _ = clients
            .sqs
            .delete_queue()
            .queue_url(&queue_url)
            .send()
            .await;
    }
}
