//! The Redis Streams source: a consumer group read with `XREADGROUP`.
//!
//! - A reader task hands out new entries (`>`) while the route has room (a window of
//!   `max_in_flight` unsettled deliveries), on a connection of its own, because a blocking
//!   read holds its connection. It first hands out the entries this consumer had pending
//!   (a restart of the same replica), and every `claim_idle_ms / 2` claims entries that
//!   another consumer left pending longer than `claim_idle_ms` (`XAUTOCLAIM`: a replica
//!   that crashed); their delivery count is the receive count.
//! - Ack = `XACK` (batched by a settler task; flushed before `close` returns). Retry =
//!   `XCLAIM` of the entry to this consumer, which counts one more delivery, and the entry
//!   is handed out again. A stream has no reject: routes from Redis need a `dead_letter`.
//!   An entry whose handle was dropped without an outcome stays pending, for a claim.
//! - An entry deleted while pending (trimmed by `MAXLEN`) is acknowledged and skipped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::mapping::{self, Fields};
use crate::ack::{AckHandle, Outcome};
use crate::adapter::{AdapterError, Backlog, Delivery, Source};
use crate::message::{Origin, OriginValue};

/// How long one blocking read waits for new entries.
pub const BLOCK_MS: u64 = 1_000;
/// Most entries one read or claim asks for.
const COUNT: usize = 100;

/// What to read and how.
#[derive(Clone)]
pub struct ReadSpec {
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub endpoint: String,
    pub window: usize,
    pub claim_idle: Duration,
}

enum Settle {
    Ack(String),
}

pub struct StreamSource {
    deliveries: mpsc::Receiver<Delivery>,
    stop: CancellationToken,
    reader: tokio::task::JoinHandle<()>,
    settler: tokio::task::JoinHandle<()>,
    acks: mpsc::UnboundedSender<Settle>,
    backlog: Arc<GroupBacklog>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

/// One entry as a reply gives it: its id and fields (`None`: deleted while pending).
type Entry = (String, Option<Fields>);

fn parse_error(error: impl std::fmt::Display) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected reply",
        error.to_string(),
    ))
}

/// The entries of an `XREADGROUP`/`XREAD` reply (RESP2 arrays or RESP3 maps), in order.
pub fn read_reply(value: Value) -> Result<Vec<Entry>, redis::RedisError> {
    let streams: Vec<(Value, Vec<Entry>)> = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(map) => map
            .into_iter()
            .map(|(key, entries)| Ok((key, redis::from_redis_value(entries).map_err(parse_error)?)))
            .collect::<Result<_, redis::RedisError>>()?,
        other => redis::from_redis_value(other).map_err(parse_error)?,
    };
    Ok(streams
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .collect())
}

impl StreamSource {
    pub fn start(
        reader: ConnectionManager,
        commands: ConnectionManager,
        spec: ReadSpec,
    ) -> StreamSource {
        let stop = CancellationToken::new();
        let (deliveries_tx, deliveries) = mpsc::channel(spec.window.max(1));
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let (retries_tx, retries) = mpsc::unbounded_channel();
        let failure = Arc::new(std::sync::Mutex::new(None));
        let backlog = Arc::new(GroupBacklog {
            connection: commands.clone(),
            stream: spec.stream.clone(),
            group: spec.group.clone(),
        });
        let settler = tokio::spawn(settle(commands.clone(), spec.clone(), acks_rx));
        let task = Reader {
            reader,
            commands,
            window: Arc::new(Semaphore::new(spec.window.max(1))),
            spec,
            deliveries: deliveries_tx,
            acks: acks.clone(),
            retries: retries_tx,
            failure: failure.clone(),
        };
        let reader = tokio::spawn(task.run(retries, stop.clone()));
        StreamSource {
            deliveries,
            stop,
            reader,
            settler,
            acks,
            backlog,
            failure,
        }
    }
}

struct Reader {
    reader: ConnectionManager,
    commands: ConnectionManager,
    spec: ReadSpec,
    window: Arc<Semaphore>,
    deliveries: mpsc::Sender<Delivery>,
    acks: mpsc::UnboundedSender<Settle>,
    retries: mpsc::UnboundedSender<(String, u32)>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl Reader {
    async fn run(
        mut self,
        mut retries: mpsc::UnboundedReceiver<(String, u32)>,
        stop: CancellationToken,
    ) {
        let mut wait = Duration::from_millis(200);
        // This consumer's own pending entries first (a restart of the same replica).
        let mut own = Some("0".to_owned());
        let claim_every = (self.spec.claim_idle / 2).max(Duration::from_millis(100));
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if stop.is_cancelled() {
                return;
            }
            let step = async {
                while let Ok((id, count)) = retries.try_recv() {
                    self.again(&id, count).await?;
                }
                if let Some(from) = own.take() {
                    let entries = self.read(&from, None).await?;
                    if let Some((last, _)) = entries.last() {
                        own = Some(last.clone());
                    }
                    let counts = self.delivery_counts(&entries).await?;
                    self.hand_out(entries, &counts).await;
                } else if last_claim.elapsed() >= claim_every {
                    last_claim = tokio::time::Instant::now();
                    let entries = self.claim().await?;
                    let counts = self.delivery_counts(&entries).await?;
                    self.hand_out(entries, &counts).await;
                } else {
                    let room = self.window.available_permits().min(COUNT);
                    if room == 0 {
                        // Wait for a settlement (or a retry) before reading on.
                        tokio::select! {
                            permit = self.window.acquire() => drop(permit),
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        }
                        return Ok(());
                    }
                    let entries = self.read(">", Some(room)).await?;
                    self.hand_out(entries, &[]).await;
                }
                Ok::<(), redis::RedisError>(())
            };
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                result = step => result,
            };
            match result {
                Ok(()) => wait = Duration::from_millis(200),
                Err(error) if error.code() == Some("NOGROUP") => {
                    *self.failure.lock().expect("failure lock") = Some(format!(
                        "Redis stream `{}` has no consumer group `{}` (deleted?): {error}",
                        self.spec.stream, self.spec.group
                    ));
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, endpoint = %self.spec.endpoint, retry_in = ?wait, "Redis read failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// `XREADGROUP` from `id` (`>`: new entries, blocking; else this consumer's pending).
    async fn read(
        &mut self,
        id: &str,
        count: Option<usize>,
    ) -> Result<Vec<Entry>, redis::RedisError> {
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&self.spec.group)
            .arg(&self.spec.consumer)
            .arg("COUNT")
            .arg(count.unwrap_or(COUNT));
        if id == ">" {
            command.arg("BLOCK").arg(BLOCK_MS);
        }
        command.arg("STREAMS").arg(&self.spec.stream).arg(id);
        let reply: Value = command.query_async(&mut self.reader).await?;
        read_reply(reply)
    }

    /// `XAUTOCLAIM`: entries pending longer than `claim_idle` with any consumer.
    async fn claim(&mut self) -> Result<Vec<Entry>, redis::RedisError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.spec.stream)
            .arg(&self.spec.group)
            .arg(&self.spec.consumer)
            .arg(u64::try_from(self.spec.claim_idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(COUNT)
            .query_async(&mut self.commands)
            .await?;
        let Value::Array(mut parts) = reply else {
            return Err(parse_error("XAUTOCLAIM did not answer with an array"));
        };
        if parts.len() < 2 {
            return Err(parse_error("XAUTOCLAIM answered too few parts"));
        }
        let claimed: Vec<Entry> =
            redis::from_redis_value(parts.swap_remove(1)).map_err(parse_error)?;
        if !claimed.is_empty() {
            tracing::info!(endpoint = %self.spec.endpoint, claimed = claimed.len(), "claimed entries another consumer left pending");
        }
        Ok(claimed)
    }

    /// The delivery counts of `entries` (`XPENDING`, one call for their range).
    async fn delivery_counts(
        &mut self,
        entries: &[Entry],
    ) -> Result<Vec<(String, u32)>, redis::RedisError> {
        let (Some((first, _)), Some((last, _))) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.spec.stream)
            .arg(&self.spec.group)
            .arg(first)
            .arg(last)
            .arg(entries.len())
            .arg(&self.spec.consumer)
            .query_async(&mut self.commands)
            .await?;
        Ok(pending
            .into_iter()
            .map(|(id, _, _, count)| (id, u32::try_from(count).unwrap_or(u32::MAX)))
            .collect())
    }

    /// Retry: claims entry `id` again (one more delivery) and hands it out.
    async fn again(&mut self, id: &str, count: u32) -> Result<(), redis::RedisError> {
        let reply: Value = redis::cmd("XCLAIM")
            .arg(&self.spec.stream)
            .arg(&self.spec.group)
            .arg(&self.spec.consumer)
            .arg(0)
            .arg(id)
            .query_async(&mut self.commands)
            .await?;
        let entries: Vec<Entry> = redis::from_redis_value(reply).map_err(parse_error)?;
        self.hand_out(entries, &[(id.to_owned(), count.saturating_add(1))])
            .await;
        Ok(())
    }

    async fn hand_out(&mut self, entries: Vec<Entry>, counts: &[(String, u32)]) {
        for (id, fields) in entries {
            let Some(fields) = fields else {
                // Deleted while pending: nothing to deliver.
                let _ = self.acks.send(Settle::Ack(id));
                continue;
            };
            let Ok(permit) = self.window.clone().acquire_owned().await else {
                return;
            };
            let receive_count = counts
                .iter()
                .find(|(pending, _)| *pending == id)
                .map_or(1, |(_, count)| *count);
            let message = crate::adapter::map_large(fields.len(), || mapping::decode(&id, fields));
            let message = message.with_origin(Origin {
                endpoint: self.spec.endpoint.clone(),
                receive_count: Some(receive_count),
                broker_message_id: Some(id.clone()),
                fields: vec![("stream", OriginValue::text(&self.spec.stream))],
                ..Origin::default()
            });
            let acks = self.acks.clone();
            let retries = self.retries.clone();
            let settled = id.clone();
            let ack = AckHandle::new(move |outcome| {
                drop(permit);
                match outcome {
                    Outcome::Ack => {
                        let _ = acks.send(Settle::Ack(settled));
                    }
                    Outcome::Retry(_) | Outcome::Reject(_) => {
                        let _ = retries.send((settled, receive_count));
                    }
                }
            });
            if self
                .deliveries
                .send(Delivery { message, ack })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Acknowledges in batches; ends when every sender is gone, after the last batch.
async fn settle(
    mut connection: ConnectionManager,
    spec: ReadSpec,
    mut acks: mpsc::UnboundedReceiver<Settle>,
) {
    let mut batch = Vec::with_capacity(COUNT);
    while acks.recv_many(&mut batch, COUNT).await > 0 {
        let ids: Vec<String> = batch.drain(..).map(|Settle::Ack(id)| id).collect();
        let mut attempt = 0;
        loop {
            let done: Result<u64, redis::RedisError> = redis::cmd("XACK")
                .arg(&spec.stream)
                .arg(&spec.group)
                .arg(&ids)
                .query_async(&mut connection)
                .await;
            match done {
                Ok(_) => break,
                Err(error) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(%error, "Redis XACK failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "Redis XACK failed; those entries stay pending and will be delivered again");
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl Source for StreamSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        match self.deliveries.recv().await {
            Some(delivery) => Ok(Some(delivery)),
            None => Err(match self.failure.lock().expect("failure lock").clone() {
                Some(reason) => AdapterError::Invalid(reason),
                None => AdapterError::Unavailable("the Redis reader stopped".into()),
            }),
        }
    }

    async fn close(self: Box<Self>) {
        let StreamSource {
            mut deliveries,
            stop,
            reader,
            settler,
            acks,
            ..
        } = *self;
        stop.cancel();
        let _ = reader.await;
        // Never handed out: they stay pending for this consumer and come back first.
        while let Ok(delivery) = deliveries.try_recv() {
            delivery.ack.abandon();
        }
        drop(deliveries);
        drop(acks);
        if tokio::time::timeout(Duration::from_secs(10), settler)
            .await
            .is_err()
        {
            tracing::warn!(
                "Redis acknowledgements did not finish within 10 s; those entries will be delivered again"
            );
        }
    }

    fn backlog(&self) -> Option<Arc<dyn Backlog>> {
        Some(self.backlog.clone())
    }
}

/// The group's lag (entries not yet read by it; Redis 7) plus its pending entries.
pub struct GroupBacklog {
    connection: ConnectionManager,
    stream: String,
    group: String,
}

#[async_trait]
impl Backlog for GroupBacklog {
    async fn messages(&self) -> Result<u64, AdapterError> {
        use redis::AsyncTypedCommands;
        let mut connection = self.connection.clone();
        let groups = connection.xinfo_groups(&self.stream).await.map_err(|e| {
            AdapterError::Unavailable(format!("Redis XINFO GROUPS {}: {e}", self.stream))
        })?;
        let group = groups
            .groups
            .into_iter()
            .find(|g| g.name == self.group)
            .ok_or_else(|| AdapterError::Invalid(format!("no consumer group `{}`", self.group)))?;
        Ok(group.lag.unwrap_or(0) as u64 + group.pending as u64)
    }
}
