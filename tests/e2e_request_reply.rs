//! Request-reply across brokers with `bridge run`: 200 concurrent requests from four
//! requesters, two bridge processes sharing the reply queue or topic, one of them stopped
//! and another started in the middle (replies held until then), a replier that only echoes the correlation id, and forged
//! correlation ids that must never be relayed. Also `bridge request` end to end.
#![cfg(all(
    feature = "kafka",
    feature = "rabbitmq",
    feature = "aws",
    feature = "pubsub",
    feature = "nats"
))]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::adapter::{Connector, Sink, SourceSettings};
use bridge::address::Endpoint;
use bridge::message::Message;
use serde_json::Value;
use support::flow::wait_until;
use support::process::Running;
use support::systems::{Place, Resources, Sys, source_yaml};
use support::{connector, init_logs, unique};

const CLIENTS: usize = 4;
const PER_CLIENT: usize = 50;

/// Room for every request of a test: the replier holds up to half of them unanswered.
fn settings(place: &Place) -> SourceSettings {
    SourceSettings {
        route: "test".into(),
        options: place.options.clone(),
        max_in_flight: CLIENTS * PER_CLIENT,
        dead_letter: true,
    }
}

fn endpoint(path: &str) -> Endpoint {
    Endpoint {
        connection: "test".into(),
        path: path.to_owned(),
    }
}

/// Controls the replier: while `hold` is set, requests are kept without a reply.
#[derive(Default)]
struct ReplierControl {
    hold: std::sync::atomic::AtomicBool,
    held: std::sync::atomic::AtomicUsize,
    forged_sent: std::sync::atomic::AtomicBool,
}

/// Answers every request on `place` by echoing its correlation id to its reply-to (after
/// a hold, if one is on), and once also sends a reply with a forged correlation id.
fn echo_replier(
    replier: Arc<dyn Connector>,
    place: Place,
    control: Arc<ReplierControl>,
) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::Ordering::SeqCst;
    tokio::spawn(async move {
        let mut requests = replier
            .open_source(&endpoint(&place.source), &settings(&place))
            .await
            .unwrap();
        let mut sinks: HashMap<String, Arc<dyn Sink>> = HashMap::new();
        let mut held = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(200), requests.recv()).await;
            if let Ok(next) = next {
                let Ok(Some(delivery)) = next else { return };
                held.push(delivery);
                control.held.store(held.len(), SeqCst);
            }
            if control.hold.load(SeqCst) {
                continue;
            }
            for delivery in held.drain(..) {
                let request = &delivery.message;
                let reply_to = request
                    .reply_to
                    .clone()
                    .expect("bridge gives the request a reply-to");
                let path = replier.reply_path(&reply_to).unwrap();
                if !sinks.contains_key(&path) {
                    sinks.insert(
                        path.clone(),
                        replier.open_sink(&endpoint(&path)).await.unwrap(),
                    );
                }
                let sink = &sinks[&path];
                let mut reply = Message::new(format!(
                    "reply to {}",
                    String::from_utf8_lossy(&request.body)
                ));
                reply.correlation_id = request.correlation_id.clone();
                sink.send(&reply).await.unwrap().await.unwrap();
                if !control.forged_sent.swap(true, SeqCst) {
                    // Alter one character of the token's payload: the reply must go nowhere.
                    let mut token = request.correlation_id.clone().unwrap().into_bytes();
                    token[6] = if token[6] == b'A' { b'B' } else { b'A' };
                    let mut forged = Message::new("forged");
                    forged.correlation_id = Some(String::from_utf8(token).unwrap());
                    sink.send(&forged).await.unwrap().await.unwrap();
                }
                delivery.ack.ack();
            }
            control.held.store(0, SeqCst);
        }
    })
}

/// Every reply a requester received: (client, correlation id, body).
type Received = Arc<Mutex<Vec<(usize, String, String)>>>;

fn requester_inbox(
    checker: Arc<dyn Connector>,
    client: usize,
    place: Place,
    received: Received,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut replies = checker
            .open_source(&endpoint(&place.source), &settings(&place))
            .await
            .unwrap();
        while let Ok(Some(delivery)) = replies.recv().await {
            let message = &delivery.message;
            received.lock().unwrap().push((
                client,
                message.correlation_id.clone().unwrap_or_default(),
                String::from_utf8_lossy(&message.body).into_owned(),
            ));
            delivery.ack.ack();
        }
    })
}

async fn send_requests(
    checker: &Arc<dyn Connector>,
    into: &Place,
    clients: &[Place],
    round: usize,
) {
    let sink = checker.open_sink(&endpoint(&into.sink)).await.unwrap();
    let mut pending = Vec::new();
    for n in round * PER_CLIENT / 2..(round + 1) * PER_CLIENT / 2 {
        for (client, place) in clients.iter().enumerate() {
            let mut request = Message::new(format!("req-{client}-{n}"));
            request.correlation_id = Some(format!("corr-{client}-{n}"));
            request.reply_to = Some(place.address.clone());
            pending.push(sink.send(&request).await.unwrap());
        }
    }
    for confirmation in pending {
        confirmation.await.unwrap();
    }
}

async fn relay(requests_on: Sys, replier_on: Sys) {
    init_logs();
    let name = unique(&format!(
        "rr-{}-{}",
        requests_on.label(),
        replier_on.label()
    ));
    let mut a = Resources::new(requests_on, &format!("{name}-a"));
    let mut b = Resources::new(replier_on, &format!("{name}-b"));
    let inbound = a.place(&format!("{name}-in"));
    let clients: Vec<Place> = (0..CLIENTS)
        .map(|i| a.place(&format!("{name}-c{i}")))
        .collect();
    let dead = a.place(&format!("{name}-dlq"));
    let forwarded = b.place(&format!("{name}-fwd"));
    let replies = b.place(&format!("{name}-rep"));
    let routes = format!(
        "settings: {{reply_signing_key: 'e2e-signing-key-0123456789'}}\nconnections:\n  a: {}\n  b: {}\nroutes:\n  - name: rpc\n    from: {}\n    to: 'b:{}'\n    reply: {{from: {}, address: '{}', timeout: 300s}}\n    dead_letter: 'a:{}'\n",
        a.connection(),
        b.connection(),
        source_yaml("a", &inbound),
        forwarded.sink,
        source_yaml("b", &replies),
        replies.address,
        dead.sink,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let requester = connector(&a.checker_connection()).await;
    let replier = connector(&b.checker_connection()).await;
    b.subscribe_ahead(&replier, &forwarded, None).await;
    for place in &clients {
        a.subscribe_ahead(&requester, place, None).await;
    }

    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let control = Arc::new(ReplierControl::default());
    let mut tasks = vec![echo_replier(
        replier.clone(),
        forwarded.clone(),
        control.clone(),
    )];
    for (client, place) in clients.iter().enumerate() {
        tasks.push(requester_inbox(
            requester.clone(),
            client,
            place.clone(),
            received.clone(),
        ));
    }
    a.subscribe_ahead(&requester, &inbound, Some("rpc")).await;
    b.subscribe_ahead(&replier, &replies, Some("rpc-replies"))
        .await;
    // Two bridges share the reply queue or topic.
    let first = Running::start(&file, &dir.path().join("first.log"));
    let second = Running::start_replica(&file, &dir.path().join("second.log"), "2");
    send_requests(&requester, &inbound, &clients, 0).await;
    let count = || received.lock().unwrap().len();
    let half = CLIENTS * PER_CLIENT / 2;
    wait_until(
        "the first half of the replies",
        Duration::from_secs(120),
        || count() >= half,
    )
    .await;
    // The second half is forwarded, then the replies wait until one bridge was killed and
    // restarted: bridges that never saw a request relay its reply.
    control
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    send_requests(&requester, &inbound, &clients, 1).await;
    wait_until(
        "the second half forwarded",
        Duration::from_secs(120),
        || control.held.load(std::sync::atomic::Ordering::SeqCst) >= half,
    )
    .await;
    // A graceful restart: tansu does not always evict a group member killed outright
    // while others remain, which would leave its reply partition unread (SIGKILL recovery
    // is tested in e2e_rabbit_kafka with one process).
    first.signal("TERM");
    assert_eq!(first.wait(Duration::from_secs(60)), Some(0));
    let restarted = Running::start(&file, &dir.path().join("restarted.log"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    control
        .hold
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let all = CLIENTS * PER_CLIENT;
    let distinct = || {
        let received = received.lock().unwrap();
        let mut seen: Vec<&String> = received.iter().map(|(_, c, _)| c).collect();
        seen.sort();
        seen.dedup();
        seen.len()
    };
    let waited = tokio::time::timeout(Duration::from_secs(180), async {
        while distinct() < all {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if waited.is_err() {
        for log in ["first.log", "second.log", "restarted.log"] {
            let text = std::fs::read_to_string(dir.path().join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            eprintln!(
                "--- {log}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        panic!("only {} of {all} replies arrived", distinct());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for running in [second, restarted] {
        running.signal("TERM");
        assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    }
    for task in tasks {
        task.abort();
    }
    let received = received.lock().unwrap();
    assert!(
        control
            .forged_sent
            .load(std::sync::atomic::Ordering::SeqCst),
        "the replier sent a forged reply"
    );
    for (client, correlation, body) in received.iter() {
        assert_ne!(
            body, "forged",
            "a forged correlation id was relayed to client {client}"
        );
        let n = correlation
            .strip_prefix(&format!("corr-{client}-"))
            .unwrap_or_else(|| panic!("client {client} got someone else's reply {correlation}"));
        assert_eq!(body, &format!("reply to req-{client}-{n}"));
    }
    let duplicates = received.len() - all;
    println!(
        "{} -> {} -> {}: {all} replies, {duplicates} duplicates",
        requests_on.label(),
        replier_on.label(),
        requests_on.label()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_to_kafka_and_back() {
    relay(Sys::Rabbit, Sys::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_to_rabbitmq_and_back() {
    relay(Sys::Sqs, Sys::Rabbit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_to_kafka_and_back() {
    relay(Sys::PubSub, Sys::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_sqs_and_back() {
    relay(Sys::Kafka, Sys::Sqs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_to_kafka_and_back() {
    relay(Sys::Nats, Sys::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_nats_and_back() {
    relay(Sys::Kafka, Sys::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_to_sqs_and_back() {
    relay(Sys::Nats, Sys::Sqs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_to_nats_and_back() {
    relay(Sys::Sqs, Sys::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_to_kafka_and_back() {
    relay(Sys::Redis, Sys::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_redis_and_back() {
    relay(Sys::Kafka, Sys::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_to_kafka_and_back() {
    relay(Sys::Mqtt, Sys::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_mqtt_and_back() {
    relay(Sys::Kafka, Sys::Mqtt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_request_prints_the_reply_relayed_from_kafka() {
    init_logs();
    let name = unique("cli-rr");
    let mut a = Resources::new(Sys::Rabbit, &format!("{name}-a"));
    let mut b = Resources::new(Sys::Kafka, &format!("{name}-b"));
    let inbound = a.place(&format!("{name}-in"));
    let client = a.place(&format!("{name}-client"));
    let dead = a.place(&format!("{name}-dlq"));
    let forwarded = b.place(&format!("{name}-fwd"));
    let replies = b.place(&format!("{name}-rep"));
    let routes = format!(
        "settings: {{reply_signing_key: 'cli-signing-key-0123456789'}}\nconnections:\n  a: {}\n  b: {}\nroutes:\n  - name: rpc\n    from: 'a:{}'\n    to: 'b:{}'\n    reply: {{from: 'b:{}'}}\n    dead_letter: 'a:{}'\n",
        a.connection(),
        b.connection(),
        inbound.source,
        forwarded.sink,
        replies.source,
        dead.sink
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let replier = connector(&b.checker_connection()).await;
    let control = Arc::new(ReplierControl::default());
    control
        .forged_sent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let task = echo_replier(replier, forwarded, control);
    let running = Running::start(&file, &dir.path().join("bridge.log"));
    let file_arg = file.to_str().unwrap().to_owned();
    let (input, client_path) = (
        format!("a:{}", inbound.sink),
        format!("a:{}", client.source),
    );
    let output = tokio::task::spawn_blocking(move || {
        support::process::bridge()
            .args([
                "request",
                &input,
                "ping",
                "--reply-from",
                &client_path,
                "--timeout",
                "60s",
                "--json",
                "-c",
                &file_arg,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    task.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(reply["body"], "reply to ping");
    assert!(
        reply["correlation_id"]
            .as_str()
            .unwrap()
            .starts_with("req-"),
        "the request's own correlation id: {reply}"
    );
}

/// RabbitMQ's direct reply-to: the requester consumes `amq.rabbitmq.reply-to` on the
/// channel it publishes from, RabbitMQ gives the request a generated reply-to, and the
/// reply relayed from Kafka reaches that consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_direct_reply_to_gets_its_reply_from_kafka() {
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    init_logs();
    let name = unique("direct");
    let mut a = Resources::new(Sys::Rabbit, &format!("{name}-a"));
    let mut b = Resources::new(Sys::Kafka, &format!("{name}-b"));
    let inbound = a.place(&format!("{name}-in"));
    let dead = a.place(&format!("{name}-dlq"));
    let forwarded = b.place(&format!("{name}-fwd"));
    let replies = b.place(&format!("{name}-rep"));
    let routes = format!(
        "settings: {{reply_signing_key: 'direct-signing-key-0123456789'}}\nconnections:\n  a: {}\n  b: {}\nroutes:\n  - name: rpc\n    from: 'a:{}'\n    to: 'b:{}'\n    reply: {{from: {}}}\n    dead_letter: 'a:{}'\n",
        a.connection(),
        b.connection(),
        inbound.source,
        forwarded.sink,
        source_yaml("b", &replies),
        dead.sink
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    connector(&a.checker_connection()).await; // declares the queues
    let replier = connector(&b.checker_connection()).await;
    let control = Arc::new(ReplierControl::default());
    control
        .forged_sent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let task = echo_replier(replier, forwarded, control);
    let running = Running::start(&file, &dir.path().join("bridge.log"));

    let connection = Connection::connect(support::systems::RABBIT, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "requester".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let properties = BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_correlation_id("direct-1".into());
    channel
        .basic_publish(
            "".into(),
            inbound.address.as_str().into(),
            BasicPublishOptions::default(),
            b"ping",
            properties,
        )
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(60), consumer.next())
        .await
        .expect("the reply arrives on the direct reply-to consumer")
        .unwrap()
        .unwrap();
    assert_eq!(reply.data, b"reply to ping");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("direct-1")
    );
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    task.abort();
}

/// A requester on `requests_on` names `unsafe_reply_to` (an address the default
/// `reply.allow` refuses) beside a plain one: the plain one gets its reply, the other is
/// dead-lettered with the reason and never published, across real brokers.
async fn an_unsafe_reply_address_is_refused(
    requests_on: Sys,
    replier_on: Sys,
    unsafe_reply_to: impl Fn(&Place) -> String,
) {
    init_logs();
    let name = unique(&format!(
        "allow-{}-{}",
        requests_on.label(),
        replier_on.label()
    ));
    let mut a = Resources::new(requests_on, &format!("{name}-a"));
    let mut b = Resources::new(replier_on, &format!("{name}-b"));
    let inbound = a.place(&format!("{name}-in"));
    let client = a.place(&format!("{name}-client"));
    let victim = a.place(&format!("{name}-victim"));
    let dead = a.place(&format!("{name}-dlq"));
    let forwarded = b.place(&format!("{name}-fwd"));
    let replies = b.place(&format!("{name}-rep"));
    let routes = format!(
        "settings: {{reply_signing_key: 'allow-signing-key-0123456789'}}\nconnections:\n  a: {}\n  b: {}\nroutes:\n  - name: rpc\n    from: {}\n    to: 'b:{}'\n    reply: {{from: {}, address: '{}'}}\n    dead_letter: 'a:{}'\n",
        a.connection(),
        b.connection(),
        source_yaml("a", &inbound),
        forwarded.sink,
        source_yaml("b", &replies),
        replies.address,
        dead.sink,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let requester = connector(&a.checker_connection()).await;
    let replier = connector(&b.checker_connection()).await;
    let control = Arc::new(ReplierControl::default());
    control
        .forged_sent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let replier_task = echo_replier(replier, forwarded, control);
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let inbox = requester_inbox(requester.clone(), 0, client.clone(), received.clone());
    let letters: Received = Arc::new(Mutex::new(Vec::new()));
    let dead_letters = requester_inbox(requester.clone(), 1, dead.clone(), letters.clone());
    let victim_mail: Received = Arc::new(Mutex::new(Vec::new()));
    let victim_inbox = requester_inbox(requester.clone(), 2, victim.clone(), victim_mail.clone());
    let running = Running::start(&file, &dir.path().join("bridge.log"));
    let sink = requester.open_sink(&endpoint(&inbound.sink)).await.unwrap();
    for (correlation, reply_to) in [
        ("safe", client.address.clone()),
        ("unsafe", unsafe_reply_to(&victim)),
    ] {
        let mut request = Message::new(format!("req-{correlation}"));
        request.correlation_id = Some(correlation.into());
        request.reply_to = Some(reply_to);
        sink.send(&request).await.unwrap().await.unwrap();
    }
    wait_until(
        "the safe reply and the dead letter",
        Duration::from_secs(90),
        || !received.lock().unwrap().is_empty() && !letters.lock().unwrap().is_empty(),
    )
    .await;
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    for task in [replier_task, inbox, dead_letters, victim_inbox] {
        task.abort();
    }
    assert_eq!(received.lock().unwrap()[0].1, "safe");
    assert_eq!(letters.lock().unwrap().len(), 1);
    assert_eq!(letters.lock().unwrap()[0].2, "reply to req-unsafe");
    assert!(
        victim_mail.lock().unwrap().is_empty(),
        "the reply reached the victim"
    );
    let log = std::fs::read_to_string(dir.path().join("bridge.log")).unwrap();
    assert!(log.contains("not allowed by reply.allow"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_requester_cannot_have_replies_published_to_an_exchange() {
    // The default exchange with a routing key: `EXCHANGE/KEY`, which reaches any queue.
    an_unsafe_reply_address_is_refused(Sys::Rabbit, Sys::Kafka, |victim| {
        format!("amq.direct/{}", victim.address)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_requester_cannot_pick_a_reply_partition() {
    an_unsafe_reply_address_is_refused(Sys::Kafka, Sys::Rabbit, |victim| {
        format!("{}/0", victim.address)
    })
    .await;
}
