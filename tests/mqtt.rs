//! The conformance suite against the project's own Mosquitto (127.0.0.1:1884, started by
//! scripts/brokers.sh), once with MQTT 5 and once with MQTT 3.1.1 (`pack: true`), and the
//! adapter's own behaviours: persistent sessions, shared subscriptions split between
//! replicas and a killed member's messages, the 3.1.1 rule for what a payload cannot
//! hold, password authentication and TLS against a Mosquitto of the test's own.
#![cfg(feature = "mqtt")]

mod conformance;
// Two files of the shared support (all of it would load the broker script twice, which
// the conformance suite loads already).
#[path = "support/certs.rs"]
mod certs;
// Only `bridge()` of it is used here.
#[path = "support/ports.rs"]
mod ports;
#[allow(dead_code)]
#[path = "support/process.rs"]
mod process;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use bridge::adapter::{ConnectContext, Connector, ErrorClass, SourceSettings, TailSettings};
use bridge::address::Endpoint;
use bridge::message::Message;
use conformance::{Fixture, Pair, unique};
use serde_json::{Value, json};

pub const URL: &str = "mqtt://127.0.0.1:1884";

/// A fresh topic per test and a client id prefix of its own, so sessions never meet.
struct Mqtt {
    protocol: &'static str,
}

const V5: Mqtt = Mqtt { protocol: "5" };
const V311: Mqtt = Mqtt { protocol: "3.1.1" };

impl Mqtt {
    fn connection(&self, name: &str) -> Value {
        let mut connection = json!({
            "type": "mqtt",
            "url": URL,
            "protocol": self.protocol,
            "client_id": name,
        });
        if self.protocol == "3.1.1" {
            connection["pack"] = json!(true);
        }
        connection
    }
}

/// Opens and closes a session of `route` on `endpoint`: MQTT queues messages only for a
/// session that subscribed before they were published.
async fn create_session(pair: &Pair, endpoint: &Endpoint, route: &str) {
    let mut settings = conformance::settings();
    settings.route = route.into();
    let source = pair
        .connector
        .open_source(endpoint, &settings)
        .await
        .unwrap();
    source.close().await;
}

#[async_trait]
impl Fixture for Mqtt {
    fn broker(&self) -> &'static str {
        "mosquitto"
    }

    async fn fresh(&self, test: &str) -> Pair {
        let name = unique(test);
        let connection = self.connection(&name);
        let (parsed, connector) = conformance::connect(
            &connection,
            &format!("the project's Mosquitto must be running at {URL}"),
        )
        .await;
        let topic = format!("bridge-tests/{name}");
        let pair = Pair {
            connection: parsed,
            connector,
            sink: format!("sys:topic/{topic}").parse().unwrap(),
            source: format!("sys:topic/{topic}").parse().unwrap(),
            source_options: Value::Null,
            broker_dead_letter: None,
            spare: format!("sys:topic/{topic}-spare").parse().unwrap(),
            spare_source: format!("sys:topic/{topic}-spare").parse().unwrap(),
            connection_yaml: connection.to_string(),
        };
        if test == "reject" {
            // The suite's route `refuse` reads the source, and its dead letters are read
            // by the suite's own reader after they were written.
            create_session(&pair, &pair.source, "refuse").await;
            create_session(&pair, &pair.spare_source, "conformance").await;
        }
        pair
    }
}

mod v5 {
    use super::*;
    conformance_tests!(V5);
}

mod v3_1_1 {
    use super::*;
    conformance_tests!(V311);
}

fn source_settings(pair: &Pair, route: &str, options: Value) -> SourceSettings {
    SourceSettings {
        route: route.into(),
        options: pair
            .connection
            .source_options(&pair.source.path, &options)
            .unwrap(),
        max_in_flight: 64,
        dead_letter: true,
    }
}

/// A session keeps its subscription while bridge is away: what is published meanwhile
/// arrives when the same client id comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_receives_what_was_published_while_away() {
    conformance::init_logs();
    for fixture in [V5, V311] {
        let pair = fixture.fresh("away").await;
        let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
        let settings = source_settings(&pair, "away", Value::Null);
        let source = pair
            .connector
            .open_source(&pair.source, &settings)
            .await
            .unwrap();
        source.close().await;
        for n in 0..5 {
            conformance::send_confirmed(&sink, &Message::new(format!("m{n}")))
                .await
                .unwrap();
        }
        let mut source = pair
            .connector
            .open_source(&pair.source, &settings)
            .await
            .unwrap();
        for n in 0..5 {
            let delivery = conformance::receive(&mut source, "a message sent while away").await;
            assert_eq!(
                delivery.message.body,
                format!("m{n}"),
                "{}",
                fixture.protocol
            );
            delivery.ack.ack();
        }
        source.close().await;
    }
}

/// Two replicas on one shared subscription split the messages. A member killed while
/// holding messages gets them back when it returns with its client id (Mosquitto 2.0
/// keeps them in that member's session rather than giving them to the other): none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_splits_messages_and_a_killed_member_gets_its_own_back() {
    conformance::init_logs();
    let pair = V5.fresh("shared").await;
    let sink = pair.connector.open_sink(&pair.sink).await.unwrap();
    let replicas = unique("replica");
    let member = |client: &str| {
        source_settings(
            &pair,
            "shared",
            json!({"share_group": "replicas", "client_id": format!("{replicas}-{client}")}),
        )
    };
    let a_settings = member("a");
    let b_settings = member("b");
    let mut a = pair
        .connector
        .open_source(&pair.source, &a_settings)
        .await
        .unwrap();
    let mut b = pair
        .connector
        .open_source(&pair.source, &b_settings)
        .await
        .unwrap();
    for n in 0..20 {
        conformance::send_confirmed(&sink, &Message::new(format!("{n}")))
            .await
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut a_held = Vec::new();
    let mut b_count = 0;
    // Member a "crashes" holding what it received; b acknowledges.
    while seen.len() < 20 {
        tokio::select! {
            delivery = conformance::receive(&mut a, "a's share") => {
                seen.insert(String::from_utf8_lossy(&delivery.message.body).into_owned());
                a_held.push(delivery);
            }
            delivery = conformance::receive(&mut b, "b's share") => {
                assert!(seen.insert(String::from_utf8_lossy(&delivery.message.body).into_owned()), "twice");
                b_count += 1;
                delivery.ack.ack();
            }
        }
    }
    assert!(
        !a_held.is_empty() && b_count > 0,
        "a {} b {b_count}",
        a_held.len()
    );
    let held: std::collections::BTreeSet<_> = a_held
        .iter()
        .map(|d| String::from_utf8_lossy(&d.message.body).into_owned())
        .collect();
    for delivery in a_held {
        delivery.ack.abandon();
    }
    a.close().await;
    // While a is away, b does not receive a's messages.
    conformance::expect_silence(&mut b, "a's messages while a is away").await;
    let mut a = pair
        .connector
        .open_source(&pair.source, &a_settings)
        .await
        .unwrap();
    let mut back = std::collections::BTreeSet::new();
    while back.len() < held.len() {
        let delivery = conformance::receive(&mut a, "a's messages after its restart").await;
        back.insert(String::from_utf8_lossy(&delivery.message.body).into_owned());
        delivery.ack.ack();
    }
    assert_eq!(back, held);
    a.close().await;
    b.close().await;
}

/// MQTT 3.1.1 without `pack`: a message that is only a body goes as its payload; one with
/// headers is refused (permanent: to the dead letter) with an error saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_refuses_what_a_payload_cannot_hold_unless_packed() {
    let name = unique("plain");
    let connection = json!({"type": "mqtt", "url": URL, "protocol": "3.1.1", "client_id": name});
    let (_, connector) = conformance::connect(&connection, "the project's Mosquitto").await;
    let endpoint: Endpoint = format!("sys:topic/bridge-tests/{name}").parse().unwrap();
    let mut reader = connector
        .open_tail(&endpoint, &TailSettings::default())
        .await
        .unwrap();
    let sink = connector.open_sink(&endpoint).await.unwrap();
    let mut rich = Message::new("with a header");
    rich.headers.push("h", "v");
    let error = sink.send(&rich).await.err().expect("refused");
    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.message.contains("pack: true"), "{}", error.message);
    conformance::send_confirmed(&sink, &Message::new("{\"body\":\"plain\"}"))
        .await
        .unwrap();
    let delivery = conformance::receive(&mut reader, "the plain payload").await;
    assert_eq!(delivery.message.body, "{\"body\":\"plain\"}");
    assert!(delivery.message.headers.is_empty());
    reader.close().await;
}

/// A mosquitto of the test's own, configured with `config` (its listener line is added),
/// killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(config: &str, dir: tempfile::TempDir) -> Server {
        let port = ports::free_port();
        let file = dir.path().join("mosquitto.conf");
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        std::fs::write(
            &file,
            format!(
                "user {}\nlistener {port} 127.0.0.1\n{config}\n",
                user.trim()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (scripts/brokers.sh up mosquitto installs it)");
        ports::wait_until_listening(port, "mosquitto");
        Server {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(connection: &Value) -> Result<std::sync::Arc<dyn Connector>, String> {
    let parsed = bridge::adapter::connection_from_json(connection)?;
    parsed
        .connect(&ConnectContext::default())
        .await
        .map_err(|e| format!("{e} (retryable: {})", e.is_retryable()))
}

/// One message through a tail of the connection and back.
async fn round_trip(connection: &Value) {
    let connector = connect(connection).await.unwrap();
    let endpoint: Endpoint = "m:topic/auth/check".parse().unwrap();
    let mut reader = connector
        .open_tail(&endpoint, &TailSettings::default())
        .await
        .unwrap();
    let sink = connector.open_sink(&endpoint).await.unwrap();
    conformance::send_confirmed(&sink, &Message::new("authenticated"))
        .await
        .unwrap();
    let delivery = conformance::receive(&mut reader, "the message").await;
    assert_eq!(delivery.message.body, "authenticated");
    reader.close().await;
}

fn password_file(dir: &Path, user: &str, password: &str) -> String {
    let file = dir.join("passwords");
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&file)
        .args([user, password])
        .status()
        .unwrap();
    assert!(status.success());
    file.to_string_lossy().into_owned()
}

/// Both protocol versions, credentials in the URL or as fields; a wrong password fails at
/// once (not retryable) without showing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = password_file(dir.path(), "device", "s3cret-pw");
    let server = Server::start(
        &format!("allow_anonymous false\npassword_file {passwords}"),
        dir,
    );
    for protocol in ["5", "3.1.1"] {
        round_trip(&json!({"type": "mqtt", "protocol": protocol,
            "url": format!("mqtt://device:s3cret-pw@127.0.0.1:{}", server.port)}))
        .await;
        round_trip(&json!({"type": "mqtt", "protocol": protocol,
            "url": format!("mqtt://127.0.0.1:{}", server.port),
            "username": "device", "password": "s3cret-pw"}))
        .await;
        let error = connect(&json!({"type": "mqtt", "protocol": protocol,
            "url": format!("mqtt://device:Wr0ng-canary@127.0.0.1:{}", server.port)}))
        .await
        .err()
        .expect("a wrong password is refused");
        assert!(error.contains("retryable: false"), "{error}");
        assert!(!error.contains("Wr0ng-canary"), "{error}");
    }
}

/// `mqtts://` with the test's CA, and a client certificate where the server asks for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    certs::make_certificates(dir.path());
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let config = format!(
        "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true",
        file("ca.pem"),
        file("server.pem"),
        file("server.key")
    );
    let server = Server::start(&config, dir);
    let url = format!("mqtts://localhost:{}", server.port);
    round_trip(&json!({"type": "mqtt", "url": url,
        "tls": {"ca_file": ca, "cert_file": cert, "key_file": key}}))
    .await;
    // Without the client certificate the server refuses the handshake.
    let error = connect(&json!({"type": "mqtt", "url": url, "tls": {"ca_file": ca}}))
        .await
        .err()
        .expect("a client without a certificate is refused");
    assert!(error.contains("MQTT"), "{error}");
}

fn run_bridge(args: &[&str]) -> std::process::Output {
    process::bridge().args(args).output().unwrap()
}

/// `bridge send` and `tail` (a clean session: what is published from its start) and
/// `bridge request` (the reply read through a clean session subscribed before the request
/// goes out), with `--url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_tail_and_request_from_the_command_line() {
    conformance::init_logs();
    let topic = format!("bridge-tests/{}", unique("cli"));
    let mut tail = process::bridge()
        .args([
            "tail",
            &format!("m:topic/{topic}/#"),
            "--count",
            "1",
            "--json",
            "--url",
            URL,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tail subscribes at some point after it starts: send until it has printed one.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sent = run_bridge(&[
            "send",
            &format!("m:topic/{topic}/a"),
            "hello",
            "-H",
            "tenant=acme",
            "--url",
            URL,
        ]);
        assert_eq!(
            sent.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&sent.stderr)
        );
        if tail.try_wait().unwrap().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "tail printed nothing");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let tailed = tail.wait_with_output().unwrap();
    assert_eq!(
        tailed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&tailed.stderr)
    );
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&tailed.stdout).trim()).unwrap();
    assert_eq!(line["body"], "hello");
    assert_eq!(
        line["headers"][0],
        json!({"name": "tenant", "text": "acme"})
    );
    assert_eq!(line["origin"]["topic"], format!("{topic}/a"));

    // request: a replier reads the request and answers its reply-to.
    let connection = json!({"type": "mqtt", "url": URL, "client_id": unique("cli-replier")});
    let (_, mqtt) = conformance::connect(&connection, "the project's Mosquitto").await;
    let mut requests = mqtt
        .open_tail(
            &format!("m:topic/{topic}/rpc").parse().unwrap(),
            &TailSettings::default(),
        )
        .await
        .unwrap();
    let replier = tokio::spawn(async move {
        let delivery = conformance::receive(&mut requests, "the request").await;
        let request = delivery.message.clone();
        let reply_to = request
            .reply_to
            .clone()
            .expect("the request names its reply-to");
        let path = mqtt.reply_path(&reply_to).unwrap();
        let sink = mqtt
            .open_sink(&format!("m:{path}").parse().unwrap())
            .await
            .unwrap();
        let mut reply = Message::new(format!(
            "reply to {}",
            String::from_utf8_lossy(&request.body)
        ));
        reply.correlation_id = request.correlation_id.clone();
        conformance::send_confirmed(&sink, &reply).await.unwrap();
        requests.close().await;
    });
    let requested = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || {
            run_bridge(&[
                "request",
                &format!("m:topic/{topic}/rpc"),
                "ping",
                "--reply-from",
                &format!("m:topic/{topic}/reply"),
                "--reply-to",
                &format!("{topic}/reply"),
                "--timeout",
                "30s",
                "--json",
                "--url",
                URL,
            ])
        }
    })
    .await
    .unwrap();
    replier.await.unwrap();
    assert_eq!(
        requested.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&requested.stderr)
    );
    let reply: Value =
        serde_json::from_str(String::from_utf8_lossy(&requested.stdout).trim()).unwrap();
    assert_eq!(reply["body"], "reply to ping");
}
