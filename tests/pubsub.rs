//! The conformance suite against Google's Pub/Sub emulator (127.0.0.1:8085, started by
//! scripts/brokers.sh).
#![cfg(feature = "pubsub")]

mod conformance;

use async_trait::async_trait;
use conformance::{Fixture, Pair, unique};
use serde_json::json;

pub const ENDPOINT: &str = "http://127.0.0.1:8085";
pub const PROJECT: &str = "bridge-test";

/// A topic with an ordered subscription, read with 10-second leases.
///
/// The emulator (0.8.20) does not forward to a dead-letter topic through streaming pull
/// (its stream fails with UNKNOWN once the attempts run out), so rejects are checked
/// through the route's dead letter, as for Kafka; unary pulls (Python client) do forward.
struct PubSub;

#[async_trait]
impl Fixture for PubSub {
    fn broker(&self) -> &'static str {
        "pubsub"
    }

    fn reopened_consumer_receives(&self) -> bool {
        false
    }

    async fn fresh(&self, test: &str) -> Pair {
        let topic = unique(test);
        let connection = json!({
            "type": "pubsub",
            "project": PROJECT,
            "endpoint": ENDPOINT,
            "declare": {
                "topics": [topic, format!("{topic}-spare"), format!("{topic}-dlq")],
                "subscriptions": [
                    {"name": format!("{topic}-spare-sub"), "topic": format!("{topic}-spare")},
                    // The dead-letter policy makes Pub/Sub count delivery attempts.
                    {"name": format!("{topic}-sub"), "topic": topic, "ordering": true, "ack_deadline_seconds": 10,
                     "dead_letter_topic": format!("{topic}-dlq"), "max_delivery_attempts": 5},
                ],
            },
        });
        let (parsed, connector) = conformance::connect(
            &connection,
            &format!("the Pub/Sub emulator must be running at {ENDPOINT}"),
        )
        .await;
        Pair {
            connection: parsed,
            connector,
            sink: format!("sys:topic/{topic}").parse().unwrap(),
            source: format!("sys:subscription/{topic}-sub").parse().unwrap(),
            source_options: json!({"lease_seconds": 10}),
            broker_dead_letter: None,
            spare: format!("sys:topic/{topic}-spare").parse().unwrap(),
            spare_source: format!("sys:subscription/{topic}-spare-sub")
                .parse()
                .unwrap(),
            connection_yaml: connection.to_string(),
        }
    }
}

conformance_tests!(PubSub);
