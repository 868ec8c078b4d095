//! The conformance suite against SQS (standard and FIFO) and SNS, on the local moto server
//! (127.0.0.1:4566, started by scripts/brokers.sh).
#![cfg(feature = "aws")]

mod conformance;

use async_trait::async_trait;
use conformance::{Fixture, Pair, unique};
use serde_json::{Value, json};

pub const ENDPOINT: &str = "http://127.0.0.1:4566";

/// The connection every AWS test uses, with `declare` for its queues and topics.
pub fn connection(declare: Value) -> Value {
    json!({
        "type": "aws",
        "region": "us-east-1",
        "endpoint_url": ENDPOINT,
        "access_key_id": "test",
        "secret_access_key": "test",
        "declare": declare,
    })
}

/// The connection parsed, and connected to moto.
pub async fn connect(
    connection: &Value,
) -> (
    std::sync::Arc<dyn bridge::adapter::Connection>,
    std::sync::Arc<dyn bridge::adapter::Connector>,
) {
    conformance::connect(connection, &format!("moto must be running at {ENDPOINT}")).await
}

/// A queue (standard or FIFO) with a dead-letter queue after two receives.
struct Sqs {
    fifo: bool,
}

#[async_trait]
impl Fixture for Sqs {
    fn broker(&self) -> &'static str {
        "aws"
    }

    fn keeps_order(&self) -> bool {
        self.fifo
    }

    async fn fresh(&self, test: &str) -> Pair {
        let suffix = if self.fifo { ".fifo" } else { "" };
        let name = unique(test);
        let (queue, dlq, spare) = (
            format!("{name}{suffix}"),
            format!("{name}-dlq{suffix}"),
            format!("{name}-spare{suffix}"),
        );
        let connection = connection(json!({"queues": [
            {"name": dlq},
            {"name": queue, "dead_letter_queue": dlq, "max_receive_count": 2},
            {"name": spare},
        ]}));
        // moto's long poll does not notice a FIFO group unlocked by a delete during the
        // call, so FIFO tests poll briefly (real SQS does notice).
        let options = if self.fifo {
            json!({"wait_seconds": 1})
        } else {
            Value::Null
        };
        let (parsed, connector) = connect(&connection).await;
        Pair {
            connection: parsed,
            connector,
            sink: format!("sys:sqs/{queue}").parse().unwrap(),
            source: format!("sys:sqs/{queue}").parse().unwrap(),
            source_options: options.clone(),
            broker_dead_letter: Some((format!("sys:sqs/{dlq}").parse().unwrap(), options)),
            spare: format!("sys:sqs/{spare}").parse().unwrap(),
            spare_source: format!("sys:sqs/{spare}").parse().unwrap(),
            connection_yaml: connection.to_string(),
        }
    }
}

/// A topic with a queue subscribed (SNS envelope on), read as an SNS source.
struct Sns;

#[async_trait]
impl Fixture for Sns {
    fn broker(&self) -> &'static str {
        "aws"
    }

    fn keeps_order(&self) -> bool {
        false
    }

    async fn fresh(&self, test: &str) -> Pair {
        let name = unique(test);
        let (topic, queue, dlq, spare) = (
            name.clone(),
            format!("{name}-sub"),
            format!("{name}-dlq"),
            format!("{name}-spare"),
        );
        let connection = connection(json!({
            "queues": [{"name": dlq}, {"name": queue, "dead_letter_queue": dlq, "max_receive_count": 2}, {"name": spare}],
            "topics": [{"name": topic, "subscriptions": [{"queue": queue}]}],
        }));
        let (parsed, connector) = connect(&connection).await;
        Pair {
            connection: parsed,
            connector,
            sink: format!("sys:sns/{topic}").parse().unwrap(),
            source: format!("sys:sns/{topic}").parse().unwrap(),
            source_options: json!({"queue": queue}),
            broker_dead_letter: Some((
                format!("sys:sns/{topic}").parse().unwrap(),
                json!({"queue": dlq}),
            )),
            spare: format!("sys:sqs/{spare}").parse().unwrap(),
            spare_source: format!("sys:sqs/{spare}").parse().unwrap(),
            connection_yaml: connection.to_string(),
        }
    }
}

mod sqs {
    use super::*;
    conformance_tests!(Sqs { fifo: false });
}

mod sqs_fifo {
    use super::*;
    conformance_tests!(Sqs { fifo: true });
}

mod sns {
    use super::*;
    conformance_tests!(Sns);
}
