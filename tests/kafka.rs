//! The conformance suite against the local Kafka-protocol broker (tansu on 127.0.0.1:9092,
//! started by scripts/brokers.sh).
#![cfg(feature = "kafka")]

mod conformance;

use async_trait::async_trait;
use bridge::adapter::{ConnectContext, ConnectionSpec, System};
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
        let mut fields = connection.clone();
        fields.as_object_mut().unwrap().remove("type");
        let spec = ConnectionSpec::parse(System::Kafka, fields).unwrap();
        let connector = spec
            .connect("sys", &ConnectContext::default())
            .await
            .unwrap_or_else(|e| {
                panic!("Kafka must be running at {BROKERS} (scripts/brokers.sh up): {e}")
            });
        Pair {
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
