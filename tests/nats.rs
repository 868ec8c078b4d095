//! The conformance suite against the project's own nats-server with JetStream
//! (127.0.0.1:4223, started by scripts/brokers.sh).
#![cfg(feature = "nats")]

mod conformance;

use std::time::Duration;

use async_trait::async_trait;
use bridge::adapter::{Connector, SourceOptions, SourceSettings};
use bridge::address::Endpoint;
use bridge::message::Message;
use conformance::{Fixture, Pair, unique};
use serde_json::json;

pub const URL: &str = "nats://127.0.0.1:4223";

/// A stream per test capturing `TEST.>`; the source is a durable pull consumer with a
/// 10-second ack wait. JetStream keeps no dead letters, so rejects are checked through the
/// route's dead letter, as for Kafka.
struct Nats;

#[async_trait]
impl Fixture for Nats {
    fn broker(&self) -> &'static str {
        "nats"
    }

    async fn fresh(&self, test: &str) -> Pair {
        let name = unique(test).replace('.', "-");
        let stream = name.to_uppercase();
        let connection = json!({
            "type": "nats",
            "url": URL,
            "declare": {
                "streams": [
                    {"name": stream, "subjects": [format!("{name}.>")]},
                    {"name": format!("{stream}-SPARE"), "subjects": [format!("{name}-spare.>")]},
                ],
            },
        });
        let (parsed, connector) = conformance::connect(
            &connection,
            &format!("the project's nats-server must be running at {URL}"),
        )
        .await;
        Pair {
            connection: parsed,
            connector,
            sink: format!("sys:subject/{name}.in").parse().unwrap(),
            source: format!("sys:stream/{stream}").parse().unwrap(),
            source_options: json!({"ack_wait_seconds": 10}),
            broker_dead_letter: None,
            spare: format!("sys:subject/{name}-spare.in").parse().unwrap(),
            spare_source: format!("sys:stream/{stream}-SPARE").parse().unwrap(),
            connection_yaml: connection.to_string(),
        }
    }
}

conformance_tests!(Nats);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_peeked_then_taken_once() {
    conformance::init_logs();
    conformance::dead_letters_are_peeked_then_taken_once(&Nats).await;
}

/// A fresh stream capturing `NAME.>` on the project's server, and a connection to it.
async fn fresh_stream(test: &str) -> (String, String, std::sync::Arc<dyn Connector>) {
    let name = unique(test).replace('.', "-");
    let stream = name.to_uppercase();
    let connection = json!({"type": "nats", "url": URL,
        "declare": {"streams": [{"name": stream, "subjects": [format!("{name}.>")]}],
                    "consumers": [{"stream": stream, "name": "declared",
                                   "filter_subject": format!("{name}.only"), "ack_wait_seconds": 7}]}});
    let (_, connector) = conformance::connect(
        &connection,
        &format!("the project's nats-server must be running at {URL}"),
    )
    .await;
    (name, stream, connector)
}

fn endpoint(path: String) -> Endpoint {
    Endpoint {
        connection: "sys".into(),
        path,
    }
}

/// The consumer as the server reports it.
async fn consumer_info(stream: &str, consumer: &str) -> async_nats::jetstream::consumer::Info {
    let client = async_nats::connect(URL).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream(stream).await.unwrap();
    stream.consumer_info(consumer).await.unwrap().clone()
}

#[tokio::test]
async fn declared_consumers_exist_and_sources_size_theirs_to_the_window() {
    let (name, stream, nats) = fresh_stream("declare").await;
    let declared = consumer_info(&stream, "declared").await;
    assert_eq!(declared.config.filter_subject, format!("{name}.only"));
    assert_eq!(declared.config.ack_wait, Duration::from_secs(7));
    let settings = SourceSettings {
        route: "sized".into(),
        options: SourceOptions::none(),
        max_in_flight: 3,
        dead_letter: true,
    };
    let source = nats
        .open_source(&endpoint(format!("stream/{stream}")), &settings)
        .await
        .unwrap();
    let own = consumer_info(&stream, "bridge-sized").await;
    assert_eq!(own.config.max_ack_pending, 3);
    assert_eq!(
        own.config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );
    source.close().await;
}

/// With a three-second ack wait, a message held for nine seconds is not delivered again:
/// the source sends in-progress acknowledgements while it is held (every second, once it
/// was held half the ack wait, which leaves a second and a half of slack on a busy
/// machine).
#[tokio::test]
async fn a_message_held_longer_than_the_ack_wait_is_not_delivered_again() {
    let (name, stream, nats) = fresh_stream("in-progress").await;
    let sink = nats
        .open_sink(&endpoint(format!("subject/{name}.in")))
        .await
        .unwrap();
    conformance::send_confirmed(&sink, &Message::new("slow"))
        .await
        .unwrap();
    let connection =
        bridge::adapter::connection_from_json(&json!({"type": "nats", "url": URL})).unwrap();
    let options = connection
        .source_options(&format!("stream/{stream}"), &json!({"ack_wait_seconds": 3}))
        .unwrap();
    let mut source = nats
        .open_source(
            &endpoint(format!("stream/{stream}")),
            &conformance::with_options(options),
        )
        .await
        .unwrap();
    let held = conformance::receive(&mut source, "the slow message").await;
    assert!(
        tokio::time::timeout(Duration::from_secs(9), source.recv())
            .await
            .is_err(),
        "the held message was delivered again within three ack waits"
    );
    held.ack.ack();
    source.close().await;
}

#[tokio::test]
async fn the_backlog_is_what_the_consumer_has_not_delivered() {
    let (name, stream, nats) = fresh_stream("backlog").await;
    let sink = nats
        .open_sink(&endpoint(format!("subject/{name}.in")))
        .await
        .unwrap();
    for n in 0..10 {
        conformance::send_confirmed(&sink, &Message::new(format!("m{n}")))
            .await
            .unwrap();
    }
    let settings = SourceSettings {
        route: "backlog".into(),
        options: SourceOptions::none(),
        max_in_flight: 1,
        dead_letter: true,
    };
    let mut source = nats
        .open_source(&endpoint(format!("stream/{stream}")), &settings)
        .await
        .unwrap();
    let first = conformance::receive(&mut source, "the first message").await;
    let backlog = source
        .backlog()
        .expect("a JetStream source reports its backlog");
    // One message is out (max_ack_pending 1): nine are still to be delivered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending = backlog.messages().await.unwrap();
        if pending == 9 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backlog {pending}, expected 9"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.ack.ack();
    source.close().await;
}
