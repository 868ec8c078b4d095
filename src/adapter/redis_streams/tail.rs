//! `bridge tail` on a stream: `XREAD` without a consumer group, so nothing is acknowledged
//! or claimed on anyone's behalf. From the newest entry on (`$`), or with
//! `--from-beginning` from the oldest, page by page.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::mapping;
use super::source::{BLOCK_MS, read_reply};
use crate::ack::AckHandle;
use crate::adapter::{AdapterError, Delivery, Source};
use crate::message::{Origin, OriginValue};

pub struct StreamTail {
    deliveries: mpsc::Receiver<Delivery>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StreamTail {
    pub fn start(
        connection: ConnectionManager,
        stream: String,
        endpoint: String,
        from_beginning: bool,
    ) -> StreamTail {
        let (sender, deliveries) = mpsc::channel(100);
        let stop = CancellationToken::new();
        let task = tokio::spawn(read(
            connection,
            stream,
            endpoint,
            from_beginning,
            sender,
            stop.clone(),
        ));
        StreamTail {
            deliveries,
            stop,
            task,
        }
    }
}

async fn read(
    mut connection: ConnectionManager,
    stream: String,
    endpoint: String,
    from_beginning: bool,
    deliveries: mpsc::Sender<Delivery>,
    stop: CancellationToken,
) {
    // `0-0` reads from the oldest entry; `$` from the next one added.
    let mut last = if from_beginning {
        "0-0".to_owned()
    } else {
        "$".to_owned()
    };
    loop {
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last);
        let reply: Result<redis::Value, redis::RedisError> = tokio::select! {
            _ = stop.cancelled() => return,
            reply = command.query_async(&mut connection) => reply,
        };
        let entries = match reply.and_then(read_reply) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, %endpoint, "Redis XREAD failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for (id, fields) in entries {
            last = id.clone();
            let Some(fields) = fields else { continue };
            let message = mapping::decode(&id, fields).with_origin(Origin {
                endpoint: endpoint.clone(),
                broker_message_id: Some(id),
                fields: vec![("stream", OriginValue::text(&stream))],
                ..Origin::default()
            });
            let delivery = Delivery {
                message,
                ack: AckHandle::noop(),
            };
            if deliveries.send(delivery).await.is_err() {
                return;
            }
        }
    }
}

#[async_trait]
impl Source for StreamTail {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        match self.deliveries.recv().await {
            Some(delivery) => Ok(Some(delivery)),
            None => Err(AdapterError::Unavailable("the Redis tail stopped".into())),
        }
    }

    async fn close(self: Box<Self>) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
