//! Batching of sends for SendMessageBatch and PublishBatch (10 entries per call).
//!
//! `submit` enqueues in call order and returns a confirmation; a batching task takes
//! whatever is queued (up to 10 entries and the size limit), sends it in one call and
//! resolves each entry's confirmation from that entry's own result, so one bad message
//! fails alone. There is no waiting to fill a batch: under load, entries queue up while the
//! previous calls run, which fills batches by itself. FIFO targets send one batch at a time
//! to keep order; standard targets keep up to four calls in flight. A window bounds the
//! entries not yet confirmed.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::mapping::Encoded;
use crate::adapter::{Receipt, SendError};

/// Entries per call, as SQS and SNS allow.
pub const MAX_BATCH: usize = 10;

/// One message as the batch APIs take it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub encoded: Encoded,
    /// FIFO message group id.
    pub group_id: Option<String>,
    /// FIFO deduplication id.
    pub dedup_id: Option<String>,
}

/// The service call behind a batcher.
#[async_trait]
pub trait SendBatch: Send + Sync + 'static {
    /// Sends `entries` in one call; one result per entry, in the same order.
    async fn send_batch(&self, entries: &[Entry]) -> Vec<Result<Receipt, SendError>>;
}

struct Queued {
    entry: Entry,
    reply: oneshot::Sender<Result<Receipt, SendError>>,
    _permit: OwnedSemaphorePermit,
}

/// Enqueues entries for one queue or topic.
pub struct Batcher {
    queue: mpsc::UnboundedSender<Queued>,
    window: Arc<Semaphore>,
    capacity: u32,
}

impl Batcher {
    /// Starts the batching task. `max_batch_bytes` bounds the size of one call.
    pub fn start(
        api: Arc<dyn SendBatch>,
        fifo: bool,
        window: usize,
        max_batch_bytes: usize,
    ) -> Batcher {
        let (queue, pending) = mpsc::unbounded_channel();
        let calls = if fifo { 1 } else { 4 };
        tokio::spawn(run(api, pending, calls, max_batch_bytes));
        let capacity = window.max(MAX_BATCH);
        Batcher {
            queue,
            window: Arc::new(Semaphore::new(capacity)),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
        }
    }

    /// Enqueues `entry`, waiting for room in the window; the receiver gets its result.
    pub async fn submit(
        &self,
        entry: Entry,
    ) -> Result<oneshot::Receiver<Result<Receipt, SendError>>, SendError> {
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SendError::transient("sender closed"))?;
        let (reply, result) = oneshot::channel();
        self.queue
            .send(Queued {
                entry,
                reply,
                _permit: permit,
            })
            .map_err(|_| SendError::transient("sender closed"))?;
        Ok(result)
    }

    /// Waits until every submitted entry has its result.
    pub async fn flush(&self) {
        let _ = self.window.acquire_many(self.capacity).await;
    }
}

async fn run(
    api: Arc<dyn SendBatch>,
    mut pending: mpsc::UnboundedReceiver<Queued>,
    calls: usize,
    max_bytes: usize,
) {
    let slots = Arc::new(Semaphore::new(calls));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match pending.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut size = first.entry.encoded.size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) if size + next.entry.encoded.size() <= max_bytes => {
                    size += next.entry.encoded.size();
                    batch.push(next);
                }
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("slots are never closed");
        let api = api.clone();
        let call = async move {
            let entries: Vec<Entry> = batch.iter().map(|q| q.entry.clone()).collect();
            let results = api.send_batch(&entries).await;
            for (queued, result) in batch.into_iter().zip(results) {
                let _ = queued.reply.send(result);
            }
            drop(slot);
        };
        if calls == 1 {
            call.await;
        } else {
            tokio::spawn(call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records batch sizes and fails entries whose body is "bad".
    struct Fake {
        batches: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl SendBatch for Fake {
        async fn send_batch(&self, entries: &[Entry]) -> Vec<Result<Receipt, SendError>> {
            self.batches
                .lock()
                .unwrap()
                .push(entries.iter().map(|e| e.encoded.body.clone()).collect());
            tokio::task::yield_now().await;
            entries
                .iter()
                .map(|e| match e.encoded.body.as_str() {
                    "bad" => Err(SendError::permanent("refused")),
                    body => Ok(Receipt {
                        message_id: Some(format!("id-{body}")),
                        ..Receipt::default()
                    }),
                })
                .collect()
        }
    }

    fn entry(body: &str) -> Entry {
        Entry {
            encoded: Encoded {
                body: body.to_owned(),
                attributes: Vec::new(),
                subject: None,
            },
            group_id: None,
            dedup_id: None,
        }
    }

    #[tokio::test]
    async fn batches_hold_at_most_ten_in_order_and_failures_stay_per_entry() {
        let fake = Arc::new(Fake {
            batches: Mutex::new(Vec::new()),
        });
        let batcher = Batcher::start(fake.clone(), true, 100, 1 << 20);
        let mut results = Vec::new();
        for n in 0..25 {
            let body = if n == 7 {
                "bad".to_owned()
            } else {
                n.to_string()
            };
            results.push(batcher.submit(entry(&body)).await.unwrap());
        }
        let mut outcomes = Vec::new();
        for result in results {
            outcomes.push(result.await.unwrap());
        }
        assert!(outcomes[7].is_err());
        assert_eq!(
            outcomes[8].as_ref().unwrap().message_id.as_deref(),
            Some("id-8")
        );
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 24);
        let batches = fake.batches.lock().unwrap();
        assert!(batches.iter().all(|b| b.len() <= MAX_BATCH));
        let order: Vec<String> = batches.iter().flatten().cloned().collect();
        let expected: Vec<String> = (0..25)
            .map(|n| if n == 7 { "bad".into() } else { n.to_string() })
            .collect();
        assert_eq!(order, expected);
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_the_size_limit() {
        let fake = Arc::new(Fake {
            batches: Mutex::new(Vec::new()),
        });
        let batcher = Batcher::start(fake.clone(), true, 100, 10);
        let mut results = Vec::new();
        for body in ["aaaa", "bbbb", "cccc", "dddd"] {
            results.push(batcher.submit(entry(body)).await.unwrap());
        }
        for result in results {
            result.await.unwrap().unwrap();
        }
        assert!(fake.batches.lock().unwrap().iter().all(|b| b.len() <= 2));
    }
}
