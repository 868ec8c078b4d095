//! One scenario, measured twice in the same run: the raw pipe first (its peak rate sets the
//! rate of the latency phase for both), then `bridge run` with the equivalent routes file.
//! Each run gets fresh places, a preloaded backlog, and the same phases: drain (throughput,
//! CPU, memory), steady-rate latency, an optional stalled sink, and idle memory.
//!
//! With `--rounds N` the drain is measured N times per pipe, the order swapping each round
//! (raw, bridge, then bridge, raw, ...). A broker that slows down as it fills (tansu's sqlite
//! file grows through a run) would otherwise always charge the slowdown to the pipe measured
//! second; alternating cancels a steady drift. Rounds after the first measure the drain only.
//!
//! A peer bridge on PATH ([`crate::peer`]) is measured last, once, with every phase and the
//! raw pipe's latency rate.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::latency::{self, Latency};
use crate::places::{Clients, Places};
use crate::procfs::{self, Usage};
use crate::proxy::Proxy;
use crate::raw::PipeSpec;
use crate::{
    AWS, KAFKA, MQTT_HOST, MQTT_PORT, NATS, Options, PROJECT, PUBSUB, RABBIT, REDIS, Scenario, Sys,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipe {
    Raw,
    Bridge,
    /// A peer bridge found on PATH (see [`crate::peer`]).
    Peer,
}

/// Memory while the sink stops answering for a while with a backlog waiting at the source.
#[derive(Clone, Debug)]
pub struct Stall {
    pub backlog: usize,
    pub before_kib: u64,
    pub max_kib: u64,
    pub end_kib: u64,
    /// From the sink answering again to the whole backlog delivered.
    pub recovered_in: Duration,
}

#[derive(Clone, Debug)]
pub struct Measured {
    /// Source messages counted in the measured window (first arrival to last).
    pub messages: usize,
    pub size: usize,
    pub elapsed: Duration,
    pub cpu: Usage,
    /// CPU time of each local broker process meanwhile.
    pub brokers_cpu: procfs::BrokersCpu,
    pub rss_peak_kib: u64,
    pub rss_idle_kib: u64,
    pub latency: Option<Latency>,
    pub stall: Option<Stall>,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mb_per_second(&self) -> f64 {
        self.per_second() * self.size as f64 / 1_000_000.0
    }

    /// The CPU time of all local brokers together.
    pub fn brokers_total(&self) -> Duration {
        self.brokers_cpu.iter().map(|(_, used)| *used).sum()
    }

    pub fn cpu_us_per_message(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.messages as f64
    }
}

pub struct Row {
    pub name: String,
    /// The first round, with every phase.
    pub raw: Measured,
    pub bridge: Measured,
    /// Later rounds (drain only), as (raw, bridge).
    pub more: Vec<(Measured, Measured)>,
    /// The peer bridge's first round, when one is on PATH and handles the scenario.
    pub peer: Option<Measured>,
}

impl Row {
    /// Every round's (raw, bridge) pair, the first included.
    pub fn rounds(&self) -> impl Iterator<Item = (&Measured, &Measured)> {
        std::iter::once((&self.raw, &self.bridge)).chain(self.more.iter().map(|(r, b)| (r, b)))
    }

    /// Mean throughput over the rounds, raw and bridge.
    pub fn mean_per_second(&self) -> (f64, f64) {
        let n = self.rounds().count() as f64;
        let (raw, bridge) = self.rounds().fold((0.0, 0.0), |(r, b), (raw, bridge)| {
            (r + raw.per_second(), b + bridge.per_second())
        });
        (raw / n, bridge / n)
    }

    /// Bridge's mean throughput as a share of the raw pipe's.
    pub fn ratio(&self) -> f64 {
        let (raw, bridge) = self.mean_per_second();
        bridge / raw
    }
}

pub async fn compare(scenario: &Scenario, options: &Options) -> Row {
    let clients = Clients::connect().await;
    let raw = measure(&clients, scenario, options, Pipe::Raw, Phases::All(None)).await;
    let rate = raw.per_second() / 2.0;
    let bridge = measure(
        &clients,
        scenario,
        options,
        Pipe::Bridge,
        Phases::All(Some(rate)),
    )
    .await;
    let mut more = Vec::new();
    for round in 1..options.rounds {
        println!("   round {}", round + 1);
        let drain = |pipe| measure(&clients, scenario, options, pipe, Phases::Drain);
        let (raw, bridge) = if round % 2 == 1 {
            let bridge = drain(Pipe::Bridge).await;
            (drain(Pipe::Raw).await, bridge)
        } else {
            let raw = drain(Pipe::Raw).await;
            (raw, drain(Pipe::Bridge).await)
        };
        more.push((raw, bridge));
    }
    let peer = match crate::peer::binary() {
        Some(_) if crate::peer::handles(scenario) => Some(
            measure(
                &clients,
                scenario,
                options,
                Pipe::Peer,
                Phases::All(Some(rate)),
            )
            .await,
        ),
        _ => None,
    };
    Row {
        name: scenario.name(),
        raw,
        bridge,
        more,
        peer,
    }
}

/// What one measurement covers.
#[derive(Clone, Copy)]
enum Phases {
    /// Drain, latency (at this rate, or half the pipe's own peak), stall, idle memory.
    All(Option<f64>),
    /// The drain and idle memory only.
    Drain,
}

fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{:x}", nanos % 0xffff_ffff)
}

async fn measure(
    clients: &Clients,
    scenario: &Scenario,
    options: &Options,
    pipe: Pipe,
    phases: Phases,
) -> Measured {
    let tag = match pipe {
        Pipe::Raw => "raw",
        Pipe::Bridge => "bridge",
        Pipe::Peer => "peer",
    };
    let prefix = format!("bench-{tag}-{}", nonce());
    let places = Places::create(clients, scenario, &prefix).await;
    let per_route = scenario.count / scenario.routes;
    let started = Instant::now();
    places.preload(clients, per_route, scenario.size).await;
    println!(
        "   {tag}: preloaded {} messages in {:.1?}",
        per_route * scenario.routes,
        started.elapsed()
    );
    let proxy = if scenario.stall {
        Some(Proxy::start("127.0.0.1:5672").await)
    } else {
        None
    };
    let rabbit_url = match &proxy {
        Some(proxy) => format!("amqp://guest:guest@{}/%2f", proxy.addr),
        None => RABBIT.to_owned(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let child = match pipe {
        Pipe::Raw => start_raw(&places, options, &prefix, &rabbit_url, &dir),
        Pipe::Bridge => start_bridge(&places, options, &prefix, &rabbit_url, &dir),
        Pipe::Peer => {
            let file = dir.path().join("peer.yaml");
            let config = crate::peer::config(&places, &prefix, &rabbit_url, options.window);
            std::fs::write(&file, config).expect("peer config");
            let command = crate::peer::command(&file, dir.path());
            Running::start(command, dir.path().join("peer.log"), "peer bridge")
        }
    };
    let expected = per_route * scenario.routes * scenario.fan_out;

    // Drain: from the first message at the sinks to the last.
    let brokers = procfs::broker_pids();
    let mut first: Option<(Instant, usize, Usage, procfs::BrokersCpu)> = None;
    let mut rss_peak = 0;
    let deadline = Instant::now() + Duration::from_secs(900);
    let (end, end_usage, end_brokers) = loop {
        let arrived = places.arrived(clients).await;
        let now = Instant::now();
        let usage = child.usage();
        let brokers_cpu = procfs::cpu_of(&brokers);
        rss_peak = rss_peak.max(child.rss_kib());
        if first.is_none() && arrived > 0 {
            first = Some((now, arrived, usage, brokers_cpu.clone()));
        }
        if arrived >= expected {
            break (now, usage, brokers_cpu);
        }
        child.check_alive();
        assert!(
            now < deadline,
            "{tag}: only {arrived} of {expected} arrived; log:\n{}",
            child.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (start, at_start, start_usage, start_brokers) = first.expect("something arrived");
    let measured_messages = (expected - at_start) / scenario.fan_out;

    let latency = if let (Phases::All(rate), 1) = (phases, scenario.routes) {
        let rate = rate.unwrap_or_else(|| {
            measured_messages as f64 / end.duration_since(start).as_secs_f64() / 2.0
        });
        places.purge_sinks(clients).await;
        Some(latency::measure(clients, &places, rate, options.latency_for, scenario.size).await)
    } else {
        None
    };

    let stall = match (&proxy, phases) {
        (Some(proxy), Phases::All(_)) => {
            Some(stall(clients, &places, proxy, &child, options, scenario.size).await)
        }
        _ => None,
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = child.rss_kib();
    child.stop();
    places.remove(clients).await;
    Measured {
        messages: measured_messages,
        size: scenario.size,
        elapsed: end.duration_since(start),
        cpu: end_usage.since(start_usage),
        brokers_cpu: end_brokers
            .iter()
            .zip(&start_brokers)
            .map(|((name, end), (_, start))| (*name, end.saturating_sub(*start)))
            .collect(),
        rss_peak_kib: rss_peak,
        rss_idle_kib: rss_idle,
        latency,
        stall,
    }
}

/// Pauses the proxy in front of RabbitMQ, loads a backlog at the source, samples memory
/// every second while the sink is stalled, then lets it answer again and waits for all.
async fn stall(
    clients: &Clients,
    places: &Places,
    proxy: &Proxy,
    child: &Running,
    options: &Options,
    size: usize,
) -> Stall {
    places.purge_sinks(clients).await;
    let backlog = 10_000;
    let before_kib = child.rss_kib();
    proxy.pause();
    places.preload(clients, backlog, size).await;
    let mut max_kib = before_kib;
    let stalled = Instant::now();
    while stalled.elapsed() < options.stall_for {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_kib = max_kib.max(child.rss_kib());
        child.check_alive();
    }
    let end_kib = child.rss_kib();
    proxy.resume();
    let resumed = Instant::now();
    let deadline = resumed + Duration::from_secs(300);
    while places.arrived(clients).await < backlog {
        child.check_alive();
        assert!(
            Instant::now() < deadline,
            "the stalled backlog was not delivered; log:\n{}",
            child.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Stall {
        backlog,
        before_kib,
        max_kib,
        end_kib,
        recovered_in: resumed.elapsed(),
    }
}

/// A measured child process and its log.
struct Running {
    child: Child,
    log: PathBuf,
    what: &'static str,
}

impl Running {
    fn start(mut command: Command, log: PathBuf, what: &'static str) -> Running {
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {what}: {e}"));
        Running { child, log, what }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn usage(&self) -> Usage {
        procfs::usage(self.pid()).unwrap_or_default()
    }

    fn rss_kib(&self) -> u64 {
        procfs::rss_kib(self.pid()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn check_alive(&self) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // A zombie (state Z) has exited but not been waited for.
        let exited = status.is_empty()
            || status
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        assert!(
            !exited,
            "the {} exited early; log:\n{}",
            self.what,
            self.log_tail()
        );
    }

    /// SIGTERM, then SIGKILL if it has not exited after 30 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("the {} did not stop on SIGTERM; killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_raw(
    places: &Places,
    options: &Options,
    prefix: &str,
    rabbit_url: &str,
    dir: &tempfile::TempDir,
) -> Running {
    let spec = PipeSpec {
        from: places.from,
        to: places.to,
        routes: places
            .routes
            .iter()
            .map(|r| (r.source.clone(), r.sinks.clone()))
            .collect(),
        window: options.window,
        group: format!("{prefix}-group"),
        rabbit_url: rabbit_url.to_owned(),
    };
    let mut command = Command::new(std::env::current_exe().expect("this benchmark"));
    command
        .arg("raw-pipe")
        .arg(serde_json::to_string(&spec).expect("spec"));
    Running::start(command, dir.path().join("raw.log"), "raw pipe")
}

/// The routes file equivalent to the raw pipe: one route per source, fan-out to its sinks.
fn routes_file(places: &Places, options: &Options, prefix: &str, rabbit_url: &str) -> String {
    let endpoint = |sys: Sys, name: &str, as_source: bool| match sys {
        Sys::Kafka => format!("kafka:{name}"),
        Sys::Rabbit => format!("rabbit:queue/{name}"),
        Sys::Sqs => format!("aws:sqs/{name}"),
        Sys::PubSub if as_source => format!("pubsub:subscription/{name}-sub"),
        Sys::PubSub => format!("pubsub:topic/{name}"),
        Sys::Nats if as_source => format!("nats:stream/{name}"),
        Sys::Nats => format!("nats:subject/{}", crate::places::nats_subject(name)),
        Sys::Redis => format!("redis:stream/{name}"),
        Sys::Mqtt => format!("mqtt:topic/{name}"),
    };
    let mut connections = serde_json::Map::new();
    for sys in [places.from, places.to, Sys::Kafka] {
        let (name, connection) = match sys {
            Sys::Kafka => ("kafka", {
                let mut kafka = json!({"type": "kafka", "brokers": KAFKA, "group_id": format!("{prefix}-group")});
                // BENCH_KAFKA_PRODUCER_OPTIONS (JSON) tries librdkafka settings on bridge.
                if let Ok(extra) = std::env::var("BENCH_KAFKA_PRODUCER_OPTIONS") {
                    kafka["producer_options"] =
                        serde_json::from_str(&extra).expect("BENCH_KAFKA_PRODUCER_OPTIONS is JSON");
                }
                kafka
            }),
            Sys::Rabbit => ("rabbit", json!({"type": "rabbitmq", "url": rabbit_url})),
            Sys::Sqs => (
                "aws",
                json!({"type": "aws", "region": "us-east-1", "endpoint_url": AWS,
                    "access_key_id": "test", "secret_access_key": "test"}),
            ),
            Sys::PubSub => (
                "pubsub",
                json!({"type": "pubsub", "project": PROJECT, "endpoint": PUBSUB}),
            ),
            Sys::Nats => ("nats", json!({"type": "nats", "url": NATS})),
            Sys::Redis => ("redis", json!({"type": "redis", "url": REDIS})),
            Sys::Mqtt => (
                "mqtt",
                json!({"type": "mqtt", "url": format!("mqtt://{MQTT_HOST}:{MQTT_PORT}")}),
            ),
        };
        connections.insert(name.into(), connection);
    }
    let routes: Vec<serde_json::Value> = places
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let mut from = json!(endpoint(places.from, &route.source, true));
            // BENCH_GROUP_PER_ROUTE=1 gives each Kafka route a consumer group of its own.
            if places.from == Sys::Kafka && std::env::var_os("BENCH_GROUP_PER_ROUTE").is_some() {
                from = json!({"endpoint": from, "options": {"group_id": format!("{prefix}-group-{index}")}});
            }
            // The session made before the load (crate::mqtt), which holds the backlog.
            if places.from == Sys::Mqtt {
                from = json!({"endpoint": from, "options": {
                    "client_id": crate::mqtt::client_id(&route.source),
                    "session_expiry_s": crate::mqtt::SESSION_EXPIRY_S,
                }});
            }
            let mut route = json!({
                "name": format!("route-{index}"),
                "from": from,
                "to": route.sinks.iter().map(|s| endpoint(places.to, s, false)).collect::<Vec<_>>(),
                "max_in_flight": options.window,
                "dead_letter": format!("kafka:{}", places.dead_letter),
            });
            if let Some(rate) = places.rate {
                route["rate"] = json!({"messages": rate, "per": "1s", "burst": 1});
            }
            // BENCH_TRANSFORM (JSON) replaces the transformed scenario's transform.
            if places.shaped()
                && let Ok(transform) = std::env::var("BENCH_TRANSFORM")
            {
                route["transform"] =
                    serde_json::from_str(&transform).expect("BENCH_TRANSFORM is JSON");
            } else if places.shaped() {
                route["transform"] = json!({
                    "headers": {
                        "set": {"source": "bench"},
                        "remove": ["x-internal-*"],
                        "rename": {"trace": "trace-id"},
                    },
                    "body": {"jq": "{t: .t, pad: .pad}"},
                });
            }
            // BENCH_COUNT_HOPS=true|false|auto sets the routes' `count_hops`; by default
            // (`auto`) they write no loop guard's header, as none feeds its own source
            // (docs/guarantees.md#loop-guard).
            match std::env::var("BENCH_COUNT_HOPS").as_deref() {
                Ok("true") => route["count_hops"] = json!(true),
                Ok("false") => route["count_hops"] = json!(false),
                _ => {}
            }
            route
        })
        .collect();
    // JSON is YAML: the routes file is written in its flow form.
    serde_json::to_string_pretty(&json!({"connections": connections, "routes": routes}))
        .expect("routes file")
}

fn start_bridge(
    places: &Places,
    options: &Options,
    prefix: &str,
    rabbit_url: &str,
    dir: &tempfile::TempDir,
) -> Running {
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, routes_file(places, options, prefix, rabbit_url)).expect("routes file");
    // BENCH_BRIDGE_WRAPPER (e.g. `perf record -g -o bridge.perf --`) profiles bridge; the
    // figures are then those of the wrapper's process and only the profile is of use.
    let mut command = match std::env::var("BENCH_BRIDGE_WRAPPER") {
        Ok(wrapper) if !wrapper.trim().is_empty() => {
            let mut words = wrapper.split_whitespace();
            let mut command = Command::new(words.next().expect("a wrapper command"));
            command.args(words).arg(env!("CARGO_BIN_EXE_bridge"));
            command
        }
        _ => Command::new(env!("CARGO_BIN_EXE_bridge")),
    };
    command
        .arg("run")
        .arg(&file)
        .env("BRIDGE_HTTP_LISTEN", "127.0.0.1:0")
        .env("BRIDGE_LOG", "warn");
    Running::start(command, dir.path().join("bridge.log"), "bridge")
}
