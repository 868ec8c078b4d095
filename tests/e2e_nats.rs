//! `bridge send`, `tail` and `request` against the project's own nats-server: a message sent
//! from the command line is read back by `tail` from a stream (through an ephemeral
//! consumer, so a route's durable consumer still gets it), and `request` prints the reply a
//! replier publishes to its reply subject.
#![cfg(feature = "nats")]

mod support;

use std::time::Duration;

use bridge::adapter::{SourceSettings, TailSettings};
use bridge::address::Endpoint;
use bridge::message::Message;
use serde_json::{Value, json};
use support::systems::NATS;
use support::{connector, init_logs, unique};

fn endpoint(path: String) -> Endpoint {
    Endpoint {
        connection: "n".into(),
        path,
    }
}

/// Runs `bridge ARGS` off the runtime's threads.
async fn bridge(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || support::process::bridge().args(&args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_tail_and_request_from_the_command_line() {
    init_logs();
    let name = unique("cli-nats");
    let stream = name.to_uppercase();
    let connection = json!({"type": "nats", "url": NATS,
        "declare": {"streams": [{"name": stream, "subjects": [format!("{name}.>")]}]}});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        format!("connections:\n  n: {connection}\nroutes: []\n"),
    )
    .unwrap();
    let config = file.to_str().unwrap().to_owned();
    let nats = connector(&connection).await;

    // send: confirmed by the stream's PubAck, whose sequence is printed.
    let sent = bridge(
        [
            "send",
            &format!("n:subject/{name}.in"),
            "hello",
            "-H",
            "tenant=acme",
            "--key",
            "k-1",
            "-c",
            &config,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(stdout.contains("offset=1"), "{stdout}");

    // tail: from the beginning of the stream, nothing acknowledged.
    let tailed = bridge(
        [
            "tail",
            &format!("n:stream/{stream}"),
            "--from-beginning",
            "--count",
            "1",
            "--json",
            "-c",
            &config,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(
        tailed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&tailed.stderr)
    );
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&tailed.stdout).trim()).unwrap();
    assert_eq!(line["body"], "hello");
    assert_eq!(line["key"], "k-1");
    assert_eq!(
        line["headers"][0],
        json!({"name": "tenant", "text": "acme"})
    );
    assert_eq!(line["origin"]["offset"], 1);

    // A route's durable consumer still gets the message tail read.
    let settings = SourceSettings {
        route: "after-tail".into(),
        options: bridge::adapter::SourceOptions::none(),
        max_in_flight: 16,
        dead_letter: true,
    };
    let mut durable = nats
        .open_source(&endpoint(format!("stream/{stream}")), &settings)
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(20), durable.recv())
        .await
        .expect("the durable consumer receives what tail read")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message.body, "hello");
    delivery.ack.ack();

    // request: a replier reads the request from the stream and answers its reply-to.
    let replier = {
        let nats = nats.clone();
        let mut requests = durable;
        tokio::spawn(async move {
            let delivery = requests.recv().await.unwrap().unwrap();
            let request = delivery.message.clone();
            delivery.ack.ack();
            let reply_to = request
                .reply_to
                .clone()
                .expect("the request names its reply-to");
            let path = nats.reply_path(&reply_to).unwrap();
            let sink = nats.open_sink(&endpoint(path)).await.unwrap();
            let mut reply = Message::new(format!(
                "reply to {}",
                String::from_utf8_lossy(&request.body)
            ));
            reply.correlation_id = request.correlation_id.clone();
            sink.send(&reply).await.unwrap().await.unwrap();
            requests.close().await;
        })
    };
    let requested = bridge(
        [
            "request",
            &format!("n:subject/{name}.rpc"),
            "ping",
            "--reply-from",
            &format!("n:subject/{name}.reply"),
            "--reply-to",
            &format!("{name}.reply"),
            "--timeout",
            "30s",
            "--json",
            "-c",
            &config,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
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

    // tail of a subject: a core subscription sees what is published from now on.
    let mut subscription = nats
        .open_tail(
            &endpoint(format!("subject/{name}.live")),
            &TailSettings::default(),
        )
        .await
        .unwrap();
    let sink = nats
        .open_sink(&endpoint(format!("core/{name}.live")))
        .await
        .unwrap();
    sink.send(&Message::new("live"))
        .await
        .unwrap()
        .await
        .unwrap();
    let live = tokio::time::timeout(Duration::from_secs(10), subscription.recv())
        .await
        .expect("the subscription sees the core publish")
        .unwrap()
        .unwrap();
    assert_eq!(live.message.body, "live");
    live.ack.ack();
    subscription.close().await;
}
