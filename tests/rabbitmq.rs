//! The conformance suite against the local RabbitMQ (127.0.0.1:5672, guest/guest).
#![cfg(feature = "rabbitmq")]

mod conformance;

use async_trait::async_trait;
use conformance::{Fixture, Pair, unique};

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct RabbitMq;

#[async_trait]
impl Fixture for RabbitMq {
    fn broker(&self) -> &'static str {
        "rabbitmq"
    }

    async fn fresh(&self, test: &str) -> Pair {
        let queue = unique(test);
        let expires = serde_json::json!({"x-expires": 600_000});
        let connection = serde_json::json!({
            "type": "rabbitmq",
            "url": URL,
            "declare": {
                "exchanges": [{"name": format!("{queue}-dlx"), "kind": "fanout", "durable": false}],
                "queues": [
                    {"name": format!("{queue}-dlq"), "durable": false, "arguments": expires,
                     "bindings": [{"exchange": format!("{queue}-dlx")}]},
                    {"name": queue, "durable": false, "arguments": expires,
                     "dead_letter_exchange": format!("{queue}-dlx")},
                    {"name": format!("{queue}-spare"), "durable": false, "arguments": expires},
                ],
            },
        });
        let (parsed, connector) =
            conformance::connect(&connection, "RabbitMQ must be running at 127.0.0.1:5672").await;
        Pair {
            connection: parsed,
            connector,
            sink: format!("sys:queue/{queue}").parse().unwrap(),
            source: format!("sys:queue/{queue}").parse().unwrap(),
            source_options: serde_json::Value::Null,
            broker_dead_letter: Some((
                format!("sys:queue/{queue}-dlq").parse().unwrap(),
                serde_json::Value::Null,
            )),
            spare: format!("sys:queue/{queue}-spare").parse().unwrap(),
            spare_source: format!("sys:queue/{queue}-spare").parse().unwrap(),
            connection_yaml: connection.to_string(),
        }
    }
}

conformance_tests!(RabbitMq);
