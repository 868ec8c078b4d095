//! SQS and SNS sinks: messages are encoded ([`super::mapping`]), checked against the
//! size limit before anything is sent (too large is a permanent error, so it reaches the
//! dead letter), and sent in batches of up to 10 ([`super::batcher`]); each message is
//! confirmed by its own entry in the batch result. On FIFO targets the message group id is
//! the message key (`default` when there is none; a key that is not valid group-id text is
//! sent hex-encoded) and the deduplication id is the route's deduplication identity when the
//! route has a `dedup:` step (so a send repeated after a crash is dropped by SQS within its
//! 5-minute window), else the message id, else an id derived from the message's origin
//! (stable across redeliveries of the same source message), else a fresh one.

use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_sqs::primitives::Blob;

use super::batcher::{Batcher, Entry, SendBatch};
use super::client::{AwsClients, send_error};
use super::mapping::{self, Attribute, Mode, valid_fifo_id};
use crate::adapter::{Confirmation, Receipt, SendError, Sink};
use crate::message::Message;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// FNV-1a, stable across builds and platforms (unlike std's hasher).
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// 128 bits of FNV-1a over `text` in hex: a valid FIFO id for any text.
fn digest(text: &str) -> String {
    let mut a = Fnv(0xcbf2_9ce4_8422_2325);
    let mut b = Fnv(0x8422_2325_cbf2_9ce4);
    a.write(text.as_bytes());
    b.write(text.as_bytes());
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

static FRESH: AtomicU64 = AtomicU64::new(0);

/// The FIFO group and deduplication ids for `message`.
pub fn fifo_ids(message: &Message) -> (String, String) {
    let group = match message.key.as_deref() {
        None | Some([]) => "default".to_owned(),
        Some(key) => match std::str::from_utf8(key) {
            Ok(text) if valid_fifo_id(text) => text.to_owned(),
            _ => hex(key).chars().take(128).collect(),
        },
    };
    // The origin identifies one source message only with a log position or a broker id.
    let unique_origin = message
        .origin()
        .filter(|o| (o.partition.is_some() && o.offset.is_some()) || o.broker_message_id.is_some());
    let dedup = match (message.dedup_identity(), &message.message_id, unique_origin) {
        (Some(identity), _, _) if valid_fifo_id(identity) => identity.to_owned(),
        (Some(identity), _, _) => format!("d-{}", digest(identity)),
        (None, Some(id), _) if valid_fifo_id(id) => id.clone(),
        (None, _, Some(origin)) => {
            let coordinates = format!(
                "{}|{:?}|{:?}|{:?}",
                origin.endpoint, origin.partition, origin.offset, origin.broker_message_id
            );
            format!("o-{}", digest(&coordinates))
        }
        _ => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!(
                "n-{nanos:x}-{}-{:x}",
                std::process::id(),
                FRESH.fetch_add(1, Ordering::Relaxed)
            )
        }
    };
    (group, dedup)
}

/// SendMessageBatch to one queue.
pub struct SqsBatch {
    pub clients: Arc<AwsClients>,
    pub queue_url: String,
}

#[async_trait]
impl SendBatch for SqsBatch {
    async fn send_batch(&self, entries: &[Entry]) -> Vec<Result<Receipt, SendError>> {
        use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
        let mut request = self
            .clients
            .sqs
            .send_message_batch()
            .queue_url(&self.queue_url);
        for (index, entry) in entries.iter().enumerate() {
            let mut built = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(&entry.encoded.body)
                .set_message_group_id(entry.group_id.clone())
                .set_message_deduplication_id(entry.dedup_id.clone());
            for (name, attribute) in &entry.encoded.attributes {
                let value = match attribute {
                    Attribute::String(s) => MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(s),
                    Attribute::Number(n) => MessageAttributeValue::builder()
                        .data_type("Number")
                        .string_value(n),
                    Attribute::Binary(b) => MessageAttributeValue::builder()
                        .data_type("Binary")
                        .binary_value(Blob::new(b.to_vec())),
                };
                built = built.message_attributes(name, value.build().expect("data type is set"));
            }
            request = request.entries(built.build().expect("id and body are set"));
        }
        match request.send().await {
            Ok(output) => {
                let mut results: Vec<Result<Receipt, SendError>> = vec![
                    Err(SendError::transient(
                        "SQS returned no result for this entry"
                    ));
                    entries.len()
                ];
                for ok in output.successful() {
                    if let Ok(index) = ok.id().parse::<usize>()
                        && index < results.len()
                    {
                        results[index] = Ok(Receipt {
                            message_id: Some(ok.message_id().to_owned()),
                            sequence_number: ok.sequence_number().map(str::to_owned),
                            ..Receipt::default()
                        });
                    }
                }
                for failed in output.failed() {
                    if let Ok(index) = failed.id().parse::<usize>()
                        && index < results.len()
                    {
                        let text = format!(
                            "SQS refused the message: {} {}",
                            failed.code(),
                            failed.message().unwrap_or_default()
                        );
                        results[index] = Err(if failed.sender_fault() {
                            SendError::permanent(text)
                        } else {
                            SendError::transient(text)
                        });
                    }
                }
                results
            }
            Err(error) => vec![Err(send_error("SendMessageBatch", &error)); entries.len()],
        }
    }
}

/// PublishBatch to one topic.
pub struct SnsBatch {
    pub clients: Arc<AwsClients>,
    pub topic_arn: String,
}

#[async_trait]
impl SendBatch for SnsBatch {
    async fn send_batch(&self, entries: &[Entry]) -> Vec<Result<Receipt, SendError>> {
        use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
        let mut request = self.clients.sns.publish_batch().topic_arn(&self.topic_arn);
        for (index, entry) in entries.iter().enumerate() {
            let mut built = PublishBatchRequestEntry::builder()
                .id(index.to_string())
                .message(&entry.encoded.body)
                .set_subject(entry.encoded.subject.clone())
                .set_message_group_id(entry.group_id.clone())
                .set_message_deduplication_id(entry.dedup_id.clone());
            for (name, attribute) in &entry.encoded.attributes {
                let value = match attribute {
                    Attribute::String(s) => MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(s),
                    Attribute::Number(n) => MessageAttributeValue::builder()
                        .data_type("Number")
                        .string_value(n),
                    Attribute::Binary(b) => MessageAttributeValue::builder()
                        .data_type("Binary")
                        .binary_value(aws_sdk_sns::primitives::Blob::new(b.to_vec())),
                };
                built = built.message_attributes(name, value.build().expect("data type is set"));
            }
            request = request
                .publish_batch_request_entries(built.build().expect("id and message are set"));
        }
        match request.send().await {
            Ok(output) => {
                let mut results: Vec<Result<Receipt, SendError>> = vec![
                    Err(SendError::transient(
                        "SNS returned no result for this entry"
                    ));
                    entries.len()
                ];
                for ok in output.successful() {
                    if let Some(index) = ok.id().and_then(|id| id.parse::<usize>().ok())
                        && index < results.len()
                    {
                        results[index] = Ok(Receipt {
                            message_id: ok.message_id().map(str::to_owned),
                            sequence_number: ok.sequence_number().map(str::to_owned),
                            ..Receipt::default()
                        });
                    }
                }
                for failed in output.failed() {
                    if let Ok(index) = failed.id().parse::<usize>()
                        && index < results.len()
                    {
                        let text = format!(
                            "SNS refused the message: {} {}",
                            failed.code(),
                            failed.message().unwrap_or_default()
                        );
                        results[index] = Err(if failed.sender_fault() {
                            SendError::permanent(text)
                        } else {
                            SendError::transient(text)
                        });
                    }
                }
                results
            }
            Err(error) => vec![Err(send_error("PublishBatch", &error)); entries.len()],
        }
    }
}

/// A sink to one queue or topic.
pub struct AwsSink {
    pub batcher: Batcher,
    pub mode: Mode,
    pub max_bytes: usize,
    pub target: String,
}

#[async_trait]
impl Sink for AwsSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let encoded = mapping::encode(message, self.mode);
        if let Some(subject) = &encoded.subject
            && let Some(reason) = mapping::subject_error(subject)
        {
            return Err(SendError::permanent(format!(
                "the header `{}` cannot be the SNS Subject: {reason}",
                mapping::SNS_SUBJECT
            )));
        }
        let size = encoded.size();
        if size > self.max_bytes {
            return Err(SendError::permanent(format!(
                "message is {size} bytes with its attributes; {} takes at most {}",
                self.target, self.max_bytes
            )));
        }
        let (group_id, dedup_id) = if self.mode.fifo {
            let (group, dedup) = fifo_ids(message);
            (Some(group), Some(dedup))
        } else {
            (None, None)
        };
        let result = self
            .batcher
            .submit(Entry {
                encoded,
                group_id,
                dedup_id,
            })
            .await?;
        Ok(Box::pin(async move {
            result.await.unwrap_or_else(|_| {
                Err(SendError::transient("the sender stopped before confirming"))
            })
        }))
    }

    async fn flush(&self) {
        self.batcher.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Origin;

    #[test]
    fn fifo_ids_come_from_key_and_stable_origin() {
        let mut message = Message::new("x").with_origin(Origin {
            endpoint: "kafka:orders".into(),
            partition: Some(1),
            offset: Some(9),
            ..Origin::default()
        });
        message.key = Some("customer-1".into());
        let (group, dedup) = fifo_ids(&message);
        assert_eq!(group, "customer-1");
        assert_eq!(
            fifo_ids(&message).1,
            dedup,
            "the same source message gets the same id"
        );
        message.message_id = Some("m-1".into());
        assert_eq!(fifo_ids(&message).1, "m-1");
        message.key = Some(vec![0xffu8, 0x00].into());
        assert_eq!(fifo_ids(&message).0, "ff00");
        assert_eq!(fifo_ids(&Message::new("y")).0, "default");
        let queue_origin = Origin {
            endpoint: "rabbit:queue/q".into(),
            receive_count: Some(1),
            ..Origin::default()
        };
        message.set_dedup_identity(Some("run-7".into()));
        assert_eq!(
            fifo_ids(&message).1,
            "run-7",
            "the route's dedup identity comes first"
        );
        message.set_dedup_identity(Some("with space ".repeat(20)));
        let hashed = fifo_ids(&message).1;
        assert!(
            hashed.starts_with("d-") && valid_fifo_id(&hashed),
            "{hashed}"
        );
        let a = fifo_ids(&Message::new("a").with_origin(queue_origin.clone())).1;
        let b = fifo_ids(&Message::new("b").with_origin(queue_origin)).1;
        assert_ne!(
            a, b,
            "an origin without a position does not identify a message"
        );
    }
}
