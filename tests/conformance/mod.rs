//! The adapter conformance suite: the same behaviours, checked against every real broker.
//!
//! Each adapter's test file implements [`Fixture`] and invokes [`conformance_tests!`],
//! which expands to one test per behaviour. Tests whose name contains `broker_restart`
//! stop and start the broker and run serially after the others (see scripts/test.sh).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bridge::adapter::{
    ConnectContext, Connection, Connector, Delivery, OriginField, SendError, Sink, Source,
    SourceOptions, SourceSettings,
};
use bridge::address::Endpoint;
use bridge::message::{HeaderValue, Message, Origin};

/// How long a test waits for a message that should arrive.
pub const ARRIVAL: Duration = Duration::from_secs(20);
/// How long a test waits to be sure a message does not arrive.
pub const SILENCE: Duration = Duration::from_secs(4);

/// A fresh source/sink pair on one broker, owned by one test.
pub struct Pair {
    /// The connection as parsed from its routes-file form, which checks source options.
    pub connection: Arc<dyn Connection>,
    pub connector: Arc<dyn Connector>,
    /// Where the sink writes and the source reads (the same queue or topic).
    pub sink: Endpoint,
    pub source: Endpoint,
    /// Options of a source on `source` (e.g. the queue an SNS source reads).
    pub source_options: serde_json::Value,
    /// Where rejected messages end up, for systems with a dead-letter mechanism of their
    /// own, with the options of a source reading it.
    pub broker_dead_letter: Option<(Endpoint, serde_json::Value)>,
    /// A second empty endpoint on the same connection, to write to ...
    pub spare: Endpoint,
    /// ... and to read it from (the same path except on Pub/Sub: topic vs subscription).
    pub spare_source: Endpoint,
    /// The connection as a routes-file mapping (one line of flow YAML), named `sys`.
    pub connection_yaml: String,
}

/// What the suite needs from one adapter.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The broker's name for `scripts/brokers.sh pause|resume`.
    fn broker(&self) -> &'static str;
    /// A connector and a new, empty endpoint pair.
    async fn fresh(&self, test: &str) -> Pair;
    /// Whether the system keeps per-key order (Kafka partitions, FIFO groups, one queue).
    fn keeps_order(&self) -> bool {
        true
    }
    /// Whether a second consumer opened on the same source sees what the first left
    /// (Google's Pub/Sub emulator often delivers nothing to a reopened stream).
    fn reopened_consumer_receives(&self) -> bool {
        true
    }
    /// Removes what `fresh` created (best effort).
    async fn cleanup(&self, _pair: &Pair) {}
}

/// Sends bridge's logs to the test output (level from `BRIDGE_LOG`, default `warn`).
pub fn init_logs() {
    let filter = std::env::var("BRIDGE_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

pub fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("conf-{test}-{}-{nanos}", std::process::id()).replace('_', "-")
}

/// Parses `connection` (JSON with its `type`, as a routes file has it) and connects,
/// failing the test with `needs` (what must be running) when it cannot.
pub async fn connect(
    connection: &serde_json::Value,
    needs: &str,
) -> (Arc<dyn Connection>, Arc<dyn Connector>) {
    let parsed = bridge::adapter::connection_from_json(connection).unwrap();
    let connector = parsed
        .connect(&ConnectContext::default())
        .await
        .unwrap_or_else(|e| panic!("{needs} (scripts/brokers.sh up): {e}"));
    (parsed, connector)
}

pub fn settings() -> SourceSettings {
    with_options(SourceOptions::none())
}

/// Settings of a source on `endpoint` with `options` as a routes file's `from.options`.
pub fn settings_for(
    pair: &Pair,
    endpoint: &Endpoint,
    options: &serde_json::Value,
) -> SourceSettings {
    with_options(
        pair.connection
            .source_options(&endpoint.path, options)
            .unwrap(),
    )
}

pub fn with_options(options: SourceOptions) -> SourceSettings {
    SourceSettings {
        route: "conformance".into(),
        options,
        max_in_flight: 64,
        dead_letter: true,
    }
}

/// Opens a source on the pair's source endpoint.
pub async fn open_source(pair: &Pair) -> Box<dyn Source> {
    pair.connector
        .open_source(
            &pair.source,
            &settings_for(pair, &pair.source, &pair.source_options),
        )
        .await
        .unwrap()
}

/// A message that uses every envelope field.
pub fn rich_message(n: usize) -> Message {
    let mut message = Message::new(vec![0u8, 159, 146, 150, n as u8, 0xff]);
    message.key = Some(format!("key-{n}").into());
    message.headers.push("text-header", format!("value-{n}"));
    message.headers.push("binary-header", vec![0u8, 1, 2, 0xfe]);
    message.headers.push("utf8-binary", vec![b'o', b'k']);
    message.correlation_id = Some(format!("corr-{n}"));
    message.reply_to = Some("replies-somewhere".into());
    message.message_id = Some(format!("msg-{n}"));
    message.content_type = Some("application/octet-stream".into());
    message
}

/// Sends and waits for the broker's confirmation.
pub async fn send_confirmed(sink: &Arc<dyn Sink>, message: &Message) -> Result<(), SendError> {
    sink.send(message).await?.await.map(|_| ())
}

/// Receives one delivery or fails the test.
pub async fn receive(source: &mut Box<dyn Source>, what: &str) -> Delivery {
    match tokio::time::timeout(ARRIVAL, source.recv()).await {
        Ok(Ok(Some(delivery))) => delivery,
        Ok(Ok(None)) => panic!("{what}: the source ended"),
        Ok(Err(error)) => panic!("{what}: the source failed: {error}"),
        Err(_) => panic!("{what}: nothing arrived within {ARRIVAL:?}"),
    }
}

/// Asserts that nothing arrives for a while.
pub async fn expect_silence(source: &mut Box<dyn Source>, what: &str) {
    if let Ok(Ok(Some(delivery))) = tokio::time::timeout(SILENCE, source.recv()).await {
        let body = delivery.message.body.clone();
        delivery.ack.ack();
        panic!("{what}: unexpected message {body:?}");
    }
}

fn sorted(headers: &bridge::message::Headers) -> Vec<(String, HeaderValue)> {
    let mut all: Vec<_> = headers
        .iter()
        .map(|(n, v)| (n.to_owned(), v.clone()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Asserts that `received` carries everything `sent` did (header order aside).
pub fn assert_same_envelope(sent: &Message, received: &Message) {
    assert_eq!(received.body, sent.body, "body");
    assert_eq!(received.key, sent.key, "key");
    assert_eq!(sorted(&received.headers), sorted(&sent.headers), "headers");
    assert_eq!(
        received.correlation_id, sent.correlation_id,
        "correlation id"
    );
    assert_eq!(received.reply_to, sent.reply_to, "reply-to");
    assert_eq!(received.message_id, sent.message_id, "message id");
    assert_eq!(received.content_type, sent.content_type, "content type");
}

pub async fn round_trip_keeps_body_key_headers_and_ids(fixture: &dyn Fixture) {
    let pair = fixture.fresh("round-trip").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut source = open_source(&pair).await;
    let mut sent = rich_message(1);
    sent.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_750_000_000_250));
    send_confirmed(&sink, &sent).await.unwrap();
    let delivery = receive(&mut source, "the sent message").await;
    assert_same_envelope(&sent, &delivery.message);
    assert_eq!(delivery.message.timestamp, sent.timestamp, "timestamp");
    let origin = delivery.message.origin().unwrap();
    assert_eq!(origin.endpoint, pair.source.to_string());
    assert_origin_fields_declared(&pair, origin);
    delivery.ack.ack();
    source.close().await;
    fixture.cleanup(&pair).await;
}

/// A source sets only the `origin` fields its connection declares (`origin_fields`).
pub fn assert_origin_fields_declared(pair: &Pair, origin: &Origin) {
    let declared = pair.connection.origin_fields();
    for field in OriginField::set_in(origin) {
        assert!(
            declared.contains(&field),
            "{} sets origin.{} but declares only {declared:?}",
            pair.connection.type_name(),
            field.name()
        );
    }
}

pub async fn ack_removes_the_message(fixture: &dyn Fixture) {
    let pair = fixture.fresh("ack").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut source = open_source(&pair).await;
    send_confirmed(&sink, &Message::new("acked once"))
        .await
        .unwrap();
    receive(&mut source, "the message").await.ack.ack();
    if fixture.reopened_consumer_receives() {
        source.close().await;
        let mut again = open_source(&pair).await;
        expect_silence(&mut again, "after ack, a new consumer").await;
        again.close().await;
    } else {
        // The same consumer: an unacknowledged message would come back when its lease
        // (10 s in these fixtures) ran out.
        if let Ok(Ok(Some(delivery))) =
            tokio::time::timeout(Duration::from_secs(15), source.recv()).await
        {
            panic!(
                "after ack, the message came back: {:?}",
                delivery.message.body
            );
        }
        source.close().await;
    }
    fixture.cleanup(&pair).await;
}

pub async fn retry_redelivers_the_message(fixture: &dyn Fixture) {
    let pair = fixture.fresh("retry").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut source = open_source(&pair).await;
    send_confirmed(&sink, &Message::new("try again"))
        .await
        .unwrap();
    let first = receive(&mut source, "first delivery").await;
    first.ack.retry("conformance retry");
    let second = receive(&mut source, "redelivery").await;
    assert_eq!(second.message.body, "try again");
    assert!(
        second.message.origin().unwrap().receive_count.unwrap_or(0) >= 2,
        "receive count grows"
    );
    assert_origin_fields_declared(&pair, second.message.origin().unwrap());
    second.ack.ack();
    source.close().await;
    fixture.cleanup(&pair).await;
}

pub async fn dropped_ack_handle_redelivers_the_message(fixture: &dyn Fixture) {
    let pair = fixture.fresh("dropped").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut source = open_source(&pair).await;
    send_confirmed(&sink, &Message::new("forgotten"))
        .await
        .unwrap();
    drop(receive(&mut source, "first delivery").await);
    let again = receive(&mut source, "redelivery after a dropped handle").await;
    assert_eq!(again.message.body, "forgotten");
    again.ack.ack();
    source.close().await;
    fixture.cleanup(&pair).await;
}

/// Reject goes to the broker's own dead-letter mechanism. A system without one (Kafka)
/// must have a route dead letter: there a permanent failure reaches it through the router.
pub async fn reject_reaches_the_dead_letter(fixture: &dyn Fixture) {
    let pair = fixture.fresh("reject").await;
    let Some((dead_letter, dead_letter_options)) = pair.broker_dead_letter.clone() else {
        return reject_through_the_route_dead_letter(fixture, pair).await;
    };
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut source = open_source(&pair).await;
    send_confirmed(&sink, &Message::new("poison"))
        .await
        .unwrap();
    receive(&mut source, "the poison message")
        .await
        .ack
        .reject("conformance reject");
    // Some brokers count rejections (SQS redrive after maxReceiveCount): keep rejecting
    // what comes back, a bounded number of times, until the broker moves it.
    let mut redeliveries = 0;
    while let Ok(Ok(Some(again))) = tokio::time::timeout(SILENCE, source.recv()).await {
        assert_eq!(again.message.body, "poison");
        again.ack.reject("conformance reject");
        redeliveries += 1;
        assert!(
            redeliveries <= 5,
            "the broker keeps redelivering a rejected message"
        );
    }
    let mut dead = pair
        .connector
        .open_source(
            &dead_letter,
            &settings_for(&pair, &dead_letter, &dead_letter_options),
        )
        .await
        .unwrap();
    let letter = receive(&mut dead, "the dead letter").await;
    assert_eq!(letter.message.body, "poison");
    letter.ack.ack();
    dead.close().await;
    source.close().await;
    fixture.cleanup(&pair).await;
}

async fn reject_through_the_route_dead_letter(fixture: &dyn Fixture, pair: Pair) {
    use bridge::adapter::ConnectContext;
    use bridge::adapter::memory::MemoryBroker;
    use bridge::message::reserved;
    let yaml = format!(
        "connections:\n  sys: {}\n  mem: {{type: memory}}\nroutes:\n  - name: refuse\n    from: sys:{}\n    to: mem:refuse\n    dead_letter: sys:{}\n    retry: {{max_attempts: 1}}\n",
        pair.connection_yaml, pair.source.path, pair.spare.path
    );
    let plan = bridge::config::load_str(&yaml, "reject.yaml", &|_: &str| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let memory = MemoryBroker::new();
    memory
        .queue("refuse")
        .fail_when(|_| Some(SendError::permanent("refused for the test")));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let context = ConnectContext { memory };
    let router = bridge::router::Router::connect(&plan, &context, &shutdown)
        .await
        .unwrap();
    let running = tokio::spawn(router.run(shutdown.clone()));
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    send_confirmed(&sink, &Message::new("poison"))
        .await
        .unwrap();
    let mut dead = pair
        .connector
        .open_source(&pair.spare_source, &settings())
        .await
        .unwrap();
    let letter = receive(&mut dead, "the dead letter").await;
    assert_eq!(letter.message.body, "poison");
    assert_eq!(
        letter.message.headers.get_text(reserved::DLQ_ERROR),
        Some("refused for the test")
    );
    assert_eq!(
        letter.message.headers.get_text(reserved::DLQ_SOURCE),
        Some(format!("sys:{}", pair.source.path).as_str())
    );
    letter.ack.ack();
    dead.close().await;
    shutdown.cancel();
    assert!(running.await.unwrap().is_clean());
    fixture.cleanup(&pair).await;
}

/// Dead letters at the pair's spare endpoint, on a system that keeps what is read (a log):
/// a peek sees them and leaves them; a take acknowledges them; a second take finds
/// nothing.
pub async fn dead_letters_are_peeked_then_taken_once(fixture: &dyn Fixture) {
    use bridge::adapter::DeadLetterRead;
    let pair = fixture.fresh("dead-letters").await;
    let sink = pair.connector.open_sink(&pair.spare).await.unwrap();
    for body in ["d1", "d2"] {
        send_confirmed(&sink, &Message::new(body)).await.unwrap();
    }
    let read = |how| {
        let connector = pair.connector.clone();
        let endpoint = pair.spare_source.clone();
        async move { connector.open_dead_letters(&endpoint, how).await.unwrap() }
    };
    let take = DeadLetterRead::Take {
        reader: bridge::adapter::DEAD_LETTER_READER,
        window: 64,
    };
    for how in [DeadLetterRead::Peek { disturb: false }, take] {
        let mut reader = read(how).await;
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let delivery = receive(&mut reader, "a dead letter").await;
            bodies.push(delivery.message.body.clone());
            delivery.ack.ack();
        }
        bodies.sort();
        assert_eq!(bodies, ["d1", "d2"], "{how:?}");
        reader.close().await;
    }
    let mut again = read(take).await;
    expect_silence(&mut again, "dead letters taken before").await;
    again.close().await;
    fixture.cleanup(&pair).await;
}

/// What `bridge dlq redrive` sends to for a source path reaches that source, or the
/// adapter says to give `--to` (a source fed by several places).
pub async fn redrive_path_reaches_the_source(fixture: &dyn Fixture) {
    let pair = fixture.fresh("redrive").await;
    let path = match pair.connector.redrive_path(&pair.source.path).await {
        Ok(path) => path,
        Err(error) => {
            assert!(error.to_string().contains("--to"), "{error}");
            fixture.cleanup(&pair).await;
            return;
        }
    };
    let mut source = open_source(&pair).await;
    let endpoint = bridge::address::Endpoint {
        connection: pair.sink.connection.clone(),
        path,
    };
    let sink = pair.connector.open_sink(&endpoint).await.unwrap();
    send_confirmed(&sink, &Message::new("redriven"))
        .await
        .unwrap();
    let delivery = receive(&mut source, "the redriven message").await;
    assert_eq!(delivery.message.body, "redriven");
    delivery.ack.ack();
    source.close().await;
    fixture.cleanup(&pair).await;
}

pub async fn confirmed_send_is_readable_at_once(fixture: &dyn Fixture) {
    let pair = fixture.fresh("confirmed").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut source = open_source(&pair).await;
    for n in 0..20 {
        send_confirmed(&sink, &Message::new(format!("c{n}")))
            .await
            .unwrap();
    }
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let delivery = receive(&mut source, "a confirmed message").await;
        bodies.push(delivery.message.body.clone());
        delivery.ack.ack();
    }
    bodies.sort();
    let mut expected: Vec<bytes::Bytes> = (0..20).map(|n| format!("c{n}").into()).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    source.close().await;
    fixture.cleanup(&pair).await;
}

/// Every message arrives once; where the system orders by key, in order.
/// Every message arrives once; where the system orders by key, in order.
pub async fn per_key_order_is_kept(fixture: &dyn Fixture) {
    let pair = fixture.fresh("order").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut source = open_source(&pair).await;
    let mut confirmations = Vec::new();
    for n in 0..120 {
        let mut message = Message::new(format!("{n}"));
        message.key = Some(format!("k{}", n % 4).into());
        confirmations.push(sink.send(&message).await.unwrap());
    }
    for confirmation in confirmations {
        confirmation.await.unwrap();
    }
    let mut last: HashMap<bytes::Bytes, u32> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..120 {
        let delivery = receive(&mut source, "ordered message").await;
        let key = delivery.message.key.clone().unwrap();
        let n: u32 = std::str::from_utf8(&delivery.message.body)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            key,
            format!("k{}", n % 4),
            "the key travels with its message"
        );
        assert!(seen.insert(n), "{n} arrived twice");
        if let Some(previous) = last.insert(key.clone(), n)
            && fixture.keeps_order()
        {
            assert!(previous < n, "key {key:?}: {n} after {previous}");
        }
        delivery.ack.ack();
    }
    assert_eq!(seen.len(), 120);
    source.close().await;
    fixture.cleanup(&pair).await;
}

#[path = "../support/brokers.rs"]
mod broker_script;
pub use broker_script::brokers;

/// Stops the broker mid-stream, checks that sends are not confirmed while it is away,
/// starts it again and checks that the same source and sink carry on by themselves.
pub async fn recovers_after_broker_restart(fixture: &dyn Fixture) {
    let pair = fixture.fresh("restart").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let mut source = open_source(&pair).await;
    send_confirmed(&sink, &Message::new("before"))
        .await
        .unwrap();
    receive(&mut source, "message before the outage")
        .await
        .ack
        .ack();
    tokio::time::sleep(Duration::from_secs(1)).await;
    brokers("pause", fixture.broker());
    let sending = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                match send_confirmed(&sink, &Message::new("during")).await {
                    Ok(()) => return started.elapsed(),
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !sending.is_finished(),
        "a send was confirmed while the broker was down"
    );
    brokers("resume", fixture.broker());
    let waited = tokio::time::timeout(Duration::from_secs(90), sending)
        .await
        .expect("the sink recovers after the broker restart")
        .unwrap();
    assert!(waited >= Duration::from_secs(3));
    let during = receive(&mut source, "message sent across the outage").await;
    assert_eq!(during.message.body, "during");
    during.ack.ack();
    source.close().await;
    fixture.cleanup(&pair).await;
}

/// One test per behaviour for a fixture constructor.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn round_trip_keeps_body_key_headers_and_ids() {
            $crate::conformance::init_logs();
            $crate::conformance::round_trip_keeps_body_key_headers_and_ids(&$fixture).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ack_removes_the_message() {
            $crate::conformance::init_logs();
            $crate::conformance::ack_removes_the_message(&$fixture).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn retry_redelivers_the_message() {
            $crate::conformance::init_logs();
            $crate::conformance::retry_redelivers_the_message(&$fixture).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn dropped_ack_handle_redelivers_the_message() {
            $crate::conformance::init_logs();
            $crate::conformance::dropped_ack_handle_redelivers_the_message(&$fixture).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn reject_reaches_the_dead_letter() {
            $crate::conformance::init_logs();
            $crate::conformance::reject_reaches_the_dead_letter(&$fixture).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn confirmed_send_is_readable_at_once() {
            $crate::conformance::init_logs();
            $crate::conformance::confirmed_send_is_readable_at_once(&$fixture).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redrive_path_reaches_the_source() {
            $crate::conformance::init_logs();
            $crate::conformance::redrive_path_reaches_the_source(&$fixture).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn per_key_order_is_kept() {
            $crate::conformance::init_logs();
            $crate::conformance::per_key_order_is_kept(&$fixture).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn recovers_after_broker_restart() {
            $crate::conformance::init_logs();
            $crate::conformance::recovers_after_broker_restart(&$fixture).await;
        }
    };
}
