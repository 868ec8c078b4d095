//! The conformance suite against the project's own Redis (127.0.0.1:6390, started by
//! scripts/brokers.sh), and the adapter's own behaviours: a consumer group shared by two
//! consumers, entries a crashed consumer left pending claimed by another, ACL credentials.
#![cfg(feature = "redis")]

mod conformance;

use std::time::Duration;

use async_trait::async_trait;
use bridge::adapter::SourceSettings;
use bridge::message::Message;
use conformance::{Fixture, Pair, unique};
use serde_json::json;

pub const URL: &str = "redis://127.0.0.1:6390/0";

/// Two fresh streams per test; the source is a consumer group created at the stream's
/// start. A stream has no reject, so rejects are checked through the route's dead letter.
struct Redis;

#[async_trait]
impl Fixture for Redis {
    fn broker(&self) -> &'static str {
        "redis"
    }

    async fn fresh(&self, test: &str) -> Pair {
        let name = unique(test);
        let connection = json!({
            "type": "redis",
            "url": URL,
            "declare": {"streams": [{"name": name}, {"name": format!("{name}-spare")}]},
        });
        let (parsed, connector) = conformance::connect(
            &connection,
            &format!("the project's Redis must be running at {URL}"),
        )
        .await;
        Pair {
            connection: parsed,
            connector,
            sink: format!("sys:stream/{name}").parse().unwrap(),
            source: format!("sys:stream/{name}").parse().unwrap(),
            source_options: json!({"claim_idle_ms": 2000}),
            broker_dead_letter: None,
            spare: format!("sys:stream/{name}-spare").parse().unwrap(),
            spare_source: format!("sys:stream/{name}-spare").parse().unwrap(),
            connection_yaml: connection.to_string(),
        }
    }
}

conformance_tests!(Redis);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_peeked_then_taken_once() {
    conformance::init_logs();
    conformance::dead_letters_are_peeked_then_taken_once(&Redis).await;
}

fn settings(pair: &Pair, consumer: &str) -> SourceSettings {
    let mut options = pair.source_options.clone();
    options["group"] = json!("shared");
    options["consumer"] = json!(consumer);
    SourceSettings {
        route: "group-test".into(),
        options: pair
            .connection
            .source_options(&pair.source.path, &options)
            .unwrap(),
        max_in_flight: 16,
        dead_letter: true,
    }
}

/// Two consumers of one group split the entries; what one took and never settled (it
/// crashed) is claimed by the other after `claim_idle_ms`, with its delivery count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_splits_entries_and_claims_what_a_crashed_consumer_left() {
    conformance::init_logs();
    let pair = Redis.fresh("group").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut first = pair
        .connector
        .open_source(&pair.source, &settings(&pair, "a"))
        .await
        .unwrap();
    for n in 0..2 {
        conformance::send_confirmed(&sink, &Message::new(format!("m{n}")))
            .await
            .unwrap();
    }
    // The first consumer takes both and "crashes" holding them: they stay pending with it.
    let held = [
        conformance::receive(&mut first, "an entry").await,
        conformance::receive(&mut first, "an entry").await,
    ];
    std::mem::forget(held);
    first.close().await;
    for n in 2..4 {
        conformance::send_confirmed(&sink, &Message::new(format!("m{n}")))
            .await
            .unwrap();
    }
    let mut second = pair
        .connector
        .open_source(&pair.source, &settings(&pair, "b"))
        .await
        .unwrap();
    let mut bodies = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..4 {
        let delivery = tokio::time::timeout(
            Duration::from_secs(20),
            conformance::receive(&mut second, "every entry"),
        )
        .await
        .expect("claimed in time");
        bodies.push(String::from_utf8_lossy(&delivery.message.body).into_owned());
        counts.push(delivery.message.origin().unwrap().receive_count.unwrap());
        delivery.ack.ack();
    }
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3"]);
    assert_eq!(counts.iter().filter(|&&c| c == 2).count(), 2, "{counts:?}");
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_connects_and_a_wrong_password_is_refused_without_showing_it() {
    let good = json!({"type": "redis", "url": "redis://bridge:bridge-pw@127.0.0.1:6390/0"});
    let (_, connector) = conformance::connect(&good, "the project's Redis").await;
    let endpoint = format!("sys:stream/{}", unique("acl")).parse().unwrap();
    let sink = connector.open_sink(&endpoint).await.unwrap();
    conformance::send_confirmed(&sink, &Message::new("x"))
        .await
        .unwrap();
    let bad = json!({"type": "redis", "url": "redis://bridge:Wr0ng-canary@127.0.0.1:6390/0"});
    let connection = bridge::adapter::connection_from_json(&bad).unwrap();
    let error = connection
        .connect(&bridge::adapter::ConnectContext::default())
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("Wr0ng-canary"), "{text}");
}
