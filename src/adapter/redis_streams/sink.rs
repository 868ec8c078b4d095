//! The Redis Streams sink: `XADD` (with `MAXLEN ~ N` when the connection sets `max_len`),
//! confirmed by the entry id Redis answers with (the receipt's message id).
//!
//! One writer task per sink sends the entries in call order, a batch at a time in one
//! pipeline (one round trip), and answers each send with its own reply; at most
//! [`MAX_UNCONFIRMED`] wait for the writer.

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::mapping;
use crate::adapter::{Confirmation, ErrorClass, Receipt, SendError, Sink};
use crate::message::Message;

/// Most entries waiting for the writer, per sink.
pub const MAX_UNCONFIRMED: usize = 1024;
/// Most entries in one pipeline.
const BATCH: usize = 128;

type Reply = oneshot::Sender<Result<String, SendError>>;

pub struct StreamSink {
    queue: mpsc::Sender<(mapping::Fields, Reply)>,
}

impl StreamSink {
    pub fn start(
        connection: ConnectionManager,
        stream: String,
        max_len: Option<usize>,
    ) -> StreamSink {
        let (queue, entries) = mpsc::channel(MAX_UNCONFIRMED);
        tokio::spawn(write(connection, stream, max_len, entries));
        StreamSink { queue }
    }
}

/// The class of a failed command: a refusal by Redis (wrong type, out of memory with
/// `noeviction`, ...) is permanent unless Redis says to try again; a lost connection waits.
pub fn classify(error: &redis::RedisError) -> ErrorClass {
    if error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
    {
        ErrorClass::Unavailable
    } else if matches!(
        error.kind(),
        redis::ErrorKind::Server(
            redis::ServerErrorKind::BusyLoading | redis::ServerErrorKind::TryAgain
        )
    ) {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

async fn write(
    mut connection: ConnectionManager,
    stream: String,
    max_len: Option<usize>,
    mut entries: mpsc::Receiver<(mapping::Fields, Reply)>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while entries.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for (fields, _) in &batch {
            let command = pipe.cmd("XADD").arg(&stream);
            if let Some(max_len) = max_len {
                command.arg("MAXLEN").arg("~").arg(max_len);
            }
            command.arg("*");
            for (name, value) in fields {
                command.arg(name.as_slice()).arg(value.as_slice());
            }
        }
        let replies: Result<Vec<String>, redis::RedisError> =
            pipe.query_async(&mut connection).await;
        match replies {
            Ok(ids) => {
                for ((_, reply), id) in batch.drain(..).zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(error) => {
                let class = classify(&error);
                let message = format!("Redis stream `{stream}`: {error}");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(SendError {
                        class,
                        message: message.clone(),
                    }));
                }
            }
        }
    }
}

#[async_trait]
impl Sink for StreamSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let fields = crate::adapter::map_large(message.headers.len(), || mapping::encode(message));
        let (reply, confirmed) = oneshot::channel();
        self.queue
            .send((fields, reply))
            .await
            .map_err(|_| SendError::transient("the Redis writer stopped"))?;
        Ok(Box::pin(async move {
            let id = confirmed
                .await
                .map_err(|_| SendError::transient("the Redis writer stopped"))??;
            Ok(Receipt {
                message_id: Some(id),
                ..Receipt::default()
            })
        }))
    }

    async fn flush(&self) {
        // Every permit back means the writer has answered everything queued so far.
        if let Ok(all) = self.queue.reserve_many(MAX_UNCONFIRMED).await {
            drop(all);
        }
    }
}
