//! The eight-by-eight fidelity matrix: for every ordered pair of systems (Kafka, RabbitMQ,
//! SQS, SNS via SQS, Pub/Sub, NATS JetStream, Redis Streams, MQTT 5), a message with a binary body, a key, 14 text
//! and binary headers (W3C `traceparent` and `tracestate` among them), a correlation id and
//! a reply-to goes through `bridge run` from A to B, where it reads back as it was sent, and
//! from B back to A, where it arrives unchanged except for `bridge-*` headers.
//!
//! One test per system A (each with its own `bridge run`), so that no test carries the
//! whole matrix.
#![cfg(all(
    feature = "kafka",
    feature = "rabbitmq",
    feature = "aws",
    feature = "pubsub",
    feature = "nats",
    feature = "redis",
    feature = "mqtt"
))]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bridge::adapter::{Connector, SourceSettings};
use bridge::address::Endpoint;
use bridge::message::{HeaderValue, Message, reserved};
use support::process::Running;
use support::systems::{Place, Resources, Sys, source_yaml};
use support::{connector, init_logs, unique};

fn sent(pair: &str) -> Message {
    let mut message = Message::new(vec![0u8, 0xff, 0xfe, b'x', 0x80]);
    message.key = Some(format!("key-{pair}").into());
    for n in 0..8 {
        message
            .headers
            .push(format!("t{n}"), format!("text {n} of {pair}"));
    }
    for n in 0..4u8 {
        message
            .headers
            .push(format!("b{n}"), vec![0xffu8, n, 0, b'b']);
    }
    // W3C trace context travels as ordinary headers, so a trace follows the message.
    message.headers.push(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    message.headers.push("tracestate", "vendor=opaque,other=1");
    message.correlation_id = Some(format!("corr-{pair}"));
    message.reply_to = Some(format!("reply-to-{pair}"));
    message.message_id = Some(format!("id-{pair}"));
    message.content_type = Some("application/octet-stream".into());
    message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_790_000_000_321));
    message
}

/// What must survive: everything but `bridge-*` headers and the header order.
fn comparable(message: &Message) -> Message {
    let mut headers: Vec<(String, HeaderValue)> = message
        .headers
        .iter()
        .filter(|(name, _)| !reserved::is_reserved(name))
        .map(|(n, v)| (n.to_owned(), v.clone()))
        .collect();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut clean = message.without_origin();
    clean.headers = headers.into_iter().collect();
    clean
}

fn settings(place: &Place) -> SourceSettings {
    SourceSettings {
        route: "matrix-check".into(),
        options: place.options.clone(),
        max_in_flight: 64,
        dead_letter: true,
    }
}

fn endpoint(path: &str) -> Endpoint {
    Endpoint {
        connection: "test".into(),
        path: path.to_owned(),
    }
}

/// Reads `place` and files each message under its pair (from its correlation id).
fn read(
    checker: Arc<dyn Connector>,
    place: Place,
    into: Arc<Mutex<HashMap<String, Message>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut source = checker
            .open_source(&endpoint(&place.source), &settings(&place))
            .await
            .unwrap();
        while let Ok(Some(delivery)) = source.recv().await {
            let pair = delivery.message.correlation_id.clone().unwrap_or_default();
            into.lock().unwrap().insert(
                pair.trim_start_matches("corr-").to_owned(),
                delivery.message.clone(),
            );
            delivery.ack.ack();
        }
    })
}

/// One test per source system.
macro_rules! from_each_system {
    ($($test:ident: $sys:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            carries_the_whole_envelope_both_ways_from($sys).await;
        }
    )*};
}

from_each_system! {
    kafka_to_every_system_and_back_carries_the_whole_envelope: Sys::Kafka,
    rabbitmq_to_every_system_and_back_carries_the_whole_envelope: Sys::Rabbit,
    sqs_to_every_system_and_back_carries_the_whole_envelope: Sys::Sqs,
    sns_to_every_system_and_back_carries_the_whole_envelope: Sys::Sns,
    pubsub_to_every_system_and_back_carries_the_whole_envelope: Sys::PubSub,
    nats_to_every_system_and_back_carries_the_whole_envelope: Sys::Nats,
    redis_to_every_system_and_back_carries_the_whole_envelope: Sys::Redis,
    mqtt_to_every_system_and_back_carries_the_whole_envelope: Sys::Mqtt,
}

/// A message goes from `a` to every system and back to `a`.
async fn carries_the_whole_envelope_both_ways_from(a: Sys) {
    init_logs();
    let name = unique(&format!("matrix-{}", a.label()));
    let mut resources: HashMap<&str, Resources> = Sys::ALL
        .iter()
        .map(|s| {
            (
                s.label(),
                Resources::new(*s, &format!("{name}-{}", s.label())),
            )
        })
        .collect();
    let dead: HashMap<&str, Place> = Sys::ALL
        .iter()
        .map(|s| {
            (
                s.label(),
                resources
                    .get_mut(s.label())
                    .unwrap()
                    .place(&format!("{name}-{}-dlq", s.label())),
            )
        })
        .collect();
    let mut routes = String::new();
    let mut pairs = Vec::new();
    for b in Sys::ALL {
        let pair = format!("{}-{}", a.label(), b.label());
        let base = format!("{name}-{pair}");
        let inbound = resources
            .get_mut(a.label())
            .unwrap()
            .place(&format!("{base}-in"));
        let back = resources
            .get_mut(a.label())
            .unwrap()
            .place(&format!("{base}-back"));
        let middle = resources
            .get_mut(b.label())
            .unwrap()
            .place(&format!("{base}-mid"));
        let peek = resources
            .get_mut(b.label())
            .unwrap()
            .place(&format!("{base}-peek"));
        routes.push_str(&format!(
            "  - name: {pair}-out\n    from: {}\n    to: ['{}:{}', '{}:{}']\n    dead_letter: '{}:{}'\n  - name: {pair}-back\n    from: {}\n    to: '{}:{}'\n    dead_letter: '{}:{}'\n",
            source_yaml(a.label(), &inbound),
            b.label(), middle.sink, b.label(), peek.sink,
            a.label(), dead[a.label()].sink,
            source_yaml(b.label(), &middle),
            a.label(), back.sink,
            b.label(), dead[b.label()].sink,
        ));
        pairs.push((pair, a, b, inbound, back, peek, middle));
    }
    let connections: String = Sys::ALL
        .iter()
        .map(|s| format!("  {}: {}\n", s.label(), resources[s.label()].connection()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        format!("connections:\n{connections}routes:\n{routes}"),
    )
    .unwrap();

    let mut checkers: HashMap<&str, Arc<dyn Connector>> = HashMap::new();
    for s in Sys::ALL {
        checkers.insert(
            s.label(),
            connector(&resources[s.label()].checker_connection()).await,
        );
    }
    for (pair, a, b, inbound, back, peek, middle) in &pairs {
        let (a_side, b_side) = (&resources[a.label()], &resources[b.label()]);
        let (a_checker, b_checker) = (&checkers[a.label()], &checkers[b.label()]);
        a_side
            .subscribe_ahead(a_checker, inbound, Some(&format!("{pair}-out")))
            .await;
        a_side.subscribe_ahead(a_checker, back, None).await;
        b_side
            .subscribe_ahead(b_checker, middle, Some(&format!("{pair}-back")))
            .await;
        b_side.subscribe_ahead(b_checker, peek, None).await;
    }
    let (peeked, returned) = (
        Arc::new(Mutex::new(HashMap::new())),
        Arc::new(Mutex::new(HashMap::new())),
    );
    let mut tasks = Vec::new();
    for (_, a, b, _, back, peek, _) in &pairs {
        tasks.push(read(
            checkers[b.label()].clone(),
            peek.clone(),
            peeked.clone(),
        ));
        tasks.push(read(
            checkers[a.label()].clone(),
            back.clone(),
            returned.clone(),
        ));
    }
    let running = Running::start(&file, &dir.path().join("bridge.log"));
    for (pair, a, _, inbound, _, _, _) in &pairs {
        let sink = checkers[a.label()]
            .open_sink(&endpoint(&inbound.sink))
            .await
            .unwrap();
        sink.send(&sent(pair)).await.unwrap().await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while peeked.lock().unwrap().len() < pairs.len() || returned.lock().unwrap().len() < pairs.len()
    {
        if tokio::time::Instant::now() > deadline {
            let (p, r) = (peeked.lock().unwrap(), returned.lock().unwrap());
            let missing: Vec<&String> = pairs
                .iter()
                .map(|p| &p.0)
                .filter(|n| !p.contains_key(*n) || !r.contains_key(*n))
                .collect();
            panic!(
                "pairs not through both ways: {missing:?}; log: {}",
                running.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    for task in tasks {
        task.abort();
    }
    let (peeked, returned) = (peeked.lock().unwrap(), returned.lock().unwrap());
    let mut failures = Vec::new();
    for (pair, _, _, _, _, _, _) in &pairs {
        let want = comparable(&sent(pair));
        if comparable(&peeked[pair]) != want {
            failures.push(format!(
                "{pair}, on arrival: {:?}",
                comparable(&peeked[pair])
            ));
        }
        if comparable(&returned[pair]) != want {
            failures.push(format!(
                "{pair}, back home: {:?}",
                comparable(&returned[pair])
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        2 * pairs.len(),
        failures.join("\n")
    );
}
