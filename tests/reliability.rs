//! Reliability scenarios (SPEC section 8) through `bridge run` against the local brokers.
//!
//! Each scenario writes the checker's numbered messages (several keys) into sources, runs
//! `bridge run` through a fault, and ends with a report: lost, duplicated, reordered per
//! key, time to recover ([`support::checker`]). Every scenario asserts 0 lost, per-key
//! order (routes use `ordering: key`) and duplicates within what one fault may make the
//! source deliver again (one window, two from Kafka), per fault. The bounded sizes run in
//! CI; `scripts/reliability.sh --long` runs more messages and more faults.
//! `scripts/test.sh` runs the scenarios that stop a broker (`broker_restart` in their
//! name), kill bridge (`sigkill`) or stall the network (`network_faults`) one at a time.
#![cfg(all(
    feature = "kafka",
    feature = "rabbitmq",
    feature = "aws",
    feature = "pubsub",
    feature = "nats"
))]

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::adapter::{Connector, SourceOptions, SourceSettings};
use serde_json::{Value, json};
use support::brokers::brokers;
use support::checker::{self, Arrivals, Report, long_mode};
use support::fault_proxy::{Fault, FaultProxy};
use support::flow::{publish, waited};
use support::process::Running;
use support::systems::{Place, Resources, Sys, source_yaml};
use support::{connector, init_logs, unique};

/// The routes' `max_in_flight`: RabbitMQ prefetch; a Kafka source may hand out twice this
/// past its last confirmed commit (`Sys::redelivered_at_most`).
const WINDOW: u32 = 256;

/// One route of a scenario, and what the checker saw at its sink and dead letter.
struct Flow {
    route: String,
    from: Sys,
    to: Sys,
    input: Place,
    output: Place,
    dead: Place,
    arrivals: Arc<Mutex<Arrivals>>,
    dead_letters: Arc<Mutex<Arrivals>>,
}

impl Flow {
    fn distinct(&self) -> usize {
        self.arrivals.lock().unwrap().distinct()
    }
}

/// A routes file over some systems, the checker's clients and readers.
struct Setup {
    name: String,
    dir: tempfile::TempDir,
    routes: PathBuf,
    flows: Vec<Flow>,
    clients: HashMap<&'static str, Arc<dyn Connector>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    stop_readers: tokio_util::sync::CancellationToken,
}

/// How a scenario changes the connections of its routes file.
#[derive(Default)]
struct Overrides {
    /// The RabbitMQ URL bridge uses (a fault proxy's).
    rabbit_url: Option<String>,
    /// The Kafka bootstrap address bridge and the checker use (a private broker's).
    kafka_brokers: Option<String>,
    /// Every route's `dedup:` (YAML flow mapping).
    dedup: Option<String>,
    /// The Kafka producer without idempotence, for a scenario that restarts tansu: its
    /// idempotent-producer state does not survive a restart (docs/testing.md).
    kafka_producer_not_idempotent: bool,
}

/// tansu evicts a killed member only after the group's session timeout and counts a
/// newcomer's join against it (docs/testing.md): 15 s keeps a restarted bridge from
/// evicting itself on a busy machine.
fn kafka_consumer_options(connection: &mut Value, session_timeout_ms: u32) {
    connection["consumer_options"] = json!({
        "session.timeout.ms": session_timeout_ms.to_string(),
        "heartbeat.interval.ms": "1000",
        "max.poll.interval.ms": "60000",
    });
}

impl Setup {
    async fn new(scenario: &str, pairs: &[(Sys, Sys)], overrides: Overrides) -> Setup {
        let dedup = overrides
            .dedup
            .as_ref()
            .map(|dedup| format!("    dedup: {dedup}\n"))
            .unwrap_or_default();
        let name = unique(scenario);
        let mut resources: HashMap<&'static str, Resources> = HashMap::new();
        let mut flows = Vec::new();
        for (index, &(from, to)) in pairs.iter().enumerate() {
            let route = format!("{}-to-{}", from.label(), to.label());
            let base = format!("{name}-{index}");
            let input = resources
                .entry(from.label())
                .or_insert_with(|| Resources::new(from, &name))
                .place(&format!("{base}-in"));
            let dead = resources
                .get_mut(from.label())
                .unwrap()
                .place(&format!("{base}-dlq"));
            let output = resources
                .entry(to.label())
                .or_insert_with(|| Resources::new(to, &name))
                .place(&format!("{base}-out"));
            flows.push(Flow {
                route,
                from,
                to,
                input,
                output,
                dead,
                arrivals: Arrivals::shared(),
                dead_letters: Arrivals::shared(),
            });
        }
        let mut connections = String::new();
        let mut clients = HashMap::new();
        for (label, resources) in &resources {
            let mut connection = resources.connection();
            let mut checker = resources.checker_connection();
            if resources.sys() == Sys::Kafka {
                kafka_consumer_options(&mut connection, 15_000);
                if overrides.kafka_producer_not_idempotent {
                    // One request in flight keeps per-key order without idempotence.
                    connection["producer_options"] = json!({
                        "enable.idempotence": "false",
                        "max.in.flight.requests.per.connection": "1",
                    });
                }
                // The checker's group must outlive any stall a scenario causes.
                kafka_consumer_options(&mut checker, 60_000);
                if let Some(brokers) = &overrides.kafka_brokers {
                    connection["brokers"] = json!(brokers);
                    checker["brokers"] = json!(brokers);
                }
            }
            if resources.sys() == Sys::Rabbit
                && let Some(url) = &overrides.rabbit_url
            {
                connection["url"] = json!(url);
            }
            connections.push_str(&format!("  {label}: {connection}\n"));
            clients.insert(*label, connector(&checker).await);
        }
        // MQTT queues messages only for sessions that subscribed: the routes' sessions
        // subscribe before anything is published.
        for flow in &flows {
            resources[flow.from.label()]
                .subscribe_ahead(&clients[flow.from.label()], &flow.input, Some(&flow.route))
                .await;
        }
        let mut routes = format!("connections:\n{connections}routes:\n");
        for flow in &flows {
            routes.push_str(&format!(
                "  - name: {}\n    from: {}\n    to: '{}:{}'\n    dead_letter: '{}:{}'\n    ordering: key\n    max_in_flight: {WINDOW}\n{dedup}",
                flow.route,
                source_yaml(flow.from.label(), &flow.input),
                flow.to.label(),
                flow.output.sink,
                flow.from.label(),
                flow.dead.sink,
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.yaml");
        std::fs::write(&file, &routes).unwrap();
        let mut setup = Setup {
            name,
            dir,
            routes: file,
            flows,
            clients,
            readers: Vec::new(),
            stop_readers: tokio_util::sync::CancellationToken::new(),
        };
        // Opening the checker's readers also makes sure every place exists.
        for index in 0..setup.flows.len() {
            let flow = &setup.flows[index];
            let (to, output) = (flow.to, flow.output.clone());
            let (from, dead) = (flow.from, flow.dead.clone());
            let (arrivals, dead_letters) = (flow.arrivals.clone(), flow.dead_letters.clone());
            let reader = setup.read(to, &output, arrivals).await;
            let dead_reader = setup.read(from, &dead, dead_letters).await;
            setup.readers.extend([reader, dead_reader]);
        }
        setup
    }

    async fn read(
        &self,
        sys: Sys,
        place: &Place,
        arrivals: Arc<Mutex<Arrivals>>,
    ) -> tokio::task::JoinHandle<()> {
        let settings = SourceSettings {
            route: "checker".into(),
            options: place.options.clone(),
            max_in_flight: 512,
            dead_letter: true,
        };
        let source = self.clients[sys.label()]
            .open_source(
                &format!("test:{}", place.source).parse().unwrap(),
                &settings,
            )
            .await
            .unwrap();
        checker::collect_until(source, arrivals, self.stop_readers.clone())
    }

    /// Stops and closes the checker's readers, while their brokers are still up.
    async fn close_readers(&mut self) {
        self.stop_readers.cancel();
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
    }

    /// Writes checker messages `0..count` into every flow's source.
    async fn publish(&self, count: u32) {
        self.publish_where(|_| true, 0..count).await;
    }

    /// Writes checker messages `numbers` into the sources of the flows `wanted` picks.
    async fn publish_where(&self, wanted: impl Fn(&Flow) -> bool, numbers: std::ops::Range<u32>) {
        for flow in self.flows.iter().filter(|flow| wanted(flow)) {
            let endpoint = format!("test:{}", flow.input.sink);
            publish(
                &self.clients[flow.from.label()],
                &endpoint,
                numbers.clone().map(checker::message),
                500,
            )
            .await;
        }
    }

    fn start(&self) -> Running {
        Running::start(&self.routes, &self.dir.path().join("bridge.log"))
    }

    /// A second replica of the same routes (`BRIDGE_REPLICA`), logging apart.
    fn start_replica(&self, replica: &str) -> Running {
        let log = self.dir.path().join(format!("bridge-{replica}.log"));
        Running::start_replica(&self.routes, &log, replica)
    }

    /// How many lines of the bridge log (every run appends to it) contain `text`.
    fn logged(&self, text: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default();
        log.lines().filter(|line| line.contains(text)).count()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("bridge.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn progress(&self) -> String {
        self.flows
            .iter()
            .map(|flow| format!("{} {}", flow.route, flow.distinct()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Waits until every flow has delivered `count` distinct messages.
    async fn wait_for_all(&self, count: u32, timeout: Duration, what: &str) {
        let done = || self.flows.iter().all(|f| f.distinct() >= count as usize);
        assert!(
            waited(timeout, done).await,
            "{}: timed out waiting for {what}: {}; bridge log:\n{}",
            self.name,
            self.progress(),
            self.log_tail()
        );
    }

    /// Every flow's report merged, with the longest recovery after any of `fault_ends`,
    /// after checking that each flow has at most `faults` times what one fault can make
    /// its source deliver again.
    async fn report(
        &mut self,
        scenario: &str,
        sent: u32,
        fault_ends: &[Instant],
        faults: u32,
    ) -> Report {
        self.close_readers().await;
        let mut merged: Option<Report> = None;
        for flow in &self.flows {
            let arrivals = flow.arrivals.lock().unwrap();
            let recovery = fault_ends
                .iter()
                .filter_map(|&end| arrivals.progress_after(end))
                .max();
            let report = arrivals
                .report(&format!("{scenario} {}", flow.route), sent)
                .with_recovery(recovery);
            println!("{}: {report:?}", flow.route);
            // Reordering is counted everywhere, and asserted where both systems keep order.
            let ordered = flow.from.keeps_order() && flow.to.keeps_order();
            report.assert_holds(faults * flow.from.redelivered_at_most(WINDOW), ordered);
            merged = Some(match merged {
                None => report,
                Some(merged) => merged.merge(report),
            });
        }
        let mut merged = merged.expect("a scenario has flows");
        merged.scenario = scenario.to_owned();
        merged.publish();
        merged
    }

    fn dead_lettered(&self) -> usize {
        self.flows
            .iter()
            .map(|f| f.dead_letters.lock().unwrap().distinct())
            .sum()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// A small pseudo-random sequence (xorshift), seeded from the clock or
/// `BRIDGE_RELIABILITY_SEED`, printed so that a run can be repeated.
struct Dice(u64);

impl Dice {
    fn new() -> Dice {
        let seed = std::env::var("BRIDGE_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("seed {seed} (BRIDGE_RELIABILITY_SEED)");
        Dice(seed)
    }

    /// A duration between `low` and `high`.
    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let span = (high - low).as_millis() as u64;
        low + Duration::from_millis(self.0 % span.max(1))
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

const RABBIT_AND_KAFKA: [(Sys, Sys); 2] = [(Sys::Rabbit, Sys::Kafka), (Sys::Kafka, Sys::Rabbit)];

/// Kills bridge at random moments while it moves messages along `pairs` (source, sink),
/// restarting it each time; returns the report. With `may_duplicate`, each kill may make a
/// flow's source deliver again what it is allowed to; without, nothing may arrive twice.
async fn sigkill_cycles(
    scenario: &str,
    pairs: &[(Sys, Sys)],
    overrides: Overrides,
    may_duplicate: bool,
    bounded_count: u32,
) -> Report {
    init_logs();
    let (count, kills) = if long_mode() {
        (bounded_count * 15 / 2, 10)
    } else {
        (bounded_count, 3)
    };
    let mut setup = Setup::new("sigkill", pairs, overrides).await;
    setup.publish(count).await;
    let mut dice = Dice::new();
    let mut restarts = Vec::new();
    let mut running = setup.start();
    let mut started_before_last = 0;
    for kill in 0..kills {
        // Kill mid-stream: once both routes moved since the (re)start, at a random moment.
        let before: Vec<usize> = setup.flows.iter().map(Flow::distinct).collect();
        let moved =
            || {
                setup.flows.iter().zip(&before).all(|(flow, &b)| {
                    flow.distinct() > b + 100 || flow.distinct() >= count as usize
                })
            };
        assert!(
            waited(Duration::from_secs(120), moved).await,
            "no progress before kill {kill}: {}; log:\n{}",
            setup.progress(),
            setup.log_tail()
        );
        tokio::time::sleep(dice.between(Duration::ZERO, Duration::from_millis(1500))).await;
        running.kill();
        println!("kill {kill} at {}", setup.progress());
        // Counted after the kill (which waits for the exit): a run killed while it was
        // still starting never says it is running, so only the newest run can add a line.
        started_before_last = setup.logged("bridge is running");
        running = setup.start();
        restarts.push(Instant::now());
    }
    setup
        .wait_for_all(count, Duration::from_secs(300), "every message")
        .await;
    // The last restart may have had nothing left to do: a SIGTERM before its signal
    // handlers are installed would end it by the signal instead of a drain.
    let started = || setup.logged("bridge is running") > started_before_last;
    assert!(
        waited(Duration::from_secs(60), started).await,
        "the last restart did not start"
    );
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    assert_eq!(setup.dead_lettered(), 0, "nothing is dead-lettered");
    setup
        .report(
            scenario,
            count,
            &restarts,
            if may_duplicate { kills } else { 0 },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_keeps_order() {
    sigkill_cycles(
        "SIGKILL at random moments",
        &RABBIT_AND_KAFKA,
        Overrides::default(),
        true,
        4_000,
    )
    .await;
}

/// The same kills with a NATS JetStream source and a NATS JetStream sink (RabbitMQ on the
/// other side): nothing is lost, and each kill makes the JetStream source deliver again at
/// most its window (messages unacknowledged at the kill come back after their 5 s ack
/// wait, behind newer ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_nats_as_source_and_sink_loses_nothing() {
    sigkill_cycles(
        "SIGKILL at random moments, NATS",
        &[(Sys::Nats, Sys::Rabbit), (Sys::Rabbit, Sys::Nats)],
        Overrides::default(),
        true,
        // NATS and RabbitMQ restart within a second: enough messages that every kill
        // falls mid-stream.
        20_000,
    )
    .await;
}

/// The same kills with an MQTT 5 source and sink (RabbitMQ on the other side): the
/// route's persistent session keeps what arrives while bridge is down, and each kill makes
/// the MQTT source deliver again at most its window (what was unacknowledged at the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_mqtt_as_source_and_sink_loses_nothing() {
    sigkill_cycles(
        "SIGKILL at random moments, MQTT",
        &[(Sys::Mqtt, Sys::Rabbit), (Sys::Rabbit, Sys::Mqtt)],
        Overrides::default(),
        true,
        20_000,
    )
    .await;
}

/// The same kills with a Redis Streams source and sink: the killed process's pending
/// entries are its own consumer's, taken first when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_redis_as_source_and_sink_loses_nothing() {
    sigkill_cycles(
        "SIGKILL at random moments, Redis Streams",
        &[(Sys::Redis, Sys::Rabbit), (Sys::Rabbit, Sys::Redis)],
        Overrides::default(),
        true,
        20_000,
    )
    .await;
}

/// Two replicas of `bridge run` share each flow's source (an MQTT shared subscription, a
/// Redis consumer group, each replica with an identity of its own); one is killed
/// mid-stream and comes back with its identity: nothing is lost, and what the killed one
/// held comes back at most once per kill.
async fn replicas_share_a_source_and_survive_a_kill(scenario: &str, pairs: &[(Sys, Sys)]) {
    init_logs();
    let count = 6_000;
    let mut setup = Setup::new("replicas", pairs, Overrides::default()).await;
    setup.publish(count).await;
    let first = setup.start();
    let second = setup.start_replica("2");
    let moved = || {
        setup
            .flows
            .iter()
            .all(|flow| flow.distinct() > count as usize / 4)
    };
    assert!(
        waited(Duration::from_secs(120), moved).await,
        "no progress before the kill: {}",
        setup.progress()
    );
    first.kill();
    println!("killed replica 1 at {}", setup.progress());
    let first = setup.start();
    let restarts = [Instant::now()];
    setup
        .wait_for_all(count, Duration::from_secs(180), "every message")
        .await;
    for running in [first, second] {
        running.signal("TERM");
        assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    }
    assert_eq!(setup.dead_lettered(), 0, "nothing is dead-lettered");
    setup.report(scenario, count, &restarts, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_of_two_replicas_on_an_mqtt_shared_subscription() {
    replicas_share_a_source_and_survive_a_kill(
        "two replicas, one killed, MQTT shared subscription",
        &[(Sys::Mqtt, Sys::Rabbit)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_of_two_replicas_on_a_redis_consumer_group() {
    replicas_share_a_source_and_survive_a_kill(
        "two replicas, one killed, Redis consumer group",
        &[(Sys::Redis, Sys::Rabbit)],
    )
    .await;
}

/// Deduplication keyed by the checker's sequence number, in Redis (on this machine):
/// identities of this run only, since Redis outlives it.
fn dedup_in_redis() -> Overrides {
    let run = unique("dedup");
    Overrides {
        dedup: Some(format!(
            "{{key: '{run}-{{{{ headers.seq }}}}', window: 10m, store: 'redis://127.0.0.1:6390/0'}}"
        )),
        ..Overrides::default()
    }
}

/// The same kills with deduplication in Redis (on this machine), keyed by the checker's
/// sequence number: what a redelivery brings again was remembered and is dropped; only a
/// send still unconfirmed at the kill can arrive twice (docs/reliability.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_deduplication_in_redis() {
    let report = sigkill_cycles(
        "SIGKILL at random moments, dedup in Redis",
        &RABBIT_AND_KAFKA,
        dedup_in_redis(),
        true,
        4_000,
    )
    .await;
    println!("with deduplication: {} duplicates", report.duplicates);
}

/// The same kills and deduplication with sinks that deduplicate too, SQS FIFO queues:
/// bridge sends each message's identity as its `MessageDeduplicationId`, so a send still
/// unconfirmed at a kill and sent again after the restart is stored once. Every message
/// arrives exactly once, in order per key. Fewer messages: the checker reads a FIFO queue
/// from moto slowly (a group stays locked until its message is deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_deduplication_into_sqs_fifo_delivers_each_message_once() {
    let report = sigkill_cycles(
        "SIGKILL at random moments, dedup in Redis, into SQS FIFO",
        &[(Sys::Rabbit, Sys::SqsFifo), (Sys::Kafka, Sys::SqsFifo)],
        dedup_in_redis(),
        false,
        1_000,
    )
    .await;
    assert_eq!(report.duplicates, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_exits_0_and_duplicates_nothing() {
    init_logs();
    let count = if long_mode() { 20_000 } else { 3_000 };
    let mut setup = Setup::new("sigterm", &RABBIT_AND_KAFKA, Overrides::default()).await;
    setup.publish(count).await;
    let first = setup.start();
    let third = || {
        setup
            .flows
            .iter()
            .all(|f| f.distinct() >= count as usize / 3)
    };
    assert!(
        waited(Duration::from_secs(120), third).await,
        "{}",
        setup.progress()
    );
    first.signal("TERM");
    assert_eq!(
        first.wait(Duration::from_secs(60)),
        Some(0),
        "the drain ends with exit 0"
    );
    let stopped = Instant::now();
    println!("stopped at {}", setup.progress());
    let second = setup.start();
    setup
        .wait_for_all(count, Duration::from_secs(240), "every message")
        .await;
    second.signal("TERM");
    assert_eq!(second.wait(Duration::from_secs(60)), Some(0));
    // Dead letters would have arrived by now: the checker reads them all along.
    assert_eq!(
        setup.dead_lettered(),
        0,
        "nothing is dead-lettered because of shutdown"
    );
    setup
        .report("SIGTERM under load, then restart", count, &[stopped], 0)
        .await;
}

/// Stops `broker` (the system `down`) for `outage` while routes into and out of it are
/// busy: a route from it has a backlog at its source, and a route into it gets the second
/// half of its messages during the outage, so that they wait for the sink.
async fn broker_outage(
    scenario: &str,
    (broker, down): (&str, Sys),
    pairs: &[(Sys, Sys)],
    count: u32,
    outage: Duration,
) {
    init_logs();
    let overrides = Overrides {
        kafka_producer_not_idempotent: down == Sys::Kafka,
        ..Overrides::default()
    };
    let mut setup = Setup::new(&format!("outage-{broker}"), pairs, overrides).await;
    let half = count / 2;
    setup
        .publish_where(|flow| flow.from == down, 0..count)
        .await;
    setup.publish_where(|flow| flow.from != down, 0..half).await;
    let running = setup.start();
    let third = || {
        setup
            .flows
            .iter()
            .all(|f| f.distinct() >= count as usize / 3)
    };
    assert!(
        waited(Duration::from_secs(180), third).await,
        "{}",
        setup.progress()
    );
    let rss_before = rss_kib(running.pid());
    brokers("pause", broker);
    let paused = Instant::now();
    setup
        .publish_where(|flow| flow.from != down, half..count)
        .await;
    let mut rss_peak = rss_before;
    while paused.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(rss_kib(running.pid()));
    }
    println!("during the outage: {}", setup.progress());
    brokers("resume", broker);
    let resumed = Instant::now();
    setup
        .wait_for_all(
            count,
            Duration::from_secs(300),
            "every message after the outage",
        )
        .await;
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    assert_eq!(setup.dead_lettered(), 0, "an outage dead-letters nothing");
    println!(
        "resident memory: {} MiB before, {} MiB at most during the outage",
        rss_before / 1024,
        rss_peak / 1024
    );
    // The routes hold at most their windows: memory must not grow with the backlog.
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_peak} KiB"
    );
    setup.report(scenario, count, &[resumed], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_kafka_down_30s_mid_stream() {
    let count = if long_mode() { 20_000 } else { 4_000 };
    broker_outage(
        "Kafka (tansu) stopped 30 s: sink and source down",
        ("kafka", Sys::Kafka),
        &RABBIT_AND_KAFKA,
        count,
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_rabbitmq_down_mid_stream() {
    let count = if long_mode() { 20_000 } else { 4_000 };
    broker_outage(
        "RabbitMQ stopped 10 s",
        ("rabbitmq", Sys::Rabbit),
        &RABBIT_AND_KAFKA,
        count,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_moto_frozen_mid_stream() {
    let count = if long_mode() { 3_000 } else { 600 };
    broker_outage(
        "SQS (moto) frozen 10 s",
        ("aws", Sys::Sqs),
        &[(Sys::Sqs, Sys::Rabbit), (Sys::Rabbit, Sys::Sqs)],
        count,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_pubsub_emulator_frozen_mid_stream() {
    let count = if long_mode() { 10_000 } else { 2_000 };
    broker_outage(
        "Pub/Sub emulator frozen 10 s",
        ("pubsub", Sys::PubSub),
        &[(Sys::PubSub, Sys::Rabbit), (Sys::Rabbit, Sys::PubSub)],
        count,
        Duration::from_secs(10),
    )
    .await;
}

/// A private tansu whose advertised address is a fault proxy, so that every Kafka
/// connection (bootstrap and partition leaders alike) goes through the proxy.
struct ProxiedKafka {
    proxy: FaultProxy,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl ProxiedKafka {
    async fn start() -> ProxiedKafka {
        let port = support::ports::free_port();
        let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let proxy = FaultProxy::start(upstream).await;
        let dir = tempfile::tempdir().unwrap();
        let tools = std::env::var("BRIDGE_TOOLS").unwrap_or_else(|_| "/opt/bridge-tools".into());
        let child = std::process::Command::new(format!("{tools}/tansu/bin/tansu"))
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://{}", proxy.addr),
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdout(std::fs::File::create(dir.path().join("tansu.log")).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu is installed by scripts/brokers.sh");
        let reachable = waited(Duration::from_secs(30), || {
            std::net::TcpStream::connect(upstream).is_ok()
        })
        .await;
        assert!(reachable, "the private tansu did not start");
        ProxiedKafka {
            proxy,
            child,
            _dir: dir,
        }
    }
}

impl Drop for ProxiedKafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_between_bridge_and_rabbitmq_and_kafka() {
    init_logs();
    let count = if long_mode() { 20_000 } else { 3_000 };
    let rabbit_proxy = FaultProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let kafka = ProxiedKafka::start().await;
    let overrides = Overrides {
        rabbit_url: Some(format!("amqp://guest:guest@{}/%2f", rabbit_proxy.addr)),
        kafka_brokers: Some(kafka.proxy.addr.to_string()),
        ..Overrides::default()
    };
    let mut setup = Setup::new("netfault", &RABBIT_AND_KAFKA, overrides).await;
    setup.publish(count).await;
    let running = setup.start();
    let step = |fraction: usize| {
        let flows = &setup.flows;
        move || {
            flows
                .iter()
                .all(|f| f.distinct() >= count as usize * fraction / 5)
        }
    };
    let set = |fault: Fault| {
        rabbit_proxy.set(fault);
        kafka.proxy.set(fault);
    };
    let mut fault_ends = Vec::new();
    let began = Instant::now();
    let phase = |name: &str| println!("{:?} {name}: {}", began.elapsed(), setup.progress());
    assert!(
        waited(Duration::from_secs(120), step(1)).await,
        "{}",
        setup.progress()
    );
    phase("latency");
    // 1. Added latency: 30 ms on every chunk, both ways, for 5 s.
    set(Fault::Latency(Duration::from_millis(30)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    set(Fault::None);
    fault_ends.push(Instant::now());
    assert!(
        waited(Duration::from_secs(120), step(2)).await,
        "{}",
        setup.progress()
    );
    phase("cut");
    // 2. Every connection cut at once.
    rabbit_proxy.cut().await;
    kafka.proxy.cut().await;
    fault_ends.push(Instant::now());
    assert!(
        waited(Duration::from_secs(120), step(3)).await,
        "{}",
        setup.progress()
    );
    phase("half-open");
    // 3. Half-open: connections stay up but nothing moves. RabbitMQ's for 25 s, longer
    // than its heartbeat (10 s), so the dead connection is noticed and replaced. Kafka's
    // for 8 s, within the session timeout (15 s): a longer stall wedges the private tansu
    // (its group never completes the next rebalance; docs/reliability.md).
    set(Fault::Stall);
    tokio::time::sleep(Duration::from_secs(8)).await;
    kafka.proxy.set(Fault::None);
    tokio::time::sleep(Duration::from_secs(17)).await;
    rabbit_proxy.set(Fault::None);
    fault_ends.push(Instant::now());
    phase("after the faults");
    setup
        .wait_for_all(
            count,
            Duration::from_secs(300),
            "every message after the faults",
        )
        .await;
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    assert_eq!(
        setup.dead_lettered(),
        0,
        "network faults dead-letter nothing"
    );
    setup
        .report(
            "network faults (latency, cut, half-open) on RabbitMQ and Kafka",
            count,
            &fault_ends,
            3,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_poison_messages_while_the_dead_letter_is_down() {
    init_logs();
    let count: u32 = if long_mode() { 5_000 } else { 600 };
    // Poison only after the first third, which flows before the dead letter goes down.
    let poison: Vec<u32> = (count / 3..count).filter(|n| n % 100 == 37).collect();
    let name = unique("poison");
    let (exchange, queue, topic) = (
        format!("{name}-x"),
        format!("{name}-ok"),
        format!("{name}-in"),
    );
    let dlq = format!("{name}-dlq");
    let rabbit = json!({"type": "rabbitmq", "url": support::systems::RABBIT, "declare": {
        "exchanges": [{"name": exchange, "kind": "direct", "durable": false}],
        "queues": [{"name": queue, "arguments": {"x-expires": 900_000}, "bindings": [{"exchange": exchange, "routing_key": "ok"}]}]}});
    let mut kafka = json!({"type": "kafka", "brokers": support::systems::KAFKA, "group_id": format!("{name}-bridge"),
        "declare": [{"name": topic, "partitions": 2}]});
    kafka_consumer_options(&mut kafka, 15_000);
    let aws = json!({"type": "aws", "region": "us-east-1", "endpoint_url": support::systems::AWS,
        "access_key_id": "test", "secret_access_key": "test", "declare": {"queues": [{"name": dlq}]}});
    // Poison: routed to a key no queue is bound to, refused by RabbitMQ as unroutable.
    let routes = format!(
        "connections:\n  rabbit: {rabbit}\n  kafka: {kafka}\n  aws: {aws}\nroutes:\n  - name: poison\n    from: kafka:{topic}\n    to: 'rabbit:exchange/{exchange}/{{{{ headers.rk }}}}'\n    dead_letter: aws:sqs/{dlq}\n    ordering: key\n    max_in_flight: {WINDOW}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &routes).unwrap();
    let mut checker_kafka = kafka.clone();
    checker_kafka["group_id"] = json!(format!("{name}-checker"));
    let kafka_client = connector(&checker_kafka).await;
    let rabbit_client = connector(&rabbit).await;
    let aws_client = connector(&aws).await;
    let arrivals = Arrivals::shared();
    let dead = Arrivals::shared();
    let settings = SourceSettings {
        route: "checker".into(),
        options: SourceOptions::none(),
        max_in_flight: 512,
        dead_letter: true,
    };
    let readers = [
        checker::collect(
            rabbit_client
                .open_source(&format!("test:queue/{queue}").parse().unwrap(), &settings)
                .await
                .unwrap(),
            arrivals.clone(),
        ),
        checker::collect(
            aws_client
                .open_source(&format!("test:sqs/{dlq}").parse().unwrap(), &settings)
                .await
                .unwrap(),
            dead.clone(),
        ),
    ];
    let with_routing_key = |n: u32| {
        let mut message = checker::message(n);
        let rk = if poison.contains(&n) { "nowhere" } else { "ok" };
        message.headers.push("rk", rk);
        message
    };
    let endpoint = format!("test:{topic}");
    // A third flows first (opening the dead letter's sink needs SQS), then SQS freezes and
    // the rest, poison included, is written.
    let first_part = count / 3;
    publish(
        &kafka_client,
        &endpoint,
        (0..first_part).map(with_routing_key),
        500,
    )
    .await;
    let running = Running::start(&file, &dir.path().join("bridge.log"));
    let log = dir.path().join("bridge.log");
    let delivered = || arrivals.lock().unwrap().distinct();
    assert!(
        waited(Duration::from_secs(120), || delivered()
            >= first_part as usize)
        .await,
        "{} of {first_part} before the freeze; log:\n{}",
        delivered(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    brokers("pause", "aws");
    publish(
        &kafka_client,
        &endpoint,
        (first_part..count).map(with_routing_key),
        500,
    )
    .await;
    // The keys without poison keep flowing while the dead letter is down.
    let flowing = waited(Duration::from_secs(60), || {
        delivered() >= first_part as usize + 100
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    brokers("resume", "aws");
    let resumed = Instant::now();
    assert!(flowing, "messages flow while the dead letter is down");
    let healthy = (count as usize) - poison.len();
    let done = waited(Duration::from_secs(240), || {
        delivered() >= healthy && dead.lock().unwrap().distinct() >= poison.len()
    })
    .await;
    assert!(
        done,
        "delivered {} of {healthy}, dead-lettered {} of {}; log:\n{}",
        delivered(),
        dead.lock().unwrap().distinct(),
        poison.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // A second dead letter of the same message would show up within a few more seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    running.signal("TERM");
    assert_eq!(running.wait(Duration::from_secs(60)), Some(0));
    for reader in readers {
        reader.abort();
    }
    let (arrivals, dead) = (arrivals.lock().unwrap(), dead.lock().unwrap());
    let delivered = arrivals.report("poison: delivered", count);
    let dead_report = dead.report("poison: dead letters", count);
    assert_eq!(
        delivered.lost as usize,
        poison.len(),
        "only the poison is missing from the sink"
    );
    assert_eq!(
        dead_report.duplicates, 0,
        "each poison message is dead-lettered once"
    );
    assert_eq!(dead.distinct(), poison.len());
    assert_eq!(delivered.reordered, 0);
    assert!(delivered.duplicates <= Sys::Kafka.redelivered_at_most(WINDOW));
    Report {
        scenario: "poison messages while the dead letter (SQS) is frozen".into(),
        messages: count,
        lost: 0,
        duplicates: delivered.duplicates + dead_report.duplicates,
        reordered: delivered.reordered,
        recovery_ms: dead.progress_after(resumed).map(|d| d.as_millis()),
        broken: delivered.broken.clone(),
    }
    .publish();
}

#[test]
fn the_checker_counts_lost_duplicated_and_reordered_messages() {
    use checker::{KEYS, message};
    let mut arrivals = Arrivals::default();
    // Key k1: 1, then 1 again (a duplicate), then 1 + KEYS; key k2: 2 + KEYS before 2.
    for n in [1, 1, 1 + KEYS, 2 + KEYS, 2] {
        arrivals.record(&message(n));
    }
    let report = arrivals.report("unit", 3 + KEYS);
    assert_eq!(report.duplicates, 1);
    assert_eq!(
        report.reordered, 1,
        "2 arrived after 2 + KEYS, on the same key"
    );
    // Sent 0 ..= 2 + KEYS, of which 4 distinct arrived.
    assert_eq!(report.lost, 3 + KEYS - 4);
    assert!(report.broken.is_empty());
    let mut changed = checker::message(5);
    changed.body = "other".into();
    arrivals.record(&changed);
    assert_eq!(arrivals.report("unit", 0).broken.len(), 1);
}
