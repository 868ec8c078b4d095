//! `bridge tail` on Pub/Sub: a topic is read through a temporary subscription, deleted when
//! tail ends; reading a subscription needs `--disturb` (messages are held while tail runs
//! and nacked back together when it ends, which counts one delivery attempt each).

use std::sync::Arc;

use async_trait::async_trait;

use super::client::PubSubClients;
use super::config::Target;
use super::{PubSubConnector, source};
use crate::adapter::{AdapterError, Delivery, Source, TailSettings};
use crate::address::Endpoint;

/// Opens a reader of `endpoint` for `bridge tail`.
pub(super) async fn open(
    connector: &PubSubConnector,
    endpoint: &Endpoint,
    settings: &TailSettings,
) -> Result<Box<dyn Source>, AdapterError> {
    match Target::parse(&endpoint.path).map_err(AdapterError::Invalid)? {
        Target::Subscription(name) => {
            peek_subscription(connector, endpoint, &name, settings, 100).await
        }
        Target::Topic(name) => {
            let topic = connector.clients.topic(&name);
            connector.clients.require_topic(&topic).await?;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let temporary = connector
                .clients
                .subscription(&format!("bridge-tail-{}-{nanos}", std::process::id()));
            connector
                .clients
                .create_subscription(&temporary, &topic)
                .await?;
            let spec = connector.spec(&temporary, endpoint, 60, 100, source::AckMode::Settle);
            Ok(Box::new(TopicTail {
                reader: Box::new(source::PubSubSource::start(spec, 10)),
                clients: connector.clients.clone(),
                subscription: temporary,
            }))
        }
    }
}

/// Peeks at subscription `name` (with `--disturb` only), holding up to `outstanding`
/// messages until the reader closes.
pub(super) async fn peek_subscription(
    connector: &PubSubConnector,
    endpoint: &Endpoint,
    name: &str,
    settings: &TailSettings,
    outstanding: usize,
) -> Result<Box<dyn Source>, AdapterError> {
    if !settings.disturb {
        return Err(AdapterError::Invalid(format!(
            "reading subscription `{name}` takes its messages from its consumers while tail runs; tail the topic instead (a temporary subscription), or pass --disturb to peek (messages are held while tail runs, then nacked back)"
        )));
    }
    let subscription = connector.clients.subscription(name);
    connector
        .clients
        .subscription_has_dead_letter(&subscription)
        .await?;
    let spec = connector.spec(
        &subscription,
        endpoint,
        60,
        outstanding,
        source::AckMode::Peek,
    );
    Ok(Box::new(source::PubSubSource::start(spec, 10)))
}

/// Reads a topic through a temporary subscription, deleted when tail ends.
struct TopicTail {
    reader: Box<dyn Source>,
    clients: Arc<PubSubClients>,
    subscription: String,
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
            subscription,
        } = *self;
        reader.close().await;
        clients.delete_subscription(&subscription).await;
    }
}
