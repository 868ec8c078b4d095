//! `bridge tail` on SQS and SNS. SQS has no safe peek, so reading a queue needs `--disturb`
//! (messages are held invisible while tail runs and released when it ends; their receive
//! counts grow). A topic is read through a temporary queue subscribed to it for the
//! duration of tail, unsubscribed and deleted when tail ends.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::client::AwsClients;
use super::config::{self, Target};
use super::{AwsConnector, source};
use crate::adapter::{AdapterError, Delivery, Source, TailSettings};
use crate::address::Endpoint;

/// Opens a reader of `endpoint` for `bridge tail`.
pub(super) async fn open(
    connector: &AwsConnector,
    endpoint: &Endpoint,
    settings: &TailSettings,
) -> Result<Box<dyn Source>, AdapterError> {
    let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
    match target {
        Target::Queue(queue) => open_queue(connector, endpoint, &queue, settings, None).await,
        Target::Topic(topic) => {
            let tail = TopicTail::open(connector.clients.clone(), endpoint, &topic).await?;
            Ok(Box::new(tail))
        }
    }
}

/// Peeks at `queue` (with `--disturb` only), unwrapping notifications of `sns_topic`.
pub(super) async fn open_queue(
    connector: &AwsConnector,
    endpoint: &Endpoint,
    queue: &str,
    settings: &TailSettings,
    sns_topic: Option<String>,
) -> Result<Box<dyn Source>, AdapterError> {
    if !settings.disturb {
        return Err(AdapterError::Invalid(format!(
            "SQS has no safe way to peek: reading `{queue}` hides its messages from other consumers while tail runs and raises their receive counts. Pass --disturb to read anyway; the messages are released when tail ends"
        )));
    }
    let queue_url = connector.clients.queue_url(queue).await?;
    Ok(Box::new(source::SqsSource::start(
        connector.clients.clone(),
        source::ReadSpec {
            queue_url,
            endpoint: endpoint.to_string(),
            sns_topic,
            wait_seconds: 2,
            visibility: Duration::from_secs(60),
            buffer: 10,
            peek: Some(Duration::from_secs(60)),
            retry_at_once: false,
        },
    )))
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
                retry_at_once: false,
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
