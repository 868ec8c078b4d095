//! `bridge run` with SQS and SNS against moto and the local Kafka: volume both ways with
//! every header (15 on some messages), FIFO order per group, a too-large message
//! dead-lettered with its reason, and sinks slower than the visibility timeout.
#![cfg(all(feature = "aws", feature = "kafka", feature = "rabbitmq"))]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::adapter::{SourceOptions, SourceSettings};
use bridge::message::{Message, reserved};
use serde_json::{Value, json};
use support::flow::{collect, publish, wait_until};
use support::process::Running;
use support::tally::{Tally, numbered};
use support::{connector, init_logs, unique};

const KAFKA: &str = "127.0.0.1:9092";
const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const COUNT: u32 = 2_000;

fn aws(declare: Value) -> Value {
    json!({"type": "aws", "region": "us-east-1", "endpoint_url": "http://127.0.0.1:4566",
           "access_key_id": "test", "secret_access_key": "test", "declare": declare})
}

fn settings(options: SourceOptions) -> SourceSettings {
    SourceSettings {
        route: "checker".into(),
        options,
        max_in_flight: 256,
        dead_letter: true,
    }
}

fn write_routes(dir: &tempfile::TempDir, routes: &str) -> std::path::PathBuf {
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, routes).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_each_way_between_sqs_sns_and_kafka_arrive_intact() {
    init_logs();
    let name = unique("e2e-aws");
    let (q_in, topic, q_sub) = (
        format!("{name}-in"),
        format!("{name}-topic"),
        format!("{name}-sub"),
    );
    let (t_in, t_out, t_dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    let aws = aws(json!({
        "queues": [{"name": format!("{q_in}-dlq")}, {"name": q_in, "dead_letter_queue": format!("{q_in}-dlq")}, {"name": q_sub}],
        "topics": [{"name": topic, "subscriptions": [{"queue": q_sub}]}],
    }));
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "declare": [{"name": t_in, "partitions": 3}, {"name": t_out, "partitions": 3}, {"name": t_dlq}]});
    let dir = tempfile::tempdir().unwrap();
    let routes = write_routes(
        &dir,
        &format!(
            "connections:\n  aws: {aws}\n  kafka: {kafka}\nroutes:\n  - name: sqs-to-kafka\n    from: aws:sqs/{q_in}\n    to: kafka:{t_out}\n    dead_letter: kafka:{t_dlq}\n  - name: kafka-to-sns\n    from: kafka:{t_in}\n    to: aws:sns/{topic}\n    dead_letter: kafka:{t_dlq}\n"
        ),
    );
    let aws_client = connector(&aws).await;
    let mut checker = kafka.clone();
    checker["group_id"] = json!(format!("{name}-checker"));
    let kafka_client = connector(&checker).await;

    let to_kafka = Arc::new(Mutex::new(Tally::default()));
    let via_sns = Arc::new(Mutex::new(Tally::default()));
    let readers = [
        collect(
            kafka_client
                .open_source(
                    &format!("test:{t_out}").parse().unwrap(),
                    &settings(SourceOptions::none()),
                )
                .await
                .unwrap(),
            to_kafka.clone(),
        ),
        collect(
            aws_client
                .open_source(
                    &format!("test:sns/{topic}").parse().unwrap(),
                    &settings(support::source_options(
                        &aws,
                        &format!("sns/{topic}"),
                        &json!({"queue": q_sub}),
                    )),
                )
                .await
                .unwrap(),
            via_sns.clone(),
        ),
    ];
    let running = Running::start(&routes, &dir.path().join("bridge.log"));
    // moto slows down as a queue grows, so publish while bridge drains.
    let started = std::time::Instant::now();
    // moto spends time in proportion to a queue's length on every call, so messages are
    // published in steps that keep at most a few hundred waiting.
    let (sqs_in, kafka_in) = (format!("test:sqs/{q_in}"), format!("test:{t_in}"));
    for step in 0..COUNT / 200 {
        let range = step * 200..(step + 1) * 200;
        tokio::join!(
            publish(&aws_client, &sqs_in, range.clone().map(numbered), 200),
            publish(&kafka_client, &kafka_in, range.map(numbered), 200),
        );
        let published = ((step + 1) * 200) as usize;
        wait_until("the bridge to catch up", Duration::from_secs(120), || {
            to_kafka.lock().unwrap().distinct() + 200 >= published
                && via_sns.lock().unwrap().distinct() + 200 >= published
        })
        .await;
    }
    println!("published after {:?}", started.elapsed());
    let total = || to_kafka.lock().unwrap().distinct() + via_sns.lock().unwrap().distinct();
    wait_until("every message", Duration::from_secs(300), || {
        total() >= 2 * COUNT as usize
    })
    .await;
    println!("all arrived after {:?}", started.elapsed());
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    for reader in readers {
        reader.abort();
    }
    let (to_kafka, via_sns) = (to_kafka.lock().unwrap(), via_sns.lock().unwrap());
    println!(
        "duplicates: sqs->kafka {}, kafka->sns->sqs {}",
        to_kafka.duplicates(),
        via_sns.duplicates()
    );
    to_kafka.assert_intact();
    via_sns.assert_intact();
    assert_eq!(to_kafka.duplicates(), 0);
    assert_eq!(via_sns.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_route_keeps_order_within_each_of_four_groups() {
    init_logs();
    let name = unique("e2e-fifo");
    let (queue, t_out, t_dlq) = (
        format!("{name}.fifo"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    let aws = aws(
        json!({"queues": [{"name": format!("{name}-dlq.fifo")}, {"name": queue, "dead_letter_queue": format!("{name}-dlq.fifo")}]}),
    );
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "declare": [{"name": t_out, "partitions": 3}, {"name": t_dlq}]});
    let dir = tempfile::tempdir().unwrap();
    // wait_seconds 1: moto's long poll misses FIFO groups unlocked during the call.
    let routes = write_routes(
        &dir,
        &format!(
            "connections:\n  aws: {aws}\n  kafka: {kafka}\nroutes:\n  - name: fifo-to-kafka\n    from: {{endpoint: 'aws:sqs/{queue}', options: {{wait_seconds: 1}}}}\n    to: kafka:{t_out}\n    dead_letter: kafka:{t_dlq}\n    ordering: key\n    max_in_flight: 16\n"
        ),
    );
    let aws_client = connector(&aws).await;
    let mut checker = kafka.clone();
    checker["group_id"] = json!(format!("{name}-checker"));
    let kafka_client = connector(&checker).await;
    let messages = (0..200u32).map(|n| {
        let mut message = Message::new(format!("{n}"));
        message.key = Some(format!("group-{}", n % 4).into());
        message
    });
    publish(&aws_client, &format!("test:sqs/{queue}"), messages, 200).await;
    let running = Running::start(&routes, &dir.path().join("bridge.log"));
    let mut out = kafka_client
        .open_source(
            &format!("test:{t_out}").parse().unwrap(),
            &settings(SourceOptions::none()),
        )
        .await
        .unwrap();
    let mut last: HashMap<bytes::Bytes, u32> = HashMap::new();
    for _ in 0..200 {
        let delivery = tokio::time::timeout(Duration::from_secs(120), out.recv())
            .await
            .expect("messages keep coming")
            .unwrap()
            .unwrap();
        let key = delivery.message.key.clone().unwrap();
        let n: u32 = std::str::from_utf8(&delivery.message.body)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(key, format!("group-{}", n % 4));
        if let Some(previous) = last.insert(key.clone(), n) {
            assert!(previous < n, "group {key:?}: {n} after {previous}");
        }
        delivery.ack.ack();
    }
    assert_eq!(last.len(), 4);
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_the_size_limit_is_dead_lettered_with_its_reason() {
    init_logs();
    let name = unique("e2e-large");
    let (q_in, q_dlq, sqs_out) = (
        format!("{name}-in"),
        format!("{name}-dlq"),
        format!("{name}-out"),
    );
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {"queues": [
        {"name": q_in, "arguments": {"x-expires": 900_000}}, {"name": q_dlq, "arguments": {"x-expires": 900_000}}]}});
    let aws = aws(json!({"queues": [{"name": sqs_out}]}));
    let dir = tempfile::tempdir().unwrap();
    let routes = write_routes(
        &dir,
        &format!(
            "connections:\n  rabbit: {rabbit}\n  aws: {aws}\nroutes:\n  - name: to-sqs\n    from: rabbit:queue/{q_in}\n    to: aws:sqs/{sqs_out}\n    dead_letter: rabbit:queue/{q_dlq}\n"
        ),
    );
    let rabbit_client = connector(&rabbit).await;
    let aws_client = connector(&aws).await;
    let big = Message::new(vec![b'x'; 1_100_000]);
    let small = Message::new("small");
    publish(
        &rabbit_client,
        &format!("test:queue/{q_in}"),
        [big, small].into_iter(),
        200,
    )
    .await;
    let running = Running::start(&routes, &dir.path().join("bridge.log"));
    let mut dead = rabbit_client
        .open_source(
            &format!("test:queue/{q_dlq}").parse().unwrap(),
            &settings(SourceOptions::none()),
        )
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(60), dead.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(letter.message.body.len(), 1_100_000);
    let header = |n: &str| {
        letter
            .message
            .headers
            .get_text(n)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(reserved::DLQ_ERROR_CLASS), "permanent");
    assert!(
        header(reserved::DLQ_ERROR).contains("takes at most 1048576"),
        "{}",
        header(reserved::DLQ_ERROR)
    );
    assert_eq!(header(reserved::DLQ_SINK), format!("aws:sqs/{sqs_out}"));
    letter.ack.ack();
    let mut out = aws_client
        .open_source(
            &format!("test:sqs/{sqs_out}").parse().unwrap(),
            &settings(SourceOptions::none()),
        )
        .await
        .unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(60), out.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(arrived.message.body, "small");
    arrived.ack.ack();
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_slower_than_the_visibility_timeout_cause_no_redelivery() {
    init_logs();
    let name = unique("e2e-slow");
    let (queue, dlq) = (format!("{name}-in"), format!("{name}-dlq"));
    let aws = aws(json!({"queues": [{"name": dlq},
        {"name": queue, "dead_letter_queue": dlq, "attributes": {"VisibilityTimeout": "6"}}]}));
    let yaml = format!(
        "connections:\n  aws: {aws}\n  mem: {{type: memory}}\nroutes:\n  - name: slow\n    from: aws:sqs/{queue}\n    to: mem:slow\n    dead_letter: mem:dlq\n"
    );
    let aws_client = connector(&aws).await;
    publish(
        &aws_client,
        &format!("test:sqs/{queue}"),
        (0..20).map(|n| Message::new(format!("{n}"))),
        200,
    )
    .await;
    let harness = support::start(&yaml).await;
    let slow = harness.queue("slow");
    slow.hold();
    support::wait_for(&slow, "20 sends held", |q| q.held() == 20).await;
    // Two and a half visibility timeouts pass while the sink has not confirmed.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(slow.held(), 20, "no message was received a second time");
    slow.release();
    support::wait_for(&slow, "20 messages stored", |q| q.len() == 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(slow.len(), 20, "each message exactly once");
    assert!(harness.queue("dlq").is_empty());
    assert!(harness.stop().await.is_clean());
    let mut left = aws_client
        .open_source(
            &format!("test:sqs/{queue}").parse().unwrap(),
            &settings(support::source_options(
                &aws,
                &format!("sqs/{queue}"),
                &json!({"wait_seconds": 1}),
            )),
        )
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(4), left.recv())
            .await
            .is_err(),
        "the queue is empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_sqs_with_a_jq_projection_of_the_body() {
    init_logs();
    let name = unique("e2e-jq");
    let (topic, dead, sqs_out) = (
        format!("{name}-in"),
        format!("{name}-dead"),
        format!("{name}-out"),
    );
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "declare": [{"name": topic}, {"name": dead}]});
    let aws = aws(json!({"queues": [{"name": sqs_out}]}));
    let dir = tempfile::tempdir().unwrap();
    let routes = write_routes(
        &dir,
        &format!(
            "connections:\n  kafka: {kafka}\n  aws: {aws}\nroutes:\n  - name: project\n    from: kafka:{topic}\n    to: aws:sqs/{sqs_out}\n    dead_letter: kafka:{dead}\n    transform:\n      body: {{jq: '{{id: .order.id, total: (.items | map(.price) | add)}}'}}\n      headers: {{set: {{origin-topic: '{{{{ origin.topic }}}}'}}}}\n"
        ),
    );
    let kafka_client = connector(&kafka).await;
    let aws_client = connector(&aws).await;
    let mut order = Message::new(
        r#"{"order": {"id": "o-42", "note": "left out"}, "items": [{"price": 3}, {"price": 4}]}"#,
    );
    order.headers.push("tenant", "acme");
    publish(&kafka_client, &format!("test:{topic}"), [order], 10).await;
    let running = Running::start(&routes, &dir.path().join("bridge.log"));
    let mut out = aws_client
        .open_source(
            &format!("test:sqs/{sqs_out}").parse().unwrap(),
            &settings(SourceOptions::none()),
        )
        .await
        .unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(90), out.recv())
        .await
        .expect("the projection arrives in time")
        .unwrap()
        .unwrap();
    let message = &arrived.message;
    assert_eq!(message.body, r#"{"id":"o-42","total":7}"#);
    assert_eq!(message.content_type.as_deref(), Some("application/json"));
    assert_eq!(message.headers.get_text("tenant"), Some("acme"));
    assert_eq!(
        message.headers.get_text("origin-topic"),
        Some(topic.as_str())
    );
    arrived.ack.ack();
    out.close().await;
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
}

/// What a consumer that is not bridge finds in an SQS queue: each message's attribute
/// names, in the order of its headers' numbers.
async fn native_attribute_names(queue: &str, count: usize) -> Vec<Vec<String>> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:4566")
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < count && std::time::Instant::now() < deadline {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .message_attribute_names("All")
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in received.messages.unwrap_or_default() {
            let mut names: Vec<String> = message
                .message_attributes
                .unwrap_or_default()
                .into_keys()
                .collect();
            names.sort();
            seen.push(names);
        }
    }
    seen.sort_by_key(Vec::len);
    seen
}

/// `n` application headers, `h00`...
fn with_headers(n: usize) -> Message {
    let mut message = Message::new(format!("{n} headers"));
    for i in 0..n {
        message.headers.push(format!("h{i:02}"), format!("v{i}"));
    }
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_consumer_finds_the_applications_headers_as_attributes() {
    init_logs();
    let name = unique("e2e-native");
    let [q_kafka, q_in, q_sns, q_back] =
        ["kafka", "in", "sns", "back"].map(|q| format!("{name}-{q}"));
    let topic = format!("{name}-topic");
    let (r_in, r_mid, r_dlq) = (
        format!("{name}-in"),
        format!("{name}-mid"),
        format!("{name}-dlq"),
    );
    let (t_in, t_dead) = (format!("{name}-in"), format!("{name}-dead"));
    let aws = aws(json!({
        "queues": [{"name": q_kafka}, {"name": q_in}, {"name": q_sns}, {"name": q_back}],
        "topics": [{"name": topic, "subscriptions": [{"queue": q_sns, "raw": true}]}],
    }));
    let expires = json!({"x-expires": 900_000});
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {"queues": [
        {"name": r_in, "arguments": expires}, {"name": r_mid, "arguments": expires}, {"name": r_dlq, "arguments": expires}]}});
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "declare": [{"name": t_in}, {"name": t_dead}]});
    let dir = tempfile::tempdir().unwrap();
    let routes = write_routes(
        &dir,
        &format!(
            "connections:\n  aws: {aws}\n  kafka: {kafka}\n  rabbit: {rabbit}\nroutes:
  - {{name: kafka-to-sqs, from: 'kafka:{t_in}', to: 'aws:sqs/{q_kafka}', dead_letter: 'kafka:{t_dead}'}}
  - {{name: rabbit-to-sns, from: 'rabbit:queue/{r_in}', to: 'aws:sns/{topic}', dead_letter: 'rabbit:queue/{r_dlq}'}}
  - {{name: sqs-to-rabbit, from: 'aws:sqs/{q_in}', to: 'rabbit:queue/{r_mid}', dead_letter: 'rabbit:queue/{r_dlq}'}}
  - {{name: rabbit-to-sqs, from: 'rabbit:queue/{r_mid}', to: 'aws:sqs/{q_back}', dead_letter: 'rabbit:queue/{r_dlq}'}}
"
        ),
    );
    let aws_client = connector(&aws).await;
    let kafka_client = connector(&kafka).await;
    let rabbit_client = connector(&rabbit).await;
    let running = Running::start(&routes, &dir.path().join("bridge.log"));
    let sent = || [with_headers(9), with_headers(15)];
    publish(&kafka_client, &format!("test:{t_in}"), sent(), 10).await;
    publish(&rabbit_client, &format!("test:queue/{r_in}"), sent(), 10).await;
    publish(&aws_client, &format!("test:sqs/{q_in}"), sent(), 10).await;
    let nine: Vec<String> = (0..9).map(|i| format!("h{i:02}")).collect();
    for (path, queue) in [
        ("Kafka -> SQS", &q_kafka),
        ("RabbitMQ -> SNS -> SQS", &q_sns),
        ("SQS -> RabbitMQ -> SQS", &q_back),
    ] {
        let seen = native_attribute_names(queue, 2).await;
        assert_eq!(seen.len(), 2, "{path}: {seen:?}");
        // Both: the first nine headers as attributes of their own; with 15, the other six
        // packed, with whatever of bridge's bookkeeping found no room.
        for names in &seen {
            let own: Vec<&String> = names.iter().filter(|n| n.starts_with('h')).collect();
            assert_eq!(own, nine.iter().collect::<Vec<_>>(), "{path}: {names:?}");
            assert!(names.len() <= 10, "{path}: {names:?}");
        }
        assert!(
            seen.iter()
                .any(|names| names.iter().any(|n| n == "bridge-headers")),
            "{path}: {seen:?}"
        );
    }
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sns_subject_set_from_a_template_is_read_back_as_origin_subject() {
    init_logs();
    let name = unique("e2e-subject");
    let (t_in, t_dead, topic, q_sub) = (
        format!("{name}-in"),
        format!("{name}-dead"),
        format!("{name}-topic"),
        format!("{name}-sub"),
    );
    let aws = aws(json!({
        "queues": [{"name": q_sub}],
        "topics": [{"name": topic, "subscriptions": [{"queue": q_sub}]}],
    }));
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{name}-bridge"),
        "declare": [{"name": t_in}, {"name": t_dead}]});
    let dir = tempfile::tempdir().unwrap();
    let routes = write_routes(
        &dir,
        &format!(
            "connections:\n  aws: {aws}\n  kafka: {kafka}\nroutes:\n  - name: alerts\n    from: kafka:{t_in}\n    to:\n      endpoint: aws:sns/{topic}\n      transform: {{headers: {{set: {{sns-subject: 'Order {{{{ body.id }}}} shipped'}}}}}}\n    dead_letter: kafka:{t_dead}\n"
        ),
    );
    let aws_client = connector(&aws).await;
    let kafka_client = connector(&kafka).await;
    publish(
        &kafka_client,
        &format!("test:{t_in}"),
        [Message::new(r#"{"id": "o-7"}"#)],
        10,
    )
    .await;
    let running = Running::start(&routes, &dir.path().join("bridge.log"));
    let mut notifications = aws_client
        .open_source(
            &format!("test:sns/{topic}").parse().unwrap(),
            &settings(support::source_options(
                &aws,
                &format!("sns/{topic}"),
                &json!({"queue": q_sub}),
            )),
        )
        .await
        .unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(90), notifications.recv())
        .await
        .expect("the notification in time")
        .unwrap()
        .unwrap();
    let origin = arrived.message.origin().cloned().unwrap();
    assert_eq!(
        origin.field("subject"),
        Some(&bridge::message::OriginValue::text("Order o-7 shipped"))
    );
    assert_eq!(arrived.message.body, r#"{"id": "o-7"}"#);
    assert_eq!(
        arrived.message.headers.get("sns-subject"),
        None,
        "the Subject, not a header"
    );
    arrived.ack.ack();
    notifications.close().await;
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
}
