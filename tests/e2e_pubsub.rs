//! `bridge run` with Pub/Sub against Google's emulator: 2,000 messages Pub/Sub -> Kafka and
//! RabbitMQ -> Pub/Sub with order per ordering key, and a check from outside with Google's
//! own Python client in both directions.
#![cfg(all(feature = "pubsub", feature = "kafka", feature = "rabbitmq"))]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bridge::adapter::{Source, SourceSettings};
use bridge::message::{Message, reserved};
use serde_json::{Value, json};
use support::flow::{publish, wait_until};
use support::process::Running;
use support::tally::{Tally, numbered};
use support::{connector, init_logs, unique};

const KAFKA: &str = "127.0.0.1:9092";
const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const EMULATOR: &str = "127.0.0.1:8085";
const PROJECT: &str = "bridge-test";
const COUNT: u32 = 2_000;

fn pubsub(declare: Value) -> Value {
    json!({"type": "pubsub", "project": PROJECT, "endpoint": format!("http://{EMULATOR}"), "declare": declare})
}

fn settings(route: &str) -> SourceSettings {
    SourceSettings {
        route: route.into(),
        options: bridge::adapter::SourceOptions::none(),
        max_in_flight: 256,
        dead_letter: true,
    }
}

/// Records every arrival and checks order per key.
#[derive(Default)]
struct Ordered {
    tally: Tally,
    last: HashMap<bytes::Bytes, u32>,
    out_of_order: Vec<String>,
}

fn collect(mut source: Box<dyn Source>, seen: Arc<Mutex<Ordered>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(Some(delivery)) = source.recv().await {
            let mut seen = seen.lock().unwrap();
            seen.tally.record(&delivery.message);
            let n: u32 = delivery
                .message
                .headers
                .get_text("seq")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if let Some(key) = delivery.message.key.clone()
                && let Some(previous) = seen.last.insert(key.clone(), n)
                && previous > n
            {
                seen.out_of_order
                    .push(format!("key {key:?}: {n} after {previous}"));
            }
            drop(seen);
            delivery.ack.ack();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_each_way_keep_body_key_headers_and_order_per_key() {
    init_logs();
    let name = unique("e2e-gcp");
    let (topic_in, topic_out) = (format!("{name}-in"), format!("{name}-out"));
    let (t_out, t_dlq, q_in) = (
        format!("{name}-out"),
        format!("{name}-dlq"),
        format!("{name}-in"),
    );
    let gcp = pubsub(json!({
        "topics": [topic_in, topic_out],
        "subscriptions": [
            {"name": format!("{topic_in}-sub"), "topic": topic_in, "ordering": true},
            {"name": format!("{topic_out}-sub"), "topic": topic_out, "ordering": true},
        ],
    }));
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "declare": [{"name": t_out, "partitions": 3}, {"name": t_dlq}]});
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {"queues": [
        {"name": q_in, "arguments": {"x-expires": 900_000}}, {"name": format!("{q_in}-dlq"), "arguments": {"x-expires": 900_000}}]}});
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, format!(
        "connections:\n  gcp: {gcp}\n  kafka: {kafka}\n  rabbit: {rabbit}\nroutes:\n  - name: pubsub-to-kafka\n    from: gcp:subscription/{topic_in}-sub\n    to: kafka:{t_out}\n    dead_letter: kafka:{t_dlq}\n    ordering: key\n  - name: rabbit-to-pubsub\n    from: rabbit:queue/{q_in}\n    to: gcp:topic/{topic_out}\n    dead_letter: rabbit:queue/{q_in}-dlq\n    ordering: key\n"
    )).unwrap();
    let gcp_client = connector(&gcp).await;
    let rabbit_client = connector(&rabbit).await;
    let mut checker = kafka.clone();
    checker["group_id"] = json!(format!("{name}-checker"));
    let kafka_client = connector(&checker).await;

    let to_kafka = Arc::new(Mutex::new(Ordered::default()));
    let to_pubsub = Arc::new(Mutex::new(Ordered::default()));
    let readers = [
        collect(
            kafka_client
                .open_source(
                    &format!("test:{t_out}").parse().unwrap(),
                    &settings("check"),
                )
                .await
                .unwrap(),
            to_kafka.clone(),
        ),
        collect(
            gcp_client
                .open_source(
                    &format!("test:subscription/{topic_out}-sub")
                        .parse()
                        .unwrap(),
                    &settings("check"),
                )
                .await
                .unwrap(),
            to_pubsub.clone(),
        ),
    ];
    let running = Running::start(&routes, &dir.path().join("bridge.log"));
    let (gcp_in, rabbit_in) = (
        format!("test:topic/{topic_in}"),
        format!("test:queue/{q_in}"),
    );
    tokio::join!(
        publish(&gcp_client, &gcp_in, (0..COUNT).map(numbered), 500),
        publish(&rabbit_client, &rabbit_in, (0..COUNT).map(numbered), 500),
    );
    let total =
        || to_kafka.lock().unwrap().tally.distinct() + to_pubsub.lock().unwrap().tally.distinct();
    wait_until("every message", Duration::from_secs(240), || {
        total() >= 2 * COUNT as usize
    })
    .await;
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    for reader in readers {
        reader.abort();
    }
    for (leg, seen) in [("pubsub->kafka", &to_kafka), ("rabbit->pubsub", &to_pubsub)] {
        let seen = seen.lock().unwrap();
        println!(
            "{leg}: {} distinct, {} duplicates",
            seen.tally.distinct(),
            seen.tally.duplicates()
        );
        seen.tally.assert_intact();
        assert!(
            seen.out_of_order.is_empty(),
            "{leg}: {:?}",
            &seen.out_of_order[..seen.out_of_order.len().min(3)]
        );
    }
}

fn python() -> String {
    std::env::var("BRIDGE_PYTHON")
        .unwrap_or_else(|_| "/opt/bridge-tools/pyclients/bin/python".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn googles_python_client_and_bridge_understand_each_other() {
    init_logs();
    let name = unique("py");
    let (py_in, py_out, direct) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-direct"),
    );
    let gcp = pubsub(json!({
        "topics": [py_in, py_out, direct],
        "subscriptions": [
            {"name": format!("{py_in}-sub"), "topic": py_in, "ordering": true},
            {"name": format!("{py_out}-sub"), "topic": py_out, "ordering": true},
            {"name": format!("{direct}-sub"), "topic": direct},
        ],
    }));
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, format!(
        "connections:\n  gcp: {gcp}\nroutes:\n  - name: python-relay\n    from: gcp:subscription/{py_in}-sub\n    to: gcp:topic/{py_out}\n    dead_letter: gcp:topic/{direct}\n    ordering: key\n"
    )).unwrap();
    let gcp_client = connector(&gcp).await;
    // What bridge's own publisher writes, with a binary header, for Python to read.
    let mut rich = Message::new(vec![0u8, 1, 2]);
    rich.key = Some("direct-key".into());
    rich.headers.push("text", "value");
    rich.headers.push("binary", vec![0xffu8, 0]);
    rich.correlation_id = Some("corr-direct".into());
    publish(
        &gcp_client,
        &format!("test:topic/{direct}"),
        std::iter::once(rich),
        500,
    )
    .await;

    let running = Running::start(&routes, &dir.path().join("bridge.log"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/pubsub_check.py"
            ))
            .args([
                PROJECT,
                &py_in,
                &format!("{py_out}-sub"),
                &format!("{direct}-sub"),
                "20",
            ])
            .env("PUBSUB_EMULATOR_HOST", EMULATOR)
            .output()
            .expect("Google's Python client is installed (scripts/test.sh installs it)")
    })
    .await
    .unwrap();
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python failed: {stderr}");
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v["data_b64"].as_str().unwrap())
            .unwrap()
    };

    // Python -> bridge -> Python: data, attributes and ordering keys unchanged.
    let forwarded: Vec<&Value> = lines.iter().filter(|l| l["from"] == "out").collect();
    assert_eq!(forwarded.len(), 20, "{stderr}");
    let mut last_per_key: HashMap<String, u32> = HashMap::new();
    for line in forwarded {
        let n: u32 = line["attributes"]["seq"].as_str().unwrap().parse().unwrap();
        let mut want = vec![0u8, 255];
        want.extend(format!("python-{n}").bytes());
        assert_eq!(decode(line), want);
        assert_eq!(line["ordering_key"], format!("py-key-{}", n % 3));
        assert_eq!(line["attributes"]["origin"], "python");
        let application: Vec<&String> = line["attributes"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !reserved::is_reserved(k))
            .collect();
        assert_eq!(
            application.len(),
            2,
            "only seq and origin besides bridge-* attributes: {line}"
        );
        let key = line["ordering_key"].as_str().unwrap().to_owned();
        if let Some(previous) = last_per_key.insert(key, n) {
            assert!(previous < n, "order per ordering key");
        }
    }
    // bridge -> Python: what bridge's publisher wrote reads as the mapping table says.
    let direct = lines
        .iter()
        .find(|l| l["from"] == "direct")
        .expect("the direct message");
    assert_eq!(decode(direct), vec![0u8, 1, 2]);
    assert_eq!(direct["ordering_key"], "direct-key");
    assert_eq!(direct["attributes"]["text"], "value");
    assert_eq!(direct["attributes"]["binary"], "/wA=");
    assert_eq!(direct["attributes"][reserved::BINARY_HEADERS], "binary");
    assert_eq!(direct["attributes"]["correlation-id"], "corr-direct");
}
