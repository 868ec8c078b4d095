//! The brokers' side of the benchmark: fresh topics, queues and subscriptions for every
//! measured run, a preloaded backlog, single sends at a steady rate, and counts of what has
//! arrived at the sinks, asked of the brokers themselves (Kafka high watermarks, RabbitMQ
//! queue depths) so that counting costs the measured process nothing.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use google_cloud_pubsub::client::{BasePublisher, Publisher, SubscriptionAdmin, TopicAdmin};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{AWS, KAFKA, NATS, PROJECT, PUBSUB, RABBIT, REDIS, Scenario, Sys};

/// Produces one record, waiting while librdkafka's queue is full; the returned future
/// resolves when Kafka confirmed it (and panics if Kafka refused it).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    headers: Option<rdkafka::message::OwnedHeaders>,
    body: &[u8],
) -> BoxFuture<'static, ()> {
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(body);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers.clone() {
            record = record.headers(headers);
        }
        match producer.send_result(record) {
            Ok(delivery) => {
                return Box::pin(async move {
                    delivery
                        .await
                        .expect("delivery report")
                        .expect("Kafka accepted the message");
                });
            }
            Err((error, _)) => {
                assert!(
                    matches!(
                        error.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "produce: {error}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// An SQS client for moto (fixed test credentials, region us-east-1).
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(AWS)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&shared)
}

/// Clients of every broker, shared by all runs of a scenario.
pub struct Clients {
    pub producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    watermarks: std::sync::Arc<BaseConsumer>,
    pub rabbit: Connection,
    pub channel: Channel,
    pub sqs: aws_sdk_sqs::Client,
    pubsub_publisher: BasePublisher,
    pubsub_topics: TopicAdmin,
    pubsub_subscriptions: SubscriptionAdmin,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    redis: redis::aio::MultiplexedConnection,
    mqtt: crate::mqtt::Publisher,
}

/// A connection to the project's Redis that waits up to 10 s for an answer (the client's
/// default, 500 ms, is short for a blocked read or a busy machine).
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(REDIS)
        .expect("Redis URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("Redis on 6390 (scripts/brokers.sh up redis)")
}

impl Clients {
    pub async fn connect() -> Clients {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", KAFKA)
            .set("linger.ms", "2")
            .set("acks", "all")
            .create()
            .expect("Kafka producer");
        let admin = ClientConfig::new()
            .set("bootstrap.servers", KAFKA)
            .create()
            .expect("Kafka admin");
        let watermarks = ClientConfig::new()
            .set("bootstrap.servers", KAFKA)
            .set("group.id", "bench-watermarks")
            .create()
            .expect("Kafka watermark reader");
        let rabbit = Connection::connect(RABBIT, ConnectionProperties::default())
            .await
            .expect("RabbitMQ on 5672");
        let channel = rabbit.create_channel().await.expect("AMQP channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let credentials = google_cloud_auth::credentials::anonymous::Builder::new().build();
        let nats = async_nats::connect(NATS)
            .await
            .expect("nats-server on 4223 (scripts/brokers.sh up nats)");
        let jetstream = async_nats::jetstream::new(nats.clone());
        Clients {
            nats,
            jetstream,
            redis: redis_connection().await,
            mqtt: crate::mqtt::Publisher::connect().await,
            producer,
            admin,
            watermarks: std::sync::Arc::new(watermarks),
            rabbit,
            channel,
            sqs: sqs_client().await,
            pubsub_publisher: BasePublisher::builder()
                .with_endpoint(PUBSUB)
                .with_credentials(credentials.clone())
                .build()
                .await
                .expect("Pub/Sub publisher"),
            pubsub_topics: TopicAdmin::builder()
                .with_endpoint(PUBSUB)
                .with_credentials(credentials.clone())
                .build()
                .await
                .expect("Pub/Sub topic admin"),
            pubsub_subscriptions: SubscriptionAdmin::builder()
                .with_endpoint(PUBSUB)
                .with_credentials(credentials)
                .build()
                .await
                .expect("Pub/Sub subscription admin"),
        }
    }
}

/// One route's places: where it reads and where it writes.
#[derive(Clone, Debug)]
pub struct RoutePlaces {
    pub source: String,
    pub sinks: Vec<String>,
}

/// Every place of one measured run.
pub struct Places {
    /// A Kafka topic for bridge's dead letters (every scenario has Kafka at one end).
    pub dead_letter: String,
    pub from: Sys,
    pub to: Sys,
    pub routes: Vec<RoutePlaces>,
    partitions: i32,
    sqs_urls: HashMap<String, String>,
    publishers: HashMap<String, Publisher>,
    /// Bodies are JSON objects (for the routes with a jq transform).
    json_bodies: bool,
    /// bridge's routes' rate limit, messages a second.
    pub rate: Option<u32>,
}

pub fn pubsub_topic(name: &str) -> String {
    format!("projects/{PROJECT}/topics/{name}")
}

pub fn pubsub_subscription(name: &str) -> String {
    format!("projects/{PROJECT}/subscriptions/{name}-sub")
}

/// The subject a NATS place's stream captures and its writers publish to.
pub fn nats_subject(name: &str) -> String {
    format!("{name}.m")
}

/// A body of `size` bytes that starts with its send time (nanoseconds, 20 ASCII digits):
/// text, so that every system carries it unchanged.
pub fn body(size: usize) -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let mut body = format!("{nanos:020}").into_bytes();
    body.resize(size.max(20), b'x');
    body
}

/// The start of a JSON body made by [`json_body`].
const JSON_START: &str = r#"{"t":""#;

/// A JSON object of `size` bytes, `{"t":"TIME","pad":"xx…"}`, that starts (after its first
/// 6 bytes) with its send time as [`body`] does.
pub fn json_body(size: usize) -> Vec<u8> {
    let mut body = String::from_utf8(body(20)).expect("digits");
    body = format!(r#"{JSON_START}{body}","pad":""#);
    let pad = size.saturating_sub(body.len() + 2);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str(r#""}"#);
    body.into_bytes()
}

/// How long ago a body made by [`body`] or [`json_body`] was sent.
pub fn age(body: &[u8]) -> Option<Duration> {
    let body = body.strip_prefix(JSON_START.as_bytes()).unwrap_or(body);
    let sent: u128 = std::str::from_utf8(body.get(..20)?).ok()?.parse().ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(Duration::from_nanos(
        u64::try_from(now.saturating_sub(sent)).ok()?,
    ))
}

impl Places {
    /// Whether bodies are JSON, for routes that transform them.
    pub fn shaped(&self) -> bool {
        self.json_bodies
    }

    /// The URL of the SQS queue `name` created for this run.
    pub fn sqs_url(&self, name: &str) -> &str {
        &self.sqs_urls[name]
    }

    pub async fn create(clients: &Clients, scenario: &Scenario, prefix: &str) -> Places {
        let routes: Vec<RoutePlaces> = (0..scenario.routes)
            .map(|r| RoutePlaces {
                source: format!("{prefix}-r{r}-in"),
                sinks: (0..scenario.fan_out)
                    .map(|k| format!("{prefix}-r{r}-out{k}"))
                    .collect(),
            })
            .collect();
        let mut places = Places {
            dead_letter: format!("{prefix}-dlq"),
            from: scenario.from,
            to: scenario.to,
            partitions: if scenario.routes > 1 { 1 } else { 3 },
            routes,
            sqs_urls: HashMap::new(),
            publishers: HashMap::new(),
            json_bodies: scenario.shaped,
            rate: scenario.rate,
        };
        let sources: Vec<String> = places.routes.iter().map(|r| r.source.clone()).collect();
        let sinks: Vec<String> = places.routes.iter().flat_map(|r| r.sinks.clone()).collect();
        places.make(clients, scenario.from, &sources).await;
        places.make(clients, scenario.to, &sinks).await;
        let dead_letter = [places.dead_letter.clone()];
        places.make(clients, Sys::Kafka, &dead_letter).await;
        places
    }

    async fn make(&mut self, clients: &Clients, sys: Sys, names: &[String]) {
        match sys {
            Sys::Kafka => {
                let topics: Vec<NewTopic> = names
                    .iter()
                    .map(|n| NewTopic::new(n, self.partitions, TopicReplication::Fixed(1)))
                    .collect();
                for result in clients
                    .admin
                    .create_topics(&topics, &AdminOptions::new())
                    .await
                    .expect("create topics")
                {
                    result.expect("topic created");
                }
            }
            Sys::Rabbit => {
                for name in names {
                    clients
                        .channel
                        .queue_declare(
                            name.as_str().into(),
                            QueueDeclareOptions {
                                durable: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .expect("declare queue");
                }
            }
            Sys::Sqs => {
                for name in names {
                    let created = clients
                        .sqs
                        .create_queue()
                        .queue_name(name)
                        .send()
                        .await
                        .expect("create SQS queue");
                    self.sqs_urls
                        .insert(name.clone(), created.queue_url.expect("queue URL"));
                }
            }
            Sys::PubSub => {
                for name in names {
                    clients
                        .pubsub_topics
                        .create_topic()
                        .set_name(pubsub_topic(name))
                        .send()
                        .await
                        .expect("create Pub/Sub topic");
                    clients
                        .pubsub_subscriptions
                        .create_subscription()
                        .set_name(pubsub_subscription(name))
                        .set_topic(pubsub_topic(name))
                        .set_ack_deadline_seconds(60)
                        .send()
                        .await
                        .expect("create Pub/Sub subscription");
                    self.publishers.insert(
                        name.clone(),
                        clients
                            .pubsub_publisher
                            .publisher(pubsub_topic(name))
                            .build(),
                    );
                }
            }
            Sys::Nats => {
                for name in names {
                    clients
                        .jetstream
                        .create_stream(async_nats::jetstream::stream::Config {
                            name: name.clone(),
                            subjects: vec![nats_subject(name)],
                            ..Default::default()
                        })
                        .await
                        .expect("create JetStream stream");
                }
            }
            // The first XADD makes a stream; each reader makes its group at the start.
            Sys::Redis => {}
            Sys::Mqtt => {
                for name in names {
                    crate::mqtt::session(name, true).await.unwrap_or_else(|e| {
                        panic!("MQTT session for `{name}` (Mosquitto on 1884): {e}")
                    });
                }
            }
        }
    }

    /// Sends one message of `size` bytes to a source; the returned future is its confirmation.
    pub async fn send(
        &self,
        clients: &Clients,
        source: &str,
        seq: usize,
        size: usize,
    ) -> BoxFuture<'static, ()> {
        let body = if self.json_bodies {
            json_body(size)
        } else {
            body(size)
        };
        match self.from {
            Sys::Kafka => {
                let key = format!("k{}", seq % 16);
                // JSON bodies come as a JSON-speaking producer sends them, with the headers
                // the transformed routes work on.
                let headers = self.json_bodies.then(|| {
                    [
                        ("content-type", "application/json"),
                        (
                            "trace",
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                        ),
                        ("x-internal-debug", "1"),
                        ("tenant", "acme"),
                    ]
                    .into_iter()
                    .fold(OwnedHeaders::new(), |headers, (key, value)| {
                        headers.insert(rdkafka::message::Header {
                            key,
                            value: Some(value),
                        })
                    })
                });
                produce(
                    &clients.producer,
                    source,
                    Some(key.as_bytes()),
                    headers,
                    &body,
                )
                .await
            }
            Sys::Rabbit => {
                let confirm = clients
                    .channel
                    .basic_publish(
                        "".into(),
                        source.into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("basic.publish");
                Box::pin(async move {
                    assert!(confirm.await.expect("confirm").is_ack(), "RabbitMQ nacked");
                })
            }
            Sys::Sqs => {
                let request = clients
                    .sqs
                    .send_message()
                    .queue_url(&self.sqs_urls[source])
                    .message_body(String::from_utf8(body).expect("text body"));
                Box::pin(async move {
                    request.send().await.expect("SQS send");
                })
            }
            Sys::Nats => {
                let pending = clients
                    .jetstream
                    .publish(nats_subject(source), bytes::Bytes::from(body))
                    .await
                    .expect("JetStream publish");
                Box::pin(async move {
                    pending.await.expect("JetStream PubAck");
                })
            }
            Sys::Redis => {
                // Bridge's entry layout: the body in the `body` field.
                let mut xadd = redis::cmd("XADD");
                xadd.arg(source).arg("*").arg("body").arg(body);
                let mut redis = clients.redis.clone();
                Box::pin(async move {
                    let _: String = xadd.query_async(&mut redis).await.expect("XADD");
                })
            }
            Sys::Mqtt => clients.mqtt.publish(source, body).await,
            Sys::PubSub => {
                let pending = self.publishers[source].publish(
                    google_cloud_pubsub::model::Message::new().set_data(bytes::Bytes::from(body)),
                );
                Box::pin(async move {
                    pending.await.expect("Pub/Sub publish");
                })
            }
        }
    }

    /// Puts `per_route` messages of `size` bytes in every route's source, confirmed.
    pub async fn preload(&self, clients: &Clients, per_route: usize, size: usize) {
        if self.from == Sys::Sqs {
            return self.preload_sqs(clients, per_route, size).await;
        }
        let mut pending = VecDeque::new();
        for route in &self.routes {
            for seq in 0..per_route {
                pending.push_back(tokio::spawn(
                    self.send(clients, &route.source, seq, size).await,
                ));
                if pending.len() >= 2_000 {
                    pending.pop_front().expect("pending").await.expect("send");
                }
            }
        }
        for send in pending {
            send.await.expect("send");
        }
    }

    /// SQS takes batches of ten; a few calls at once keep the preload short.
    async fn preload_sqs(&self, clients: &Clients, per_route: usize, size: usize) {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        for route in &self.routes {
            let url = self.sqs_urls[&route.source].clone();
            let batches = (0..per_route).collect::<Vec<_>>();
            futures::stream::iter(batches.chunks(10).map(|chunk| {
                let mut request = clients.sqs.send_message_batch().queue_url(&url);
                for seq in chunk {
                    request = request.entries(
                        SendMessageBatchRequestEntry::builder()
                            .id(seq.to_string())
                            .message_body(
                                String::from_utf8(if self.json_bodies {
                                    json_body(size)
                                } else {
                                    body(size)
                                })
                                .expect("text"),
                            )
                            .build()
                            .expect("entry"),
                    );
                }
                async move {
                    let sent = request.send().await.expect("SQS batch");
                    assert!(sent.failed.is_empty(), "SQS refused {:?}", sent.failed);
                }
            }))
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        }
    }

    /// Messages now at the sinks (all of them, every fan-out copy counted).
    pub async fn arrived(&self, clients: &Clients) -> usize {
        let sinks: Vec<String> = self.routes.iter().flat_map(|r| r.sinks.clone()).collect();
        match self.to {
            Sys::Kafka => {
                let consumer = clients.watermarks.clone();
                let partitions = self.partitions;
                tokio::task::spawn_blocking(move || {
                    let mut total = 0;
                    for topic in &sinks {
                        for partition in 0..partitions {
                            let (_, high) = consumer
                                .fetch_watermarks(topic, partition, Duration::from_secs(5))
                                .expect("watermarks");
                            total += usize::try_from(high).unwrap_or(0);
                        }
                    }
                    total
                })
                .await
                .expect("watermark task")
            }
            Sys::Rabbit => {
                let mut total = 0;
                for queue in &sinks {
                    let declared = clients
                        .channel
                        .queue_declare(
                            queue.as_str().into(),
                            QueueDeclareOptions {
                                passive: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .expect("queue depth");
                    total += declared.message_count() as usize;
                }
                total
            }
            Sys::Nats => {
                let mut total = 0;
                for stream in &sinks {
                    let mut stream = clients
                        .jetstream
                        .get_stream(stream)
                        .await
                        .expect("JetStream stream");
                    total += stream.info().await.expect("stream info").state.messages as usize;
                }
                total
            }
            other => unreachable!("{other:?} is never a sink here"),
        }
    }

    /// Kafka partitions per topic (sinks and sources alike).
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Empties RabbitMQ and JetStream sinks (Kafka sinks are counted by watermarks and need
    /// nothing).
    pub async fn purge_sinks(&self, clients: &Clients) {
        if self.to == Sys::Nats {
            for route in &self.routes {
                for stream in &route.sinks {
                    let stream = clients
                        .jetstream
                        .get_stream(stream)
                        .await
                        .expect("JetStream stream");
                    stream.purge().await.expect("purge");
                }
            }
        }
        if self.to == Sys::Rabbit {
            for route in &self.routes {
                for queue in &route.sinks {
                    clients
                        .channel
                        .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                        .await
                        .expect("purge");
                }
            }
        }
    }

    /// Deletes every place (errors ignored: this only keeps the brokers small).
    pub async fn remove(self, clients: &Clients) {
        for (sys, names) in [
            (Sys::Kafka, vec![self.dead_letter.clone()]),
            (
                self.from,
                self.routes
                    .iter()
                    .map(|r| r.source.clone())
                    .collect::<Vec<_>>(),
            ),
            (
                self.to,
                self.routes.iter().flat_map(|r| r.sinks.clone()).collect(),
            ),
        ] {
            for name in &names {
                match sys {
                    Sys::Kafka => {
                        let _ = clients
                            .admin
                            .delete_topics(&[name.as_str()], &AdminOptions::new())
                            .await;
                    }
                    Sys::Rabbit => {
                        let _ = clients
                            .channel
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    Sys::Sqs => {
                        if let Some(url) = self.sqs_urls.get(name) {
                            let _ = clients.sqs.delete_queue().queue_url(url).send().await;
                        }
                    }
                    Sys::Nats => {
                        let _ = clients.jetstream.delete_stream(name).await;
                    }
                    Sys::Redis => {
                        let _: Result<usize, _> = redis::cmd("DEL")
                            .arg(name)
                            .query_async(&mut clients.redis.clone())
                            .await;
                    }
                    // Ending the session drops what it still holds.
                    Sys::Mqtt => {
                        let _ = crate::mqtt::session(name, false).await;
                    }
                    Sys::PubSub => {
                        let _ = clients
                            .pubsub_subscriptions
                            .delete_subscription()
                            .set_subscription(pubsub_subscription(name))
                            .send()
                            .await;
                        let _ = clients
                            .pubsub_topics
                            .delete_topic()
                            .set_topic(pubsub_topic(name))
                            .send()
                            .await;
                    }
                }
            }
        }
    }
}
