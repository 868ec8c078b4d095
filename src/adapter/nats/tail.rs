//! `bridge tail` and `bridge request`'s reply reader on NATS. A stream is read through an
//! ephemeral consumer that acknowledges nothing (from new messages, or the first one
//! with `--from-beginning`), removed by the server a minute after tail ends, so no durable
//! consumer is touched. A subject is read through a core subscription, which sees what is
//! published from now on (JetStream publishes included).

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_trait::async_trait;
use futures::StreamExt;

use super::config::Target;
use super::source::{NatsSource, PullSpec};
use super::{NatsConnector, mapping};
use crate::ack::AckHandle;
use crate::adapter::{AdapterError, Delivery, Source, TailSettings};
use crate::address::Endpoint;
use crate::message::Origin;

/// Opens a reader of `endpoint` that disturbs no consumer.
pub(super) async fn open(
    connector: &NatsConnector,
    endpoint: &Endpoint,
    settings: &TailSettings,
) -> Result<Box<dyn Source>, AdapterError> {
    match Target::parse(&endpoint.path).map_err(AdapterError::Invalid)? {
        Target::Stream(name) => {
            let stream = connector.nats.stream(&name).await?;
            let config = pull::Config {
                deliver_policy: if settings.from_beginning {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::New
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..pull::Config::default()
            };
            let consumer = stream.create_consumer(config).await.map_err(|e| {
                connector
                    .nats
                    .api_error(&format!("reading stream `{name}`"), e)
            })?;
            Ok(Box::new(NatsSource::start(PullSpec {
                consumer,
                client: connector.nats.client.clone(),
                endpoint: endpoint.to_string(),
                window: 64,
                ack_wait: Duration::from_secs(30),
                settle: false,
            })))
        }
        Target::Subject(subject) | Target::Core(subject) => {
            let subscriber = connector
                .nats
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|e| {
                    AdapterError::Unavailable(format!("cannot subscribe to `{subject}`: {e}"))
                })?;
            Ok(Box::new(Subscription {
                subscriber,
                endpoint: endpoint.to_string(),
            }))
        }
    }
}

/// A core subscription; nothing to acknowledge.
struct Subscription {
    subscriber: async_nats::Subscriber,
    endpoint: String,
}

#[async_trait]
impl Source for Subscription {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        let Some(received) = self.subscriber.next().await else {
            return Err(AdapterError::Unavailable(
                "the NATS subscription ended".into(),
            ));
        };
        let pairs = received
            .headers
            .as_ref()
            .map(mapping::header_pairs)
            .unwrap_or_default();
        let mut message = mapping::decode(received.payload.clone(), pairs, None);
        // A core request carries its reply subject natively.
        if message.reply_to.is_none() {
            message.reply_to = received.reply.as_ref().map(|r| r.to_string());
        }
        Ok(Some(Delivery {
            message: message.with_origin(Origin {
                endpoint: self.endpoint.clone(),
                ..Origin::default()
            }),
            ack: AckHandle::noop(),
        }))
    }

    async fn close(mut self: Box<Self>) {
        let _ = self.subscriber.unsubscribe().await;
    }
}
