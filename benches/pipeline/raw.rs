//! The baseline: a raw consumer -> producer pipe built directly on the same client crates
//! as bridge (rdkafka, lapin, aws-sdk-sqs, google-cloud-pubsub, async-nats, redis,
//! rumqttc), with no router.
//!
//! It is at-least-once like bridge: a source message is committed (Kafka: offset stored in
//! order, committed by librdkafka's auto-commit), acked (RabbitMQ, Pub/Sub, NATS, Redis's
//! XACK, MQTT's PUBACK in arrival order) or deleted (SQS) only after every sink confirmed
//! it, with the same in-flight window (NATS: the consumer's `max_ack_pending`; MQTT: the
//! receive maximum the session asks of the broker). Into NATS it publishes with JetStream
//! and waits for the PubAck, as bridge does. It carries the key, headers and body (to
//! RabbitMQ, the key and headers as entries of the headers table), and nothing else: no
//! conditions, templates, retries, dead letters or hop count.
//!
//! Into RabbitMQ it publishes with `mandatory`, as bridge does: at-least-once needs it, since
//! RabbitMQ confirms a message that no queue takes and drops it.
//!
//! `BENCH_RAW_AS_BRIDGE=1` makes it also write what bridge adds to each message: to RabbitMQ
//! the key as `bridge-key`, the timestamp property and `bridge-timestamp-ms`,
//! and the `bridge-hops` header (Kafka and RabbitMQ) when bridge's routes write it
//! (`BENCH_COUNT_HOPS=true`; by default they do not, as none feeds its own source). The brokers' cost for that
//! metadata then weighs on both pipes, and the ratio shows bridge's own overhead.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered, SelectAll};
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};

use crate::{KAFKA, NATS, PUBSUB, Sys};

/// Most entries one XREADGROUP asks for (as bridge's Redis source).
const REDIS_COUNT: usize = 100;

/// What the parent tells the raw pipe to do (passed as one JSON argument).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipeSpec {
    pub from: Sys,
    pub to: Sys,
    /// Source place -> sink places.
    pub routes: Vec<(String, Vec<String>)>,
    pub window: usize,
    pub group: String,
    pub rabbit_url: String,
}

pub fn main(spec: &str) {
    let spec: PipeSpec = serde_json::from_str(spec).expect("raw pipe spec");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let sink = Arc::new(RawSink::connect(&spec).await);
        let routes: HashMap<String, Vec<String>> = spec.routes.iter().cloned().collect();
        match spec.from {
            Sys::Kafka => from_kafka(&spec, routes, sink).await,
            Sys::Rabbit => from_rabbit(&spec, sink).await,
            Sys::Sqs => from_sqs(&spec, routes, sink).await,
            Sys::PubSub => from_pubsub(&spec, routes, sink).await,
            Sys::Nats => from_nats(&spec, sink).await,
            Sys::Redis => from_redis(&spec, sink).await,
            Sys::Mqtt => from_mqtt(&spec, sink).await,
        }
    });
}

type Confirmation = BoxFuture<'static, ()>;

enum RawSink {
    Kafka {
        producer: FutureProducer,
        /// Add the hop header as bridge does (BENCH_RAW_AS_BRIDGE, BENCH_COUNT_HOPS).
        hops: bool,
    },
    /// The connection is kept so that it stays open as long as the channel is used.
    Rabbit {
        channel: Channel,
        _connection: Box<Connection>,
        /// The parts of bridge's metadata it writes too (see [`as_bridge_part`]).
        bridge_key: bool,
        timestamp: bool,
        hops: bool,
    },
    Nats {
        jetstream: async_nats::jetstream::Context,
    },
}

/// Whether the raw pipe writes this part of bridge's metadata too (see the module doc):
/// `BENCH_RAW_AS_BRIDGE=1` means every part, or it lists some of `key` (the key as
/// `bridge-key`), `timestamp` (the property and `bridge-timestamp-ms`) and `hops`, comma
/// separated, to find what a broker charges for.
fn as_bridge_part(part: &str) -> bool {
    std::env::var("BENCH_RAW_AS_BRIDGE")
        .is_ok_and(|v| v == "1" || v.split(',').any(|listed| listed.trim() == part))
}

/// Whether the raw pipe writes the hop header as bridge's routes do in this run.
fn hops_as_bridge() -> bool {
    as_bridge_part("hops") && std::env::var("BENCH_COUNT_HOPS").is_ok_and(|v| v == "true")
}

impl RawSink {
    async fn connect(spec: &PipeSpec) -> RawSink {
        match spec.to {
            // The same producer settings as bridge's Kafka sink; BENCH_RAW_MESSAGE_MAX_BYTES
            // raises the largest record, as the header-scaling routes file does for bridge.
            Sys::Kafka => RawSink::Kafka {
                producer: ClientConfig::new()
                    .set("bootstrap.servers", KAFKA)
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "5")
                    .set("partitioner", "murmur2_random")
                    .set(
                        "message.max.bytes",
                        std::env::var("BENCH_RAW_MESSAGE_MAX_BYTES")
                            .unwrap_or_else(|_| "1000000".into()),
                    )
                    .create()
                    .expect("Kafka producer"),
                hops: hops_as_bridge(),
            },
            Sys::Rabbit => {
                let connection =
                    Connection::connect(&spec.rabbit_url, ConnectionProperties::default())
                        .await
                        .expect("RabbitMQ");
                let channel = connection.create_channel().await.expect("channel");
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm mode");
                RawSink::Rabbit {
                    channel,
                    _connection: Box::new(connection),
                    bridge_key: as_bridge_part("key"),
                    timestamp: as_bridge_part("timestamp"),
                    hops: hops_as_bridge(),
                }
            }
            Sys::Nats => RawSink::Nats {
                jetstream: async_nats::jetstream::new(
                    async_nats::connect(NATS).await.expect("nats-server"),
                ),
            },
            other => unreachable!("{other:?} is never a sink here"),
        }
    }

    /// Hands a message to the sink; the future resolves when the broker confirmed it.
    async fn send(
        &self,
        place: &str,
        key: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        timestamp_ms: Option<i64>,
        body: &[u8],
    ) -> Confirmation {
        match self {
            RawSink::Kafka { producer, hops } => {
                let headers = if *hops {
                    Some(headers.unwrap_or_default().insert(Header {
                        key: "bridge-hops",
                        value: Some("1"),
                    }))
                } else {
                    headers
                };
                crate::places::produce(producer, place, key, headers, body).await
            }
            RawSink::Nats { jetstream } => {
                // The key and the Kafka headers as headers, as any pipe that keeps them.
                let mut map = async_nats::HeaderMap::new();
                for header in headers.iter().flat_map(|h| h.iter()) {
                    let value = String::from_utf8_lossy(header.value.unwrap_or_default());
                    map.append(header.key, value.as_ref());
                }
                if let Some(key) = key {
                    map.insert("bridge-key", String::from_utf8_lossy(key).as_ref());
                }
                let pending = jetstream
                    .publish_with_headers(
                        crate::places::nats_subject(place),
                        map,
                        bytes::Bytes::copy_from_slice(body),
                    )
                    .await
                    .expect("JetStream publish");
                Box::pin(async move {
                    pending.await.expect("JetStream PubAck");
                })
            }
            RawSink::Rabbit {
                channel,
                bridge_key,
                timestamp,
                hops,
                ..
            } => {
                let mut properties = BasicProperties::default().with_delivery_mode(2);
                // AMQP has no key: like any pipe that keeps it, this one puts it (and the
                // Kafka headers) in the headers table.
                let mut table = FieldTable::default();
                let text =
                    |bytes: &[u8]| lapin::types::AMQPValue::LongString(bytes.to_vec().into());
                for header in headers.iter().flat_map(|h| h.iter()) {
                    table.insert(header.key.into(), text(header.value.unwrap_or_default()));
                }
                let key_name = if *bridge_key { "bridge-key" } else { "key" };
                if let Some(key) = key {
                    table.insert(key_name.into(), text(key));
                }
                if *hops {
                    table.insert("bridge-hops".into(), text(b"1"));
                }
                if *timestamp && let Some(ms) = timestamp_ms.filter(|ms| *ms >= 0) {
                    properties = properties.with_timestamp(ms as u64 / 1000);
                    table.insert(
                        "bridge-timestamp-ms".into(),
                        lapin::types::AMQPValue::LongLongInt(ms),
                    );
                }
                if !table.inner().is_empty() {
                    properties = properties.with_headers(table);
                }
                // `mandatory`, as at-least-once needs: without it RabbitMQ confirms a message
                // that no queue takes, and drops it.
                let options = BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                };
                let confirm = channel
                    .basic_publish("".into(), place.into(), options, body, properties)
                    .await
                    .expect("basic.publish");
                Box::pin(async move {
                    match confirm.await.expect("confirm") {
                        lapin::Confirmation::Ack(None) => {}
                        lapin::Confirmation::Ack(Some(_)) => panic!("returned as unroutable"),
                        other => panic!("not confirmed: {other:?}"),
                    }
                })
            }
        }
    }

    async fn send_all(
        &self,
        places: &[String],
        key: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        timestamp_ms: Option<i64>,
        body: &[u8],
    ) -> Confirmation {
        let mut confirmations = Vec::with_capacity(places.len());
        for place in places {
            confirmations.push(
                self.send(place, key, headers.clone(), timestamp_ms, body)
                    .await,
            );
        }
        if confirmations.len() == 1 {
            return confirmations.pop().expect("one");
        }
        Box::pin(futures::future::join_all(confirmations).map(|_| ()))
    }
}

async fn from_kafka(spec: &PipeSpec, routes: HashMap<String, Vec<String>>, sink: Arc<RawSink>) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", &spec.group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("Kafka consumer");
    let topics: Vec<&str> = routes.keys().map(String::as_str).collect();
    consumer.subscribe(&topics).expect("subscribe");
    // Settled in the order read, so a stored offset never passes an unconfirmed message.
    let mut pending = FuturesOrdered::new();
    loop {
        tokio::select! {
            Some((topic, partition, offset)) = pending.next(), if !pending.is_empty() => {
                let topic: String = topic;
                consumer
                    .store_offset(&topic, partition, offset)
                    .expect("store offset");
            }
            received = consumer.recv(), if pending.len() < spec.window => {
                let message = received.expect("Kafka consumer");
                let headers = message.headers().map(|h| h.detach());
                let confirmation = sink
                    .send_all(
                        &routes[message.topic()],
                        message.key(),
                        headers,
                        message.timestamp().to_millis(),
                        message.payload().unwrap_or_default(),
                    )
                    .await;
                let coordinates = (message.topic().to_owned(), message.partition(), message.offset());
                pending.push_back(confirmation.map(move |()| coordinates));
            }
        }
    }
}

async fn from_rabbit(spec: &PipeSpec, sink: Arc<RawSink>) {
    let connection = Connection::connect(&spec.rabbit_url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(
            u16::try_from(spec.window).unwrap_or(u16::MAX),
            BasicQosOptions::default(),
        )
        .await
        .expect("basic.qos");
    let mut consumers = SelectAll::new();
    for (route, (queue, sinks)) in spec.routes.iter().enumerate() {
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("raw-{route}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("basic.consume");
        let sinks = sinks.clone();
        consumers.push(
            consumer
                .map(move |delivery| (sinks.clone(), delivery))
                .boxed(),
        );
    }
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(acker) = pending.next(), if !pending.is_empty() => {
                let acker: lapin::Acker = acker;
                acker.ack(BasicAckOptions::default()).await.expect("basic.ack");
            }
            Some((sinks, delivery)) = consumers.next(), if pending.len() < spec.window => {
                let delivery = delivery.expect("RabbitMQ consumer");
                let confirmation = sink.send_all(&sinks, None, None, None, &delivery.data).await;
                let acker = delivery.acker;
                pending.push(confirmation.map(move |()| acker));
            }
        }
    }
}

async fn from_sqs(spec: &PipeSpec, routes: HashMap<String, Vec<String>>, sink: Arc<RawSink>) {
    use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
    let sqs = crate::places::sqs_client().await;
    let (queue, sinks) = routes.into_iter().next().expect("one route");
    let url = sqs
        .get_queue_url()
        .queue_name(&queue)
        .send()
        .await
        .expect("queue URL")
        .queue_url
        .expect("queue URL");
    let window = Arc::new(tokio::sync::Semaphore::new(spec.window.max(10)));
    loop {
        let permits = window.clone().acquire_many_owned(10).await.expect("window");
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let mut confirmations = Vec::with_capacity(messages.len());
        let mut delete = sqs.delete_message_batch().queue_url(&url);
        for (index, message) in messages.iter().enumerate() {
            let body = message.body.as_deref().unwrap_or_default().as_bytes();
            confirmations.push(sink.send_all(&sinks, None, None, None, body).await);
            delete = delete.entries(
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(message.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .expect("entry"),
            );
        }
        tokio::spawn(async move {
            futures::future::join_all(confirmations).await;
            let deleted = delete.send().await.expect("delete batch");
            assert!(deleted.failed.is_empty(), "{:?}", deleted.failed);
            drop(permits);
        });
    }
}

async fn from_pubsub(spec: &PipeSpec, routes: HashMap<String, Vec<String>>, sink: Arc<RawSink>) {
    let (name, sinks) = routes.into_iter().next().expect("one route");
    let subscriber = google_cloud_pubsub::client::Subscriber::builder()
        .with_endpoint(PUBSUB)
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await
        .expect("Pub/Sub subscriber");
    let mut stream = subscriber
        .subscribe(crate::places::pubsub_subscription(&name))
        .set_max_outstanding_messages(i64::try_from(spec.window).unwrap_or(i64::MAX))
        .build();
    while let Some(received) = stream.next().await {
        let (message, handler) = received.expect("Pub/Sub stream");
        let confirmation = sink.send_all(&sinks, None, None, None, &message.data).await;
        tokio::spawn(async move {
            confirmation.await;
            handler.ack();
        });
    }
}

/// A durable pull consumer per stream with explicit acks and `max_ack_pending` = the window;
/// a message is acknowledged once every sink confirmed it.
async fn from_nats(spec: &PipeSpec, sink: Arc<RawSink>) {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let jetstream =
        async_nats::jetstream::new(async_nats::connect(NATS).await.expect("nats-server"));
    let mut streams = SelectAll::new();
    for (name, sinks) in &spec.routes {
        let stream = jetstream.get_stream(name).await.expect("stream");
        let consumer = stream
            .get_or_create_consumer(
                &spec.group,
                pull::Config {
                    durable_name: Some(spec.group.clone()),
                    ack_policy: AckPolicy::Explicit,
                    max_ack_pending: i64::try_from(spec.window).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .expect("consumer");
        let messages = consumer
            .stream()
            .max_messages_per_batch(spec.window.clamp(1, 256))
            .messages()
            .await
            .expect("pull");
        let sinks = sinks.clone();
        streams.push(messages.map(move |m| (sinks.clone(), m)).boxed());
    }
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(message) = pending.next(), if !pending.is_empty() => {
                let message: async_nats::jetstream::Message = message;
                message.ack().await.expect("ack");
            }
            Some((sinks, message)) = streams.next(), if pending.len() < spec.window => {
                let message = message.expect("JetStream pull");
                let key = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("bridge-key"))
                    .map(|k| k.as_str().as_bytes().to_vec());
                let confirmation = sink
                    .send_all(&sinks, key.as_deref(), None, None, &message.payload)
                    .await;
                pending.push(confirmation.map(move |()| message));
            }
        }
    }
}

/// A consumer group (made at the stream's start when missing, as bridge does) read with
/// XREADGROUP, at most the window unsettled; the entries of one read are acknowledged with
/// one XACK once every sink confirmed them all.
async fn from_redis(spec: &PipeSpec, sink: Arc<RawSink>) {
    let (stream, sinks) = spec.routes.first().cloned().expect("one route");
    // A blocked read holds its connection: XACKs go through another one.
    let mut reader = crate::places::redis_connection().await;
    let acker = crate::places::redis_connection().await;
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(&spec.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut reader)
        .await;
    if let Err(error) = created {
        assert_eq!(error.code(), Some("BUSYGROUP"), "XGROUP CREATE: {error}");
    }
    let window = Arc::new(tokio::sync::Semaphore::new(spec.window.max(1)));
    loop {
        let room = window.available_permits().clamp(1, REDIS_COUNT);
        let mut permits = window
            .clone()
            .acquire_many_owned(room as u32)
            .await
            .expect("window");
        // Stream -> entries -> (id, fields), as a RESP2 reply has them; nil after the block.
        type Reply = Option<Vec<(String, Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>)>>;
        let reply: Reply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&spec.group)
            .arg("raw-pipe")
            .arg("COUNT")
            .arg(room)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut reader)
            .await
            .expect("XREADGROUP");
        let entries: Vec<_> = reply
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect();
        // The room this read did not fill goes back to the window.
        drop(permits.split(room - entries.len()));
        if entries.is_empty() {
            continue;
        }
        let mut confirmations = Vec::with_capacity(entries.len());
        let mut ids = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let field = |name: &[u8]| {
                fields
                    .iter()
                    .find(|(field, _)| field == name)
                    .map(|(_, value)| value.as_slice())
            };
            confirmations.push(
                sink.send_all(
                    &sinks,
                    field(b"key"),
                    None,
                    None,
                    field(b"body").unwrap_or_default(),
                )
                .await,
            );
            ids.push(id);
        }
        let mut xack = redis::cmd("XACK");
        xack.arg(&stream).arg(&spec.group).arg(&ids);
        let mut acker = acker.clone();
        tokio::spawn(async move {
            futures::future::join_all(confirmations).await;
            let _: usize = xack.query_async(&mut acker).await.expect("XACK");
            drop(permits);
        });
    }
}

/// The persistent session places.rs made (subscribed before the load), with manual
/// acknowledgements and a receive maximum of the window; each message is acknowledged
/// once every sink confirmed it, in arrival order (as MQTT 3.1.1 requires and bridge does).
async fn from_mqtt(spec: &PipeSpec, sink: Arc<RawSink>) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event};
    let (topic, sinks) = spec.routes.first().cloned().expect("one route");
    let mut options = crate::mqtt::options(&crate::mqtt::client_id(&topic));
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(crate::mqtt::SESSION_EXPIRY_S))
        .set_manual_acks(true)
        .set_receive_maximum(Some(u16::try_from(spec.window).unwrap_or(u16::MAX)));
    let (client, mut events) = AsyncClient::new(options, 1024);
    // The event loop (pings included) is polled in a task that waits for nothing else; the
    // PUBACKs are queued from this task.
    let (arrivals, mut publishes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if arrivals.send(publish).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("MQTT: {error}; connecting again");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
    let mut pending = FuturesOrdered::new();
    loop {
        tokio::select! {
            Some(publish) = pending.next(), if !pending.is_empty() => {
                let publish: rumqttc::v5::mqttbytes::v5::Publish = publish;
                client.ack(&publish).await.expect("PUBACK");
            }
            Some(publish) = publishes.recv(), if pending.len() < spec.window => {
                let key = publish.properties.as_ref().and_then(|p| {
                    p.user_properties
                        .iter()
                        .find(|(name, _)| name == "bridge-key")
                        .map(|(_, key)| key.as_bytes().to_vec())
                });
                let confirmation = sink
                    .send_all(&sinks, key.as_deref(), None, None, &publish.payload)
                    .await;
                pending.push_back(confirmation.map(move |()| publish));
            }
        }
    }
}
