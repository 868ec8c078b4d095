//! Operating `bridge run` against the local brokers: Prometheus metrics during a real
//! RabbitMQ -> Kafka run (counters moving, backlog gauges equal to what the brokers say),
//! a canary secret that must never be printed by any command, and RabbitMQ over mutual
//! TLS with certificates the test makes.
#![cfg(all(feature = "kafka", feature = "rabbitmq", feature = "aws"))]

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bridge::adapter::SourceSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use support::flow::publish;
use support::http::{get, sample, wait_for_address};
use support::process::bridge;
use support::systems::{KAFKA, RABBIT};
use support::tally::numbered;
use support::{connector, init_logs, unique};

const BACKLOG: &str = "bridge_source_backlog_messages";

fn spawn_run(routes: &Path, log: &Path, level: &str) -> Child {
    bridge()
        .args(["run", routes.to_str().unwrap()])
        .env("BRIDGE_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn eventually<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for `/readyz` to say 200; on timeout, fails with the bridge's log.
async fn wait_ready(address: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(get(address, "/readyz"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "bridge never became ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Consumer-group lag as Kafka itself reports it: high watermark minus committed offset,
/// per partition (the group committed every partition it read).
fn kafka_lag(group: &str, topic: &str, partitions: i32) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(topic, p);
    }
    let timeout = Duration::from_secs(10);
    let committed = consumer.committed_offsets(wanted, timeout).unwrap();
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p, timeout).unwrap();
            let offset = match committed.find_partition(topic, p).unwrap().offset() {
                Offset::Offset(offset) => offset,
                _ => low,
            };
            u64::try_from(high - offset).unwrap()
        })
        .sum()
}

/// Ready messages of a queue as `rabbitmqctl list_queues` reports them.
fn rabbit_ready(queue: &str) -> u64 {
    let output = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_ready",
        ])
        .output()
        .expect("rabbitmqctl runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(queue)).then(|| fields.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("queue {queue} not listed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_rabbitmq_to_kafka_run_and_backlogs_match_the_brokers() {
    init_logs();
    let name = unique("metrics");
    let (q_in, q_deep, q_dlq, topic, t_dlq) = (
        format!("{name}-in"),
        format!("{name}-deep"),
        format!("{name}-dlq"),
        format!("{name}-t"),
        format!("{name}-tdlq"),
    );
    let group = format!("{name}-bridge");
    let expires = json!({"x-expires": 900_000});
    let rabbit = json!({"type": "rabbitmq", "url": RABBIT, "declare": {"queues": [
        {"name": q_in, "arguments": expires}, {"name": q_deep, "arguments": expires},
        {"name": q_dlq, "arguments": expires}]}});
    let kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": group,
        "declare": [{"name": topic, "partitions": 3}, {"name": t_dlq}]});
    // `lagging` and `deep` write to standard output, which this test never reads: once
    // the pipe is full they stop, so their backlogs hold still for the comparison.
    let routes = format!(
        "settings: {{http: {{backlog_interval: 300ms}}}}\nconnections:\n  rabbit: {rabbit}\n  kafka: {kafka}\n  io: {{type: stdio}}\nroutes:\n  - name: to-kafka\n    from: rabbit:queue/{q_in}\n    to: kafka:{topic}\n    dead_letter: rabbit:queue/{q_dlq}\n  - name: lagging\n    from: kafka:{topic}\n    to: io:stdout\n    dead_letter: kafka:{t_dlq}\n    max_in_flight: 8\n  - name: deep\n    from: rabbit:queue/{q_deep}\n    to: io:stdout\n    dead_letter: rabbit:queue/{q_dlq}\n    max_in_flight: 8\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let log = dir.path().join("bridge.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let rabbit_client = connector(&rabbit).await;
    let mut child = spawn_run(&file, &log, "info");
    let address = wait_for_address(read_log, Duration::from_secs(30));
    wait_ready(&address, &log).await;
    let scrape = || get(&address, "/metrics").unwrap().1;
    let to_kafka = [("route", "to-kafka")];
    let received =
        |metrics: &str| sample(metrics, "bridge_messages_received_total", &to_kafka).unwrap_or(0.0);

    publish(
        &rabbit_client,
        &format!("test:queue/{q_in}"),
        (0..1000).map(numbered),
        usize::MAX,
    )
    .await;
    let first = eventually("the first batch", Duration::from_secs(60), || {
        let metrics = scrape();
        (received(&metrics) >= 1000.0).then_some(metrics)
    })
    .await;
    publish(
        &rabbit_client,
        &format!("test:queue/{q_in}"),
        (1000..2000).map(numbered),
        usize::MAX,
    )
    .await;
    let sink = format!("kafka:{topic}");
    let second = eventually(
        "every message sent to Kafka",
        Duration::from_secs(60),
        || {
            let metrics = scrape();
            (sample(
                &metrics,
                "bridge_messages_sent_total",
                &[("route", "to-kafka"), ("sink", &sink)],
            ) == Some(2000.0))
            .then_some(metrics)
        },
    )
    .await;
    assert!(
        received(&second) > received(&first),
        "received moved: {first}"
    );
    assert_eq!(received(&second), 2000.0);
    assert_eq!(
        sample(&second, "bridge_processing_seconds_count", &to_kafka),
        Some(2000.0)
    );
    assert_eq!(
        sample(&second, "bridge_messages_in_flight", &to_kafka),
        Some(0.0)
    );

    // `lagging` has filled standard output by now; `deep` gets stuck behind it.
    publish(
        &rabbit_client,
        &format!("test:queue/{q_deep}"),
        (0..500).map(numbered),
        usize::MAX,
    )
    .await;
    // Kafka lag and RabbitMQ depth, as bridge reports them and as the brokers do.
    let (lag, depth) = eventually(
        "backlog gauges equal to the brokers' numbers",
        Duration::from_secs(60),
        || {
            let metrics = scrape();
            let lag = sample(&metrics, BACKLOG, &[("route", "lagging")])?;
            let depth = sample(&metrics, BACKLOG, &[("route", "deep")])?;
            let broker_lag = kafka_lag(&group, &topic, 3) as f64;
            let broker_depth = rabbit_ready(&q_deep) as f64;
            println!("lag {lag} (Kafka {broker_lag}), depth {depth} (RabbitMQ {broker_depth})");
            (lag == broker_lag && depth == broker_depth).then_some((lag, depth))
        },
    )
    .await;
    assert!(lag > 0.0 && lag < 2000.0, "the blocked route lags: {lag}");
    assert!(
        depth > 0.0 && depth < 500.0,
        "the blocked queue holds messages: {depth}"
    );
    let metrics = scrape();
    let in_flight = sample(
        &metrics,
        "bridge_messages_in_flight",
        &[("route", "lagging")],
    )
    .unwrap();
    assert!(in_flight > 0.0 && in_flight <= 8.0, "{in_flight}");
    assert_eq!(
        sample(&metrics, BACKLOG, &[("route", "to-kafka")]),
        Some(0.0),
        "the flowing queue is empty"
    );
    // The sink is blocked, so a drain could not finish: stop it the hard way.
    child.kill().unwrap();
    child.wait().unwrap();
}

/// What a command printed, both streams.
fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().unwrap();
    assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
}

/// Every character outside RFC 3986's unreserved set as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_appears_in_any_output() {
    init_logs();
    let name = unique("canary");
    // One random marker inside every secret of the file, beside every URL-reserved
    // character, raw where the secret is a field of its own and percent-encoded in URLs.
    let canary = format!("Cnry{}", name.rsplit('-').next().unwrap());
    let reserved = "/?#@:%";
    let user = format!("{name}-user");
    let password = format!("{canary}{reserved}rabbit");
    rabbitmqctl(&["add_user", &user, &password]);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]);
    let rabbit_url = format!(
        "amqp://{user}:{}@127.0.0.1:5672/%2f",
        percent_encode(&password)
    );
    let (q_in, q_out, q_dlq, q_reply, sqs) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
        format!("{name}-reply"),
        format!("{name}-sqs"),
    );
    let expires = json!({"x-expires": 900_000});
    let rabbit = json!({"type": "rabbitmq", "url": rabbit_url,
        "declare": {"queues": [{"name": q_in, "arguments": expires}, {"name": q_out, "arguments": expires},
            {"name": q_dlq, "arguments": expires}, {"name": q_reply, "arguments": expires}],
        "exchanges": [{"name": format!("{name}-x"), "kind": "direct", "durable": false}]}});
    let wrong = json!({"type": "rabbitmq",
        "url": format!("amqp://{user}:{}wrong@127.0.0.1:5672/%2f", percent_encode(&format!("{canary}{reserved}")))});
    let aws = json!({"type": "aws", "endpoint_url": "http://127.0.0.1:4566", "region": "us-east-1",
        "access_key_id": "testing", "secret_access_key": format!("{canary}{reserved}aws"),
        "declare": {"queues": [{"name": sqs}]}});
    let kafka = json!({"type": "kafka", "brokers": KAFKA,
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "bridge", "password": format!("{canary}{reserved}kafka")},
        "options": {"ssl.key.password": format!("{canary}{reserved}key")}});
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("reply-key");
    std::fs::write(&key_file, format!("{canary}{reserved}-signing-key\n")).unwrap();
    // Nothing listens at the dedup store's address: its errors are logged.
    let store = format!(
        "redis://:{}@127.0.0.1:1/0",
        percent_encode(&format!("{canary}{reserved}redis"))
    );
    let routes = format!(
        "settings: {{reply_signing_key: '${{file:{}}}'}}\nconnections:\n  rabbit: {rabbit}\n  wrong: {wrong}\n  aws: {aws}\n  kafka: {kafka}\nroutes:\n  - name: rpc\n    from: rabbit:queue/{q_in}\n    to: [aws:sqs/{sqs}, 'rabbit:exchange/{name}-x/rk']\n    dead_letter: rabbit:queue/{q_dlq}\n    retry: {{max_attempts: 2, initial_backoff: 10ms}}\n    dedup: {{key: '{{{{ body_text }}}}', store: '{store}'}}\n    reply: {{from: rabbit:queue/{q_out}}}\n",
        key_file.display()
    );
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let config = file.to_str().unwrap();
    // The same connections, broken in ways that quote them: a password with a raw `/`
    // (unparseable), one from the environment, and an unknown dedup store.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        format!(
            "connections:\n  raw: {{type: rabbitmq, url: 'amqp://{user}:{canary}{reserved}x@h/%2f'}}\n  env: {{type: rabbitmq, url: '${{CANARY_URL}}'}}\n  mem: {{type: memory}}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    dedup: {{store: 'valkey://:{canary}@h'}}\n"
        ),
    )
    .unwrap();
    let mut outputs: Vec<(String, String)> = Vec::new();
    let command = |args: &[&str]| {
        bridge()
            .args(args)
            .env(
                "CANARY_URL",
                format!("amqp://u:{canary}{reserved}env@h/%2f"),
            )
            .env("BRIDGE_LOG", "trace")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let validate = command(&["validate", config]);
    assert_eq!(validate.status.code(), Some(0), "{}", printed(&validate));
    outputs.push(("validate".into(), printed(&validate)));
    let invalid = command(&["validate", broken.to_str().unwrap()]);
    assert_eq!(invalid.status.code(), Some(2), "{}", printed(&invalid));
    assert!(
        printed(&invalid).contains("${CANARY_URL}"),
        "{}",
        printed(&invalid)
    );
    outputs.push(("validate with errors".into(), printed(&invalid)));

    let log = dir.path().join("run.log");
    let mut run = spawn_run(&file, &log, "trace");
    let address = wait_for_address(
        || std::fs::read_to_string(&log).unwrap_or_default(),
        Duration::from_secs(30),
    );
    wait_ready(&address, &log).await;
    let send = command(&[
        "send",
        "-c",
        config,
        &format!("rabbit:queue/{q_in}"),
        "hello",
    ]);
    assert_eq!(send.status.code(), Some(0), "{}", printed(&send));
    outputs.push(("send".into(), printed(&send)));
    // The second sink's exchange has no queue bound: unroutable, so the message is
    // dead-lettered and errors get logged.
    let dead_letter = connector(&rabbit).await;
    let mut dlq = dead_letter
        .open_source(
            &format!("test:queue/{q_dlq}").parse().unwrap(),
            &SourceSettings {
                route: "checker".into(),
                options: bridge::adapter::SourceOptions::none(),
                max_in_flight: 1,
                dead_letter: true,
            },
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(60), dlq.recv())
        .await
        .expect("dead letter in time")
        .unwrap()
        .unwrap();
    delivery.ack.ack();
    dlq.close().await;
    let tail = command(&[
        "tail",
        "-c",
        config,
        &format!("aws:sqs/{sqs}"),
        "--disturb",
        "--count",
        "1",
        "--idle",
        "10s",
    ]);
    assert_eq!(tail.status.code(), Some(0), "{}", printed(&tail));
    assert!(printed(&tail).contains("hello"), "{}", printed(&tail));
    outputs.push(("tail".into(), printed(&tail)));
    let request = command(&[
        "request",
        "-c",
        config,
        &format!("rabbit:queue/{q_in}"),
        "ping",
        "--reply-from",
        &format!("rabbit:queue/{q_reply}"),
        "--timeout",
        "2s",
    ]);
    outputs.push(("request (no replier: times out)".into(), printed(&request)));
    let refused = command(&["send", "-c", config, &format!("wrong:queue/{q_in}"), "x"]);
    assert_ne!(
        refused.status.code(),
        Some(0),
        "a wrong password is refused"
    );
    outputs.push(("send with a wrong password".into(), printed(&refused)));
    let kafka_tail = command(&["tail", "-c", config, "kafka:anything", "--idle", "2s"]);
    outputs.push(("tail with SASL".into(), printed(&kafka_tail)));
    let by_url = command(&[
        "send",
        "--url",
        &rabbit_url,
        &format!("x:queue/{q_reply}"),
        "by url",
    ]);
    assert_eq!(by_url.status.code(), Some(0), "{}", printed(&by_url));
    outputs.push(("send --url".into(), printed(&by_url)));
    let tail_url = command(&[
        "tail",
        "--url",
        &rabbit_url,
        &format!("x:queue/{q_reply}"),
        "--disturb",
        "--count",
        "1",
        "--idle",
        "5s",
    ]);
    assert!(
        printed(&tail_url).contains("by url"),
        "{}",
        printed(&tail_url)
    );
    outputs.push(("tail --url".into(), printed(&tail_url)));
    let request_url = command(&[
        "request",
        "--url",
        &rabbit_url,
        &format!("x:queue/{q_dlq}"),
        "ping",
        "--reply-from",
        &format!("x:queue/{q_reply}"),
        "--timeout",
        "1s",
    ]);
    outputs.push(("request --url".into(), printed(&request_url)));
    let raw_url = format!("amqp://{user}:{password}@127.0.0.1:5672/%2f");
    for args in [
        vec!["send", "--url", raw_url.as_str(), "x:queue/q", "x"],
        vec![
            "tail",
            "--url",
            raw_url.as_str(),
            "x:queue/q",
            "--idle",
            "1s",
        ],
        vec![
            "request",
            "--url",
            raw_url.as_str(),
            "x:queue/q",
            "x",
            "--reply-from",
            "x:queue/r",
            "--timeout",
            "1s",
        ],
    ] {
        let output = command(&args);
        assert_eq!(output.status.code(), Some(2), "{}", printed(&output));
        outputs.push((
            format!("{} --url with a raw password", args[0]),
            printed(&output),
        ));
    }
    let (status, metrics) = get(&address, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("bridge_dead_letters_total"), "{metrics}");
    outputs.push(("/metrics".into(), metrics));

    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    let code = run.wait().unwrap().code();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut run.stdout.take().unwrap(), &mut stdout).unwrap();
    let run_log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{run_log}");
    assert!(run_log.contains("message cannot be delivered"), "{run_log}");
    assert!(
        run_log.contains("deduplication store unavailable"),
        "{run_log}"
    );
    outputs.push(("run".into(), format!("{stdout}{run_log}")));
    rabbitmqctl(&["delete_user", &user]);

    // The check below would see the canary if it were printed: it is in the files and the
    // environment, and every command logged at trace level, errors included.
    assert!(routes.contains(&canary));
    assert!(
        outputs
            .iter()
            .any(|(what, text)| what == "run" && text.contains("TRACE"))
    );
    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} printed nothing");
        assert!(
            !text.contains(&canary),
            "{what} printed the secret:\n{text}"
        );
    }
}

/// A TLS endpoint that demands a client certificate from the test CA and forwards the
/// decrypted stream to RabbitMQ: what a TLS listener on the broker does. Counts the
/// handshakes that succeeded.
async fn mutual_tls_proxy(dir: &Path) -> (u16, Arc<AtomicUsize>) {
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};

    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_file(dir.join("server.pem")).unwrap()],
            PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap(),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut broker = tokio::net::TcpStream::connect("127.0.0.1:5672")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    (port, handshakes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_mutual_tls_with_verified_certificates() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    support::certs::make_certificates(dir.path());
    let (port, handshakes) = mutual_tls_proxy(dir.path()).await;
    let name = unique("tls");
    let (q_in, q_out, q_dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    let expires = json!({"x-expires": 900_000});
    let file = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let secure = json!({"type": "rabbitmq", "url": url,
        "tls": {"ca_file": file("ca.pem"), "cert_file": file("client.pem"), "key_file": file("client.key")},
        "declare": {"queues": [{"name": q_in, "arguments": expires}, {"name": q_out, "arguments": expires},
            {"name": q_dlq, "arguments": expires}]}});
    let anonymous = json!({"type": "rabbitmq", "url": url, "tls": {"ca_file": file("ca.pem")}});
    let untrusting = json!({"type": "rabbitmq", "url": url,
        "tls": {"cert_file": file("client.pem"), "key_file": file("client.key")}});
    let routes = format!(
        "connections:\n  secure: {secure}\n  anonymous: {anonymous}\n  untrusting: {untrusting}\nroutes:\n  - name: over-tls\n    from: secure:queue/{q_in}\n    to: secure:queue/{q_out}\n    dead_letter: secure:queue/{q_dlq}\n"
    );
    let routes_file = dir.path().join("routes.yaml");
    std::fs::write(&routes_file, &routes).unwrap();
    let log = dir.path().join("run.log");
    let mut run = spawn_run(&routes_file, &log, "info");
    let address = wait_for_address(
        || std::fs::read_to_string(&log).unwrap_or_default(),
        Duration::from_secs(30),
    );
    wait_ready(&address, &log).await;

    let plain = connector(&json!({"type": "rabbitmq", "url": RABBIT})).await;
    publish(
        &plain,
        &format!("test:queue/{q_in}"),
        (0..20).map(numbered),
        usize::MAX,
    )
    .await;
    let mut out = plain
        .open_source(
            &format!("test:queue/{q_out}").parse().unwrap(),
            &SourceSettings {
                route: "checker".into(),
                options: bridge::adapter::SourceOptions::none(),
                max_in_flight: 32,
                dead_letter: false,
            },
        )
        .await
        .unwrap();
    for n in 0..20u32 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), out.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "message {n} over TLS: {}",
                    std::fs::read_to_string(&log).unwrap()
                )
            })
            .unwrap()
            .unwrap();
        assert_eq!(delivery.message.body, numbered(n).body);
        delivery.ack.ack();
    }
    out.close().await;
    assert!(
        handshakes.load(Ordering::SeqCst) >= 1,
        "bridge went through TLS"
    );

    let config = routes_file.to_str().unwrap();
    let send = |connection: &str| {
        bridge()
            .args([
                "send",
                "-c",
                config,
                &format!("{connection}:queue/{q_in}"),
                "x",
            ])
            .output()
            .unwrap()
    };
    let before = handshakes.load(Ordering::SeqCst);
    let without_client_certificate = send("anonymous");
    assert_eq!(
        without_client_certificate.status.code(),
        Some(1),
        "{}",
        printed(&without_client_certificate)
    );
    let without_our_ca = send("untrusting");
    assert_eq!(
        without_our_ca.status.code(),
        Some(1),
        "the server certificate is verified: {}",
        printed(&without_our_ca)
    );
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        before,
        "neither handshake succeeded"
    );
    let with_everything = send("secure");
    assert_eq!(
        with_everything.status.code(),
        Some(0),
        "{}",
        printed(&with_everything)
    );

    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(run.wait().unwrap().code(), Some(0));
}
