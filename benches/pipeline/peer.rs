//! A peer bridge, measured like the other two pipes when it is on PATH: the Rust
//! `mq-bridge-app` (`cargo install mq-bridge-app`, binaries `mq-bridge-app` and `mqb`).
//! `BENCH_PEER=/path/to/binary` names it explicitly.
//!
//! Its routes file is written for mq-bridge-app 1.3.0 (a `routes:` map; each route has an
//! `input` and an `output` keyed by the endpoint type: `kafka`, `amqp`, `aws`), with the
//! route defaults (`concurrency` 1, `batch_size` 512), publishes acknowledged by the
//! broker (`delayed_ack: false`, its default) and an AMQP prefetch of the window. It has no
//! Pub/Sub endpoint, and its NATS, Redis and MQTT endpoints and its fan-out are left out,
//! so those scenarios run without it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::places::Places;
use crate::{AWS, KAFKA, Scenario, Sys};

/// The peer's binary: `BENCH_PEER`, else `mq-bridge-app` or `mqb` on PATH.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BENCH_PEER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["mq-bridge-app", "mqb"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Whether the peer can run `scenario` as the raw pipe does (its Pub/Sub, NATS, Redis and
/// MQTT endpoints are not written here).
pub fn handles(scenario: &Scenario) -> bool {
    let unmapped = [Sys::PubSub, Sys::Nats, Sys::Redis, Sys::Mqtt];
    scenario.fan_out == 1 && !unmapped.contains(&scenario.from) && !unmapped.contains(&scenario.to)
}

fn endpoint(
    sys: Sys,
    place: &str,
    group: &str,
    rabbit_url: &str,
    places: &Places,
) -> serde_json::Value {
    match sys {
        Sys::Kafka => json!({"kafka": {"url": KAFKA, "topic": place, "group_id": group}}),
        Sys::Rabbit => json!({"amqp": {"url": rabbit_url, "queue": place}}),
        Sys::Sqs => json!({"aws": {
            "queue_url": places.sqs_url(place),
            "region": "us-east-1",
            "endpoint_url": AWS,
            "access_key": "test",
            "secret_key": "test",
        }}),
        Sys::PubSub | Sys::Nats | Sys::Redis | Sys::Mqtt => {
            unreachable!("no peer endpoint is written for {sys:?} (see `handles`)")
        }
    }
}

/// The peer's configuration equivalent to the raw pipe: one route per source, an AMQP
/// source's prefetch set to the window (its default is 100).
pub fn config(places: &Places, prefix: &str, rabbit_url: &str, window: usize) -> String {
    let group = format!("{prefix}-group");
    let routes: serde_json::Map<String, serde_json::Value> = places
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let sink = route.sinks.first().expect("a route has a sink");
            let mut input = endpoint(places.from, &route.source, &group, rabbit_url, places);
            if places.from == Sys::Rabbit {
                input["amqp"]["prefetch_count"] = json!(window.min(usize::from(u16::MAX)));
            }
            (
                format!("route-{index}"),
                json!({
                    "input": input,
                    "output": endpoint(places.to, sink, &group, rabbit_url, places),
                }),
            )
        })
        .collect();
    // JSON is YAML.
    serde_json::to_string_pretty(&json!({"log_level": "warn", "routes": routes}))
        .expect("peer config")
}

/// The command that runs the peer on `file`, headless, from `dir` (it reads `.env` and
/// `config.yml` from its working directory, so it gets an empty one).
pub fn command(file: &Path, dir: &Path) -> Command {
    let mut command = Command::new(binary().expect("a peer on PATH"));
    command
        .arg("--config")
        .arg(file)
        .args(["--no-ui", "--no-metrics"])
        .current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MQB") {
            command.env_remove(name);
        }
    }
    command
}
