//! `bridge run` between RabbitMQ and Kafka, end to end, against the local brokers:
//! volume with a SIGKILL in the middle, and a permanent refusal that is dead-lettered.
#![cfg(all(feature = "kafka", feature = "rabbitmq"))]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::adapter::SourceSettings;
use bridge::address::Endpoint;
use bridge::message::{Message, reserved};
use serde_json::json;
use support::flow::{collect, publish, waited};
use support::process::Running;
use support::systems::Sys;
use support::tally::{Tally, numbered as expected};
use support::{connector, init_logs, unique};

const KAFKA: &str = "127.0.0.1:9092";
const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const COUNT: u32 = 10_000;
const MAX_IN_FLIGHT: usize = 256;

fn settings() -> SourceSettings {
    SourceSettings {
        route: "checker".into(),
        options: bridge::adapter::SourceOptions::none(),
        max_in_flight: 512,
        dead_letter: true,
    }
}

/// The last `lines` lines of a bridge log, for a failure message.
fn log_tail(log: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_each_way_survive_a_sigkill_intact() {
    init_logs();
    let name = unique("e2e");
    let (q_in, q_out, q_dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    let (t_in, t_out, t_dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    let expires = json!({"x-expires": 900_000});
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {"queues": [
        {"name": q_in, "arguments": expires}, {"name": q_out, "arguments": expires}, {"name": q_dlq, "arguments": expires}]}});
    // tansu evicts the killed member only once the group's session timeout has passed,
    // and counts a newcomer's join and sync (3 s pause each) against that same timeout:
    // 6 s lets the newcomer evict itself over and over on a busy machine, 15 s does not.
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "consumer_options": {"session.timeout.ms": "15000", "heartbeat.interval.ms": "1000"},
        "declare": [{"name": t_in, "partitions": 3}, {"name": t_out, "partitions": 3}, {"name": t_dlq}]});
    let routes = format!(
        "connections:\n  rabbit: {rabbit}\n  kafka: {kafka}\nroutes:\n  - name: rabbit-to-kafka\n    from: rabbit:queue/{q_in}\n    to: kafka:{t_out}\n    dead_letter: rabbit:queue/{q_dlq}\n    max_in_flight: {MAX_IN_FLIGHT}\n  - name: kafka-to-rabbit\n    from: kafka:{t_in}\n    to: rabbit:queue/{q_out}\n    dead_letter: kafka:{t_dlq}\n    max_in_flight: {MAX_IN_FLIGHT}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();

    let rabbit_client = connector(&rabbit).await;
    let mut kafka_checker = kafka.clone();
    kafka_checker["group_id"] = json!(format!("{name}-checker"));
    let kafka_client = connector(&kafka_checker).await;
    publish(
        &rabbit_client,
        &format!("test:queue/{q_in}"),
        (0..COUNT).map(expected),
        1000,
    )
    .await;
    publish(
        &kafka_client,
        &format!("test:{t_in}"),
        (0..COUNT).map(expected),
        1000,
    )
    .await;

    let to_kafka = Arc::new(Mutex::new(Tally::default()));
    let to_rabbit = Arc::new(Mutex::new(Tally::default()));
    let out_topic: Endpoint = format!("test:{t_out}").parse().unwrap();
    let out_queue: Endpoint = format!("test:queue/{q_out}").parse().unwrap();
    let readers = [
        collect(
            kafka_client
                .open_source(&out_topic, &settings())
                .await
                .unwrap(),
            to_kafka.clone(),
        ),
        collect(
            rabbit_client
                .open_source(&out_queue, &settings())
                .await
                .unwrap(),
            to_rabbit.clone(),
        ),
    ];

    let log = dir.path().join("bridge.log");
    let first = Running::start(&file, &log);
    let total = || to_kafka.lock().unwrap().distinct() + to_rabbit.lock().unwrap().distinct();
    let counts = || {
        format!(
            "rabbit->kafka {} and kafka->rabbit {} of {COUNT} each",
            to_kafka.lock().unwrap().distinct(),
            to_rabbit.lock().unwrap().distinct()
        )
    };
    assert!(
        waited(Duration::from_secs(120), || total() >= COUNT as usize).await,
        "timed out waiting for half of the messages: {}; bridge log:\n{}",
        counts(),
        log_tail(&log, 40)
    );
    first.kill();
    let at_kill = total();
    let second = Running::start(&file, &log);
    assert!(
        waited(Duration::from_secs(240), || total() >= 2 * COUNT as usize).await,
        "timed out waiting for every message: {}; bridge log:\n{}",
        counts(),
        log_tail(&log, 60)
    );
    second.signal("TERM");
    let code = second.wait(Duration::from_secs(60));
    for reader in readers {
        reader.abort();
    }
    let (to_kafka, to_rabbit) = (to_kafka.lock().unwrap(), to_rabbit.lock().unwrap());
    println!(
        "killed at {at_kill} of {} delivered; duplicates rabbit->kafka {}, kafka->rabbit {}",
        2 * COUNT,
        to_kafka.duplicates(),
        to_rabbit.duplicates()
    );
    assert_eq!(code, Some(0), "bridge exits 0 after SIGTERM");
    assert!(
        to_kafka.broken.is_empty(),
        "{:?}",
        &to_kafka.broken[..to_kafka.broken.len().min(3)]
    );
    assert!(
        to_rabbit.broken.is_empty(),
        "{:?}",
        &to_rabbit.broken[..to_rabbit.broken.len().min(3)]
    );
    assert_eq!(to_kafka.distinct(), COUNT as usize);
    assert_eq!(to_rabbit.distinct(), COUNT as usize);
    // At-least-once: redelivered after the kill is at most RabbitMQ's prefetch (the window)
    // into Kafka and, from Kafka, the records past the last confirmed commit (two windows).
    let window = MAX_IN_FLIGHT as u32;
    assert!(
        to_kafka.duplicates() <= Sys::Rabbit.redelivered_at_most(window),
        "{} duplicates",
        to_kafka.duplicates()
    );
    assert!(
        to_rabbit.duplicates() <= Sys::Kafka.redelivered_at_most(window),
        "{} duplicates",
        to_rabbit.duplicates()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanently_refused_message_is_dead_lettered_once_while_the_rest_flows() {
    init_logs();
    let name = unique("refuse");
    let (exchange, queue, t_src, t_dlq) = (
        format!("{name}-x"),
        format!("{name}-ok"),
        format!("{name}-src"),
        format!("{name}-dlq"),
    );
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {
        "exchanges": [{"name": exchange, "kind": "direct", "durable": false}],
        "queues": [{"name": queue, "arguments": {"x-expires": 900_000}, "bindings": [{"exchange": exchange, "routing_key": "ok"}]}]}});
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "declare": [{"name": t_src}, {"name": t_dlq}]});
    let routes = format!(
        "connections:\n  rabbit: {rabbit}\n  kafka: {kafka}\nroutes:\n  - name: by-routing-key\n    from: kafka:{t_src}\n    to: 'rabbit:exchange/{exchange}/{{{{ headers.rk }}}}'\n    dead_letter: kafka:{t_dlq}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let mut checker = kafka.clone();
    checker["group_id"] = json!(format!("{name}-checker"));
    let kafka_client = connector(&checker).await;
    let rabbit_client = connector(&rabbit).await;
    let sink = kafka_client
        .open_sink(&format!("test:{t_src}").parse().unwrap())
        .await
        .unwrap();
    for n in 0..51 {
        let mut message = Message::new(format!("m{n}"));
        message
            .headers
            .push("rk", if n == 25 { "nowhere" } else { "ok" });
        sink.send(&message).await.unwrap().await.unwrap();
    }
    let running = Running::start(&file, &dir.path().join("bridge.log"));
    let mut delivered = rabbit_client
        .open_source(&format!("test:queue/{queue}").parse().unwrap(), &settings())
        .await
        .unwrap();
    for _ in 0..50 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), delivered.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_ne!(delivery.message.body, "m25");
        delivery.ack.ack();
    }
    let mut dead = kafka_client
        .open_source(&format!("test:{t_dlq}").parse().unwrap(), &settings())
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(60), dead.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let header = |name: &str| {
        letter
            .message
            .headers
            .get_text(name)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(letter.message.body, "m25");
    assert_eq!(header("rk"), "nowhere");
    assert_eq!(header(reserved::DLQ_ROUTE), "by-routing-key");
    assert_eq!(
        header(reserved::DLQ_SINK),
        format!("rabbit:exchange/{exchange}/nowhere")
    );
    assert_eq!(header(reserved::DLQ_ERROR_CLASS), "permanent");
    assert!(
        header(reserved::DLQ_ERROR).contains("unroutable"),
        "{}",
        header(reserved::DLQ_ERROR)
    );
    assert_eq!(header(reserved::DLQ_SOURCE), format!("kafka:{t_src}"));
    assert_eq!(header(reserved::DLQ_SOURCE_PARTITION), "0");
    assert_eq!(header(reserved::DLQ_SOURCE_OFFSET), "25");
    letter.ack.ack();
    let again = tokio::time::timeout(Duration::from_secs(5), dead.recv()).await;
    assert!(again.is_err(), "exactly one dead letter");
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(30)), Some(0));
}

/// Two bridge processes share the consumer group: the second joining takes partitions
/// from the first (revoke while running), then the first leaves on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_partitions_move_between_two_bridges_without_loss() {
    init_logs();
    let name = unique("rebalance");
    let (t_in, q_out, t_dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {"queues": [{"name": q_out, "arguments": {"x-expires": 900_000}}]}});
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "consumer_options": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        "declare": [{"name": t_in, "partitions": 4}, {"name": t_dlq}]});
    let routes = format!(
        "connections:\n  rabbit: {rabbit}\n  kafka: {kafka}\nroutes:\n  - name: kafka-to-rabbit\n    from: kafka:{t_in}\n    to: rabbit:queue/{q_out}\n    dead_letter: kafka:{t_dlq}\n    max_in_flight: {MAX_IN_FLIGHT}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let mut checker = kafka.clone();
    checker["group_id"] = json!(format!("{name}-checker"));
    let kafka_client = connector(&checker).await;
    let rabbit_client = connector(&rabbit).await;
    publish(
        &kafka_client,
        &format!("test:{t_in}"),
        (0..COUNT).map(expected),
        1000,
    )
    .await;
    let arrived = Arc::new(Mutex::new(Tally::default()));
    let reader = collect(
        rabbit_client
            .open_source(&format!("test:queue/{q_out}").parse().unwrap(), &settings())
            .await
            .unwrap(),
        arrived.clone(),
    );
    let count = || arrived.lock().unwrap().distinct();
    let first = Running::start(&file, &dir.path().join("first.log"));
    assert!(
        waited(Duration::from_secs(120), || count() >= COUNT as usize / 3).await,
        "timed out waiting for a third of the messages: {}",
        count()
    );
    let second = Running::start(&file, &dir.path().join("second.log"));
    assert!(
        waited(Duration::from_secs(120), || count()
            >= 2 * COUNT as usize / 3)
        .await,
        "timed out waiting for two thirds of the messages: {}",
        count()
    );
    first.signal("TERM");
    assert_eq!(
        first.wait(Duration::from_secs(60)),
        Some(0),
        "the first bridge drains and exits 0"
    );
    assert!(
        waited(Duration::from_secs(180), || count() >= COUNT as usize).await,
        "timed out waiting for every message: {}; second bridge log:\n{}",
        count(),
        log_tail(&dir.path().join("second.log"), 60)
    );
    second.signal("TERM");
    assert_eq!(second.wait(Duration::from_secs(60)), Some(0));
    reader.abort();
    let arrived = arrived.lock().unwrap();
    println!(
        "rebalances: {} distinct, {} duplicates",
        arrived.distinct(),
        arrived.duplicates()
    );
    arrived.assert_intact();
    assert_eq!(arrived.distinct(), COUNT as usize);
    // Two rebalances (the second joins, the first leaves), each redelivering at most the
    // records its revoking member had past its last confirmed commit: two windows.
    assert!(
        arrived.duplicates() <= 2 * Sys::Kafka.redelivered_at_most(MAX_IN_FLIGHT as u32),
        "{} duplicates",
        arrived.duplicates()
    );
}

/// Reads `count` records from the first `partitions` partitions of `topic` with a plain
/// Kafka client, as a native consumer would.
fn native_records(
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", format!("{topic}-native"))
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while records.len() < count && std::time::Instant::now() < deadline {
        if let Some(Ok(record)) = consumer.poll(Duration::from_millis(500)) {
            records.push(record.detach());
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_can_neither_pick_a_kafka_partition_nor_shadow_the_envelope() {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    init_logs();
    let name = unique("shape");
    let (q_in, q_dlq, topic) = (
        format!("{name}-in"),
        format!("{name}-dlq"),
        format!("{name}-out"),
    );
    let expires = json!({"x-expires": 900_000});
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {"queues": [
        {"name": q_in, "arguments": expires}, {"name": q_dlq, "arguments": expires}]}});
    let kafka =
        json!({"type": "kafka", "brokers": KAFKA, "declare": [{"name": topic, "partitions": 2}]});
    let routes = format!(
        "connections:\n  rabbit: {rabbit}\n  kafka: {kafka}\nroutes:\n  - name: shape\n    from: rabbit:queue/{q_in}\n    to: 'kafka:{{{{ headers.topic }}}}'\n    dead_letter: rabbit:queue/{q_dlq}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let rabbit_client = connector(&rabbit).await;
    connector(&kafka).await; // declares the topic
    let running = Running::start(&file, &dir.path().join("bridge.log"));
    let mut shadowing = Message::new("to the topic");
    shadowing.headers.push("topic", topic.as_str());
    shadowing.headers.push("correlation-id", "forged");
    shadowing.correlation_id = Some("real".into());
    let mut picking = Message::new("to partition 1");
    picking.headers.push("topic", format!("{topic}/1"));
    publish(
        &rabbit_client,
        &format!("test:queue/{q_in}"),
        [shadowing, picking],
        10,
    )
    .await;
    let mut dead_letters = rabbit_client
        .open_source(&format!("test:queue/{q_dlq}").parse().unwrap(), &settings())
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(60), dead_letters.recv())
        .await
        .expect("the dead letter in time")
        .unwrap()
        .unwrap();
    let letters = [delivery.message.clone()];
    delivery.ack.ack();
    dead_letters.close().await;
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, "to partition 1");
    let error = letters[0].headers.get_text(reserved::DLQ_ERROR).unwrap();
    assert!(error.contains("path_values: any"), "{error}");
    // Both partitions: the producer, not the message, chose one.
    let records = native_records(&topic, 2, 1);
    assert_eq!(
        records.len(),
        1,
        "one record, on the partition the producer chose"
    );
    let headers = records[0].headers().unwrap();
    let correlation: Vec<&[u8]> = headers
        .iter()
        .filter(|h| h.key == "correlation-id")
        .filter_map(|h| h.value)
        .collect();
    assert_eq!(
        correlation,
        [b"real".as_slice()],
        "the envelope's value alone"
    );
}

/// Writes records natively: `(key, value)`, a `None` value being a tombstone.
async fn produce_native(topic: &str, records: &[(&str, Option<&str>)]) {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()
        .unwrap();
    for (key, value) in records {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(*key);
        if let Some(value) = value {
            record = record.payload(*value);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("the record is written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_key_becomes_the_kafka_key_and_tombstones_stay_null_across_systems() {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    init_logs();
    let name = unique("shaping");
    let exchange = format!("{name}-x");
    let (q_events, q_mid, q_dlq) = (
        format!("{name}-events"),
        format!("{name}-mid"),
        format!("{name}-dlq"),
    );
    let [keyed, direct_in, direct_out, via_in, via_out, dead] = [
        "keyed",
        "direct-in",
        "direct-out",
        "via-in",
        "via-out",
        "dead",
    ]
    .map(|t| format!("{name}-{t}"));
    let expires = json!({"x-expires": 900_000});
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {
        "exchanges": [{"name": exchange, "kind": "topic"}],
        "queues": [
            {"name": q_events, "arguments": expires, "bindings": [{"exchange": exchange, "routing_key": "order.*"}]},
            {"name": q_mid, "arguments": expires},
            {"name": q_dlq, "arguments": expires}]}});
    let topics: Vec<serde_json::Value> =
        [&keyed, &direct_in, &direct_out, &via_in, &via_out, &dead]
            .iter()
            .map(|t| json!({"name": t}))
            .collect();
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"), "declare": topics});
    let routes = format!(
        r#"connections:
  rabbit: {rabbit}
  kafka: {kafka}
routes:
  - name: events
    from: rabbit:queue/{q_events}
    to: kafka:{keyed}
    dead_letter: rabbit:queue/{q_dlq}
    transform:
      key: "{{{{ origin.routing_key }}}}"
      headers: {{rename: {{X-Tenant: tenant}}}}
  - name: direct
    from: kafka:{direct_in}
    to: kafka:{direct_out}
    dead_letter: kafka:{dead}
  - name: via-out
    from: kafka:{via_in}
    to: rabbit:queue/{q_mid}
    dead_letter: kafka:{dead}
  - name: via-back
    from: rabbit:queue/{q_mid}
    to: kafka:{via_out}
    dead_letter: rabbit:queue/{q_dlq}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let rabbit_client = connector(&rabbit).await;
    connector(&kafka).await; // declares the topics
    let running = Running::start(&file, &dir.path().join("bridge.log"));

    let mut event = Message::new(r#"{"id": 1}"#);
    event.headers.push("X-Tenant", "acme");
    publish(
        &rabbit_client,
        &format!("test:exchange/{exchange}/order.created"),
        [event],
        10,
    )
    .await;
    let records = [("gone", None), ("kept", Some("v"))];
    produce_native(&direct_in, &records).await;
    produce_native(&via_in, &records).await;

    let keyed_records = native_records(&keyed, 1, 1);
    let direct = native_records(&direct_out, 1, 2);
    let via = native_records(&via_out, 1, 2);
    running.signal("TERM");
    let log = dir.path().join("bridge.log");
    assert_eq!(
        running.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        log_tail(&log, 20)
    );

    assert_eq!(keyed_records.len(), 1, "{}", log_tail(&log, 20));
    let record = &keyed_records[0];
    assert_eq!(
        record.key(),
        Some(&b"order.created"[..]),
        "the routing key is the key"
    );
    let headers = record.headers().unwrap();
    let value_of = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(value_of("tenant").as_deref(), Some("acme"));
    assert_eq!(value_of("X-Tenant"), None);

    for (path, records) in [
        ("Kafka -> Kafka", &direct),
        ("Kafka -> RabbitMQ -> Kafka", &via),
    ] {
        assert_eq!(records.len(), 2, "{path}: {}", log_tail(&log, 20));
        let by_key = |key: &[u8]| records.iter().find(|r| r.key() == Some(key)).unwrap();
        assert_eq!(
            by_key(b"gone").payload(),
            None,
            "{path}: a tombstone stays null"
        );
        assert_eq!(by_key(b"kept").payload(), Some(&b"v"[..]), "{path}");
        let marker = by_key(b"gone")
            .headers()
            .is_some_and(|h| h.iter().any(|h| h.key == reserved::TOMBSTONE));
        assert!(!marker, "{path}: the marker is not written to Kafka");
    }
}

/// A dead letter as a route writes it (the fields `stats` groups by).
fn dead_letter(route: &str, error: &str, minute: u32) -> Message {
    let mut letter = Message::new(format!("payload of {error}"));
    for (name, value) in [
        (reserved::DLQ_ROUTE, route.to_owned()),
        (reserved::DLQ_SINK, "kafka:orders".to_owned()),
        (reserved::DLQ_ERROR_CLASS, "permanent".to_owned()),
        (reserved::DLQ_ERROR, error.to_owned()),
        (reserved::DLQ_ATTEMPTS, "1".to_owned()),
        (
            reserved::DLQ_FIRST_FAILURE,
            format!("2026-12-07T10:{minute:02}:00.000Z"),
        ),
        (
            reserved::DLQ_LAST_FAILURE,
            format!("2026-12-07T10:{minute:02}:30.000Z"),
        ),
    ] {
        letter.headers.push(name, value);
    }
    letter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_stats_groups_dead_letters_whose_errors_differ_only_in_ids() {
    init_logs();
    let topic = unique("dlq-stats");
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "declare": [{"name": topic}]});
    let client = connector(&kafka).await;
    let mut letters: Vec<Message> = (0..5)
        .map(|n| dead_letter("orders", &format!("order {n} refused: 'o-{n}' unknown"), n))
        .collect();
    letters.extend(
        (0..3).map(|n| dead_letter("orders", "the body is not JSON (line 1 column 1)", 10 + n)),
    );
    letters.push(Message::new("a broker's own dead letter"));
    publish(&client, &format!("test:{topic}"), letters, 20).await;
    let endpoint = format!("kafka:{topic}");
    let args = [
        "dlq",
        "stats",
        &endpoint,
        "--url",
        "kafka://127.0.0.1:9092",
        "--json",
        "--idle",
        "10s",
    ];
    let output = support::process::run(&args, b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats["total"], 9, "{stats}");
    assert_eq!(stats["without_context"], 1);
    let groups = stats["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{stats}");
    assert_eq!(groups[0]["count"], 5);
    assert_eq!(groups[0]["error"], "order <n> refused: '…' unknown");
    assert_eq!(groups[0]["first_failure"], "2026-12-07T10:00:00.000Z");
    assert_eq!(groups[0]["last_failure"], "2026-12-07T10:04:30.000Z");
    assert_eq!(groups[1]["count"], 3);

    // `show` puts the dead-letter context first; reading again finds them all (a peek).
    let output = support::process::run(
        &[
            "dlq",
            "show",
            &endpoint,
            "--url",
            "kafka://127.0.0.1:9092",
            "--idle",
            "10s",
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout.matches("── dead letter of route orders").count(),
        8,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("── without bridge's dead-letter context")
            .count(),
        1
    );
    assert!(
        stdout.contains("error: order 3 refused: 'o-3' unknown"),
        "{stdout}"
    );
}
