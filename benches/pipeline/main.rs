//! The side-by-side pipeline benchmark: `cargo bench --bench pipeline` (or `bench/run.sh`).
//!
//! For each scenario it creates fresh places on the local brokers, preloads the source, and
//! drains it twice in the same run: first through a **raw pipe** (this binary re-executed as
//! `raw-pipe`: the same client crates, consume -> produce -> commit/ack after the broker's
//! confirmation, no router), then through `bridge run` with the equivalent route. Both are
//! child processes measured the same way from outside: throughput from the sink's own counts,
//! CPU from `/proc/PID/stat`, resident memory from `/proc/PID/status`, latency from a send
//! timestamp carried in the body to its arrival at the sink, at half the raw pipe's peak rate.
//! A peer bridge on PATH (`mq-bridge-app`, see `peer.rs`) is measured the same way after them.
//! It is a measurement, not a test: it fails only when a message does not arrive.
//!
//! `--headers` measures header scaling instead (`headers.rs`): bridge's cost per header of
//! records with 1,000 to 100,000 headers, and another route's latency meanwhile.

mod headers;
mod latency;
mod mqtt;
mod peer;
mod places;
mod procfs;
mod proxy;
mod raw;
mod report;
mod run;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const KAFKA: &str = "127.0.0.1:9092";
pub const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const AWS: &str = "http://127.0.0.1:4566";
pub const PUBSUB: &str = "http://127.0.0.1:8085";
pub const PROJECT: &str = "bridge-bench";
/// The project's own nats-server with JetStream (scripts/brokers.sh).
pub const NATS: &str = "nats://127.0.0.1:4223";
/// The project's own Redis (a system one may hold 6379).
pub const REDIS: &str = "redis://127.0.0.1:6390/0";
/// The project's own Mosquitto (a system one may hold 1883).
pub const MQTT_HOST: &str = "127.0.0.1";
pub const MQTT_PORT: u16 = 1884;

/// A broker system at one end of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sys {
    Kafka,
    Rabbit,
    Sqs,
    PubSub,
    Nats,
    /// Redis Streams, as a source only.
    Redis,
    /// MQTT 5, as a source only.
    Mqtt,
}

impl Sys {
    pub fn label(self) -> &'static str {
        match self {
            Sys::Kafka => "Kafka",
            Sys::Rabbit => "RabbitMQ",
            Sys::Sqs => "SQS",
            Sys::PubSub => "Pub/Sub",
            Sys::Nats => "NATS",
            Sys::Redis => "Redis Streams",
            Sys::Mqtt => "MQTT",
        }
    }
}

/// One benchmark scenario: `routes` routes, each from a `from` place to `fan_out` `to` places.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub from: Sys,
    pub to: Sys,
    pub fan_out: usize,
    pub routes: usize,
    pub size: usize,
    /// Source messages in the backlog drained (spread over the routes).
    pub count: usize,
    /// Whether to stall the sink (a paused TCP proxy in front of RabbitMQ) and watch memory.
    pub stall: bool,
    /// Whether bridge's routes reshape each message (three header operations and a jq
    /// projection of a JSON body); the raw pipe copies it unchanged.
    pub shaped: bool,
    /// bridge's routes limit themselves to this many messages a second (`rate`); the raw
    /// pipe is not limited, so the bridge column reads the rate held.
    pub rate: Option<u32>,
}

impl Scenario {
    pub fn name(&self) -> String {
        let mut name = format!("{} -> {}", self.from.label(), self.to.label());
        if self.fan_out > 1 {
            name = format!(
                "{} -> {} x{}",
                self.from.label(),
                self.to.label(),
                self.fan_out
            );
        }
        if self.routes > 1 {
            name = format!("{name}, {} routes", self.routes);
        }
        if self.shaped {
            name = format!("{name}, transformed");
        }
        if let Some(rate) = self.rate {
            name = format!("{name}, rate {rate}/s");
        }
        format!("{name}, {}", size_label(self.size))
    }
}

pub fn size_label(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Command-line options (after cargo's own `--bench`).
#[derive(Clone, Debug)]
pub struct Options {
    pub quick: bool,
    pub only: Option<String>,
    pub latency_for: Duration,
    pub stall_for: Duration,
    /// The in-flight window of both pipes (the route's `max_in_flight`).
    pub window: usize,
    /// Drains measured per pipe and scenario, the order alternating (see `run`).
    pub rounds: usize,
    /// Measure header scaling (`headers.rs`) instead of the scenarios.
    pub headers: bool,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut only = None;
    let mut window = bridge::config::model::default_max_in_flight();
    let mut rounds = 1;
    let mut headers = false;
    let usage = |problem: String| -> ! {
        eprintln!(
            "usage: pipeline [--quick] [--only TEXT] [--window N] [--rounds N] [--headers]  ({problem})"
        );
        std::process::exit(2);
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => only = args.next(),
            "--window" => {
                window = match args.next().and_then(|n| n.parse().ok()) {
                    Some(n) if n > 0 => n,
                    _ => usage("--window needs a positive number".into()),
                }
            }
            "--rounds" => {
                rounds = match args.next().and_then(|n| n.parse().ok()) {
                    Some(n) if n > 0 => n,
                    _ => usage("--rounds needs a positive number".into()),
                }
            }
            "--headers" => headers = true,
            "--bench" => {}
            other => usage(format!("unknown argument `{other}`")),
        }
    }
    Options {
        quick,
        only,
        latency_for: Duration::from_secs(if quick { 2 } else { 10 }),
        stall_for: Duration::from_secs(if quick { 3 } else { 30 }),
        window,
        rounds,
        headers,
    }
}

fn scenarios(options: &Options) -> Vec<Scenario> {
    let one = |from, to, size, count| Scenario {
        from,
        to,
        fan_out: 1,
        routes: 1,
        size,
        count,
        stall: false,
        shaped: false,
        rate: None,
    };
    let all = if options.quick {
        vec![
            one(Sys::Kafka, Sys::Kafka, 1024, 5_000),
            one(Sys::Rabbit, Sys::Kafka, 1024, 5_000),
            Scenario {
                stall: true,
                ..one(Sys::Kafka, Sys::Rabbit, 1024, 5_000)
            },
            one(Sys::Nats, Sys::Kafka, 1024, 5_000),
            one(Sys::Kafka, Sys::Nats, 1024, 5_000),
            one(Sys::Redis, Sys::Kafka, 1024, 5_000),
            one(Sys::Mqtt, Sys::Kafka, 1024, 5_000),
            Scenario {
                shaped: true,
                ..one(Sys::Kafka, Sys::Kafka, 1024, 5_000)
            },
        ]
    } else {
        let mut all = Vec::new();
        for size in [1024, 100] {
            all.push(one(Sys::Kafka, Sys::Kafka, size, 50_000));
            all.push(one(Sys::Rabbit, Sys::Kafka, size, 50_000));
            all.push(Scenario {
                stall: size == 1024,
                ..one(Sys::Kafka, Sys::Rabbit, size, 50_000)
            });
        }
        all.push(one(Sys::Sqs, Sys::Kafka, 1024, 2_000));
        all.push(one(Sys::PubSub, Sys::Kafka, 1024, 20_000));
        all.push(one(Sys::Nats, Sys::Kafka, 1024, 50_000));
        all.push(one(Sys::Kafka, Sys::Nats, 1024, 50_000));
        all.push(one(Sys::Redis, Sys::Kafka, 1024, 50_000));
        // Mosquitto queues at most 100,000 messages for a session that is away.
        all.push(one(Sys::Mqtt, Sys::Kafka, 1024, 50_000));
        all.push(Scenario {
            shaped: true,
            ..one(Sys::Kafka, Sys::Kafka, 1024, 50_000)
        });
        // 30 s at 1,000 a second.
        all.push(Scenario {
            rate: Some(1_000),
            ..one(Sys::Kafka, Sys::Kafka, 1024, 30_000)
        });
        all.push(Scenario {
            fan_out: 4,
            ..one(Sys::Kafka, Sys::Kafka, 1024, 20_000)
        });
        for routes in [10, 100] {
            all.push(Scenario {
                routes,
                ..one(Sys::Kafka, Sys::Kafka, 1024, 20_000)
            });
        }
        all
    };
    all.into_iter()
        .filter(|s| {
            options
                .only
                .as_ref()
                // `A|B` picks the scenarios whose name contains A or B.
                .is_none_or(|o| o.split('|').any(|part| s.name().contains(part)))
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("raw-pipe") {
        let spec = args.next().expect("raw-pipe needs its spec");
        raw::main(&spec);
        return;
    }
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if options.headers {
        println!(
            "header scaling{}: Kafka -> Kafka, one bridge process\n",
            if options.quick { " (quick mode)" } else { "" }
        );
        runtime.block_on(headers::run(&options));
        return;
    }
    let scenarios = scenarios(&options);
    println!(
        "pipeline benchmark: {} scenario(s){}, window {} in flight, {} round(s)\n",
        scenarios.len(),
        if options.quick { " (quick mode)" } else { "" },
        options.window,
        options.rounds
    );
    let mut rows = Vec::new();
    for scenario in &scenarios {
        println!("== {}", scenario.name());
        let row = runtime.block_on(run::compare(scenario, &options));
        report::print_row(&row);
        rows.push(row);
    }
    println!();
    report::print_table(&rows);
}
