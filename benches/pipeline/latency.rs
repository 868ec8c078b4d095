//! Latency at a steady rate: a producer sends to the first route's source at a constant rate,
//! each body starting with its send time, and a reader on the first sink records how long
//! each message took to arrive. Reported as p50, p99 and max over every message sent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::places::{Clients, Places, age};
use crate::{KAFKA, Sys};

#[derive(Clone, Debug)]
pub struct Latency {
    pub rate: f64,
    pub sent: usize,
    pub received: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

type Samples = Arc<Mutex<Vec<Duration>>>;

pub async fn measure(
    clients: &Clients,
    places: &Places,
    rate: f64,
    duration: Duration,
    size: usize,
) -> Latency {
    let source = places.routes[0].source.clone();
    let sink = places.routes[0].sinks[0].clone();
    let samples: Samples = Arc::default();
    let (reader, channel) = match places.to {
        Sys::Kafka => (
            read_kafka(&sink, places.partitions(), samples.clone()).await,
            None,
        ),
        Sys::Rabbit => {
            let (reader, channel) = read_rabbit(clients, &sink, samples.clone()).await;
            (reader, Some(channel))
        }
        Sys::Nats => (read_nats(clients, &sink, samples.clone()).await, None),
        other => unreachable!("{other:?} is never a sink here"),
    };
    let start = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as usize;
        while sent < due {
            tokio::spawn(places.send(clients, &source, sent, size).await);
            sent += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples.lock().expect("samples").len() < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.abort();
    if let Some(channel) = channel {
        // Closing the channel cancels the consumer, which would otherwise keep taking messages.
        channel
            .close(200, "latency measured".into())
            .await
            .expect("close");
    }
    let mut samples = samples.lock().expect("samples").clone();
    samples.sort_unstable();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Latency {
        rate,
        sent,
        received: samples.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: samples.last().copied().unwrap_or_default(),
    }
}

/// Reads a Kafka topic from its current end (every partition assigned at its high watermark).
async fn read_kafka(topic: &str, partitions: i32, samples: Samples) -> tokio::task::JoinHandle<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", format!("{topic}-latency"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("Kafka latency reader");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .expect("watermarks");
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(high))
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    tokio::spawn(async move {
        while let Ok(message) = consumer.recv().await {
            if let Some(age) = age(message.payload().unwrap_or_default()) {
                samples.lock().expect("samples").push(age);
            }
        }
    })
}

/// Consumes a RabbitMQ queue without acknowledgements (the queue is purged first).
async fn read_rabbit(
    clients: &Clients,
    queue: &str,
    samples: Samples,
) -> (tokio::task::JoinHandle<()>, lapin::Channel) {
    let channel = clients.rabbit.create_channel().await.expect("channel");
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "latency".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let reader = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            if let Some(age) = age(&delivery.data) {
                samples.lock().expect("samples").push(age);
            }
        }
    });
    (reader, channel)
}

/// Subscribes to the subject a JetStream sink's stream captures (a core subscription sees
/// what is published there).
async fn read_nats(
    clients: &Clients,
    stream: &str,
    samples: Samples,
) -> tokio::task::JoinHandle<()> {
    let mut subscriber = clients
        .nats
        .subscribe(crate::places::nats_subject(stream))
        .await
        .expect("NATS subscription");
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            if let Some(age) = age(&message.payload) {
                samples.lock().expect("samples").push(age);
            }
        }
    })
}
