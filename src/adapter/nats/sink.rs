//! NATS sinks.
//!
//! - `subject/SUBJECT`: JetStream publish; the stream that captures the subject answers
//!   with a PubAck, which is the confirmation (its sequence is the receipt's offset). The
//!   message id travels as `Nats-Msg-Id`, so the stream's duplicate window drops a resend
//!   (the PubAck then says `duplicate`, and the send counts as confirmed). No stream for
//!   the subject is a permanent error.
//! - `core/SUBJECT`: core NATS publish, at most once: confirmed once the client has
//!   written it to the server's socket (a flush); a subscriber that is not listening, or a
//!   connection lost right after, loses it.
//!
//! Publishes are written in call order; a window of [`MAX_UNCONFIRMED`] per sink bounds
//! the PubAcks awaited at once.

use std::sync::Arc;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::mapping;
use crate::adapter::{Confirmation, ErrorClass, Receipt, SendError, Sink};
use crate::message::Message;

/// Most messages published and not yet confirmed, per sink.
pub const MAX_UNCONFIRMED: usize = 1024;

/// Publishes to a subject that a stream captures.
pub struct JetStreamSink {
    pub context: jetstream::Context,
    pub client: async_nats::Client,
    /// Shared bytes: cloned for every publish without copying.
    pub subject: async_nats::Subject,
    pub window: Arc<Semaphore>,
}

/// Publishes to a subject without confirmation.
pub struct CoreSink {
    pub client: async_nats::Client,
    pub subject: async_nats::Subject,
}

/// Encodes `message` for `subject`, or a permanent error naming it.
fn outgoing(
    message: &Message,
    subject: &str,
) -> Result<(async_nats::HeaderMap, bytes::Bytes), SendError> {
    let refused = |reason: String| SendError::permanent(format!("NATS `{subject}`: {reason}"));
    let encoded = crate::adapter::map_large(message.headers.len(), || mapping::encode(message))
        .map_err(refused)?;
    Ok((encoded.headers, encoded.payload))
}

/// The class of a failed JetStream publish.
fn classify(
    error: &jetstream::context::PublishError,
    client: &async_nats::Client,
    subject: &str,
) -> SendError {
    let disconnected = !matches!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
    let (class, what) = match error.kind() {
        PublishErrorKind::StreamNotFound => (
            ErrorClass::Permanent,
            "no JetStream stream captures the subject (declare one under `declare.streams`)",
        ),
        PublishErrorKind::MaxPayloadExceeded => (
            ErrorClass::Permanent,
            "the message is larger than the server's max_payload",
        ),
        _ if disconnected => (ErrorClass::Unavailable, "the server cannot be reached"),
        PublishErrorKind::BrokenPipe => (ErrorClass::Unavailable, "the connection broke"),
        _ => (ErrorClass::Transient, "the publish was not acknowledged"),
    };
    SendError {
        class,
        message: format!("NATS `{subject}`: {what}: {error}"),
    }
}

#[async_trait]
impl Sink for JetStreamSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let (headers, payload) = outgoing(message, &self.subject)?;
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SendError::transient("publisher closed"))?;
        let pending = self
            .context
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
            .map_err(|e| classify(&e, &self.client, &self.subject))?;
        let client = self.client.clone();
        let subject = self.subject.clone();
        Ok(Box::pin(async move {
            let acked = pending.await;
            drop(permit);
            let ack = acked.map_err(|e| classify(&e, &client, subject.as_str()))?;
            if ack.duplicate {
                tracing::debug!(
                    subject = subject.as_str(),
                    sequence = ack.sequence,
                    "JetStream dropped a duplicate (same Nats-Msg-Id in the duplicate window)"
                );
            }
            Ok(Receipt {
                offset: i64::try_from(ack.sequence).ok(),
                ..Receipt::default()
            })
        }))
    }

    async fn flush(&self) {
        // Every permit back means every PubAck has arrived or failed.
        if let Ok(all) = self.window.acquire_many(MAX_UNCONFIRMED as u32).await {
            drop(all);
        }
    }
}

#[async_trait]
impl Sink for CoreSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let (headers, payload) = outgoing(message, &self.subject)?;
        self.client
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
            .map_err(|e| {
                use async_nats::client::PublishErrorKind as Kind;
                let class = match e.kind() {
                    Kind::MaxPayloadExceeded | Kind::InvalidSubject => ErrorClass::Permanent,
                    Kind::Send => ErrorClass::Unavailable,
                };
                SendError {
                    class,
                    message: format!("NATS `{}`: {e}", self.subject),
                }
            })?;
        let client = self.client.clone();
        let subject = self.subject.clone();
        Ok(Box::pin(async move {
            client.flush().await.map_err(|e| {
                SendError::unavailable(format!("NATS `{subject}`: not written: {e}"))
            })?;
            Ok(Receipt::default())
        }))
    }

    async fn flush(&self) {
        let _ = self.client.flush().await;
    }
}
