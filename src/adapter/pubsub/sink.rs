//! Pub/Sub sink: one publisher per topic, batching as the client library does (up to 100
//! messages, 1 MB or 10 ms per request); the message id Pub/Sub returns is the
//! confirmation. The message key becomes the ordering key, so messages of one key are
//! published in order; after a failure on an ordering key, publishing on that key is
//! resumed before the error is returned (the router's retry then resends in order).
//! Pub/Sub's limits are checked before anything is sent ([`super::mapping`]). The client
//! library's queue is unbounded, so a window of `max_unconfirmed` bounds it here.

use std::sync::Arc;

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::error::PublishError;
use tokio::sync::Semaphore;

use super::client::classify;
use super::mapping;
use crate::adapter::{Confirmation, ErrorClass, Receipt, SendError, Sink};
use crate::message::Message;

/// Most messages published and not yet confirmed, per topic.
pub const MAX_UNCONFIRMED: usize = 1000;

pub struct PubSubSink {
    pub publisher: Publisher,
    pub window: Arc<Semaphore>,
    pub topic: String,
}

#[async_trait]
impl Sink for PubSubSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let outgoing = mapping::encode(message)
            .map_err(|reason| SendError::permanent(format!("{}: {reason}", self.topic)))?;
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SendError::transient("publisher closed"))?;
        let ordering_key = outgoing.ordering_key.clone();
        let pending = self.publisher.publish(
            google_cloud_pubsub::model::Message::new()
                .set_data(outgoing.data)
                .set_attributes(outgoing.attributes)
                .set_ordering_key(outgoing.ordering_key),
        );
        let publisher = self.publisher.clone();
        Ok(Box::pin(async move {
            let result = pending.await;
            drop(permit);
            match result {
                Ok(message_id) => Ok(Receipt {
                    message_id: Some(message_id),
                    ..Receipt::default()
                }),
                Err(error) => {
                    if !ordering_key.is_empty() {
                        publisher.resume_publish(ordering_key);
                    }
                    Err(match &error {
                        PublishError::Rpc(rpc) => SendError {
                            class: classify(rpc),
                            message: format!("Pub/Sub refused the message: {rpc}"),
                        },
                        other => SendError {
                            class: ErrorClass::Transient,
                            message: format!("Pub/Sub publish failed: {other}"),
                        },
                    })
                }
            }
        }))
    }

    async fn flush(&self) {
        self.publisher.flush().await;
    }
}
