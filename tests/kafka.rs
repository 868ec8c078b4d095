//! The conformance suite against the local Kafka-protocol broker (tansu on 127.0.0.1:9092,
//! started by scripts/brokers.sh).
#![cfg(feature = "kafka")]

mod conformance;

use async_trait::async_trait;
use conformance::{Fixture, Pair, unique};

pub const BROKERS: &str = "127.0.0.1:9092";

struct Kafka;

#[async_trait]
impl Fixture for Kafka {
    fn broker(&self) -> &'static str {
        "kafka"
    }

    async fn fresh(&self, test: &str) -> Pair {
        let topic = unique(test);
        let spare = format!("{topic}-spare");
        let connection = serde_json::json!({
            "type": "kafka",
            "brokers": BROKERS,
            "group_id": topic,
            "declare": [{"name": topic, "partitions": 3}, {"name": spare}],
        });
        let (parsed, connector) =
            conformance::connect(&connection, &format!("Kafka must be running at {BROKERS}")).await;
        Pair {
            connection: parsed,
            connector,
            sink: format!("sys:{topic}").parse().unwrap(),
            source: format!("sys:{topic}").parse().unwrap(),
            source_options: serde_json::Value::Null,
            broker_dead_letter: None,
            spare: format!("sys:{spare}").parse().unwrap(),
            spare_source: format!("sys:{spare}").parse().unwrap(),
            connection_yaml: connection.to_string(),
        }
    }
}

conformance_tests!(Kafka);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_peeked_then_taken_once() {
    conformance::init_logs();
    conformance::dead_letters_are_peeked_then_taken_once(&Kafka).await;
}
