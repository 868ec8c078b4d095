//! Header scaling (`--headers`): what records with very many headers cost bridge, and what
//! they do to another route of the same process.
//!
//! One `bridge run` has three Kafka -> Kafka routes: `wide` with its header limit raised to
//! take records of 1,000, 10,000 and 100,000 headers; `strict` with the default limits,
//! which refuses such records (dead letter); and `probe`, fed a steady stream of small
//! messages whose latency is measured throughout. For each width, bridge's CPU time (from
//! `/proc`) is divided by the headers it handled, so a linear cost shows as the same figure
//! per header at every width; the probe's p99 while wide records flow is compared with its
//! p99 before any did. A measurement, not a test: it fails only when a record never arrives.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use bridge::message::limits::DEFAULT_MAX_HEADERS;

use crate::procfs;
use crate::{KAFKA, Options};

/// The largest record the benchmark writes and reads (100,000 short headers fit).
const MAX_RECORD_BYTES: usize = 16 << 20;

struct Topics {
    wide_in: String,
    wide_out: String,
    strict_in: String,
    strict_out: String,
    probe_in: String,
    probe_out: String,
    dead: String,
}

impl Topics {
    fn new(prefix: &str) -> Topics {
        let name = |part: &str| format!("{prefix}-{part}");
        Topics {
            wide_in: name("wide-in"),
            wide_out: name("wide-out"),
            strict_in: name("strict-in"),
            strict_out: name("strict-out"),
            probe_in: name("probe-in"),
            probe_out: name("probe-out"),
            dead: name("dead"),
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.wide_in,
            &self.wide_out,
            &self.strict_in,
            &self.strict_out,
            &self.probe_in,
            &self.probe_out,
            &self.dead,
        ]
    }
}

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("message.max.bytes", MAX_RECORD_BYTES.to_string())
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

async fn create_topics(topics: &Topics) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()
        .expect("admin");
    let new: Vec<NewTopic<'_>> = topics
        .all()
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        result.expect("topic created");
    }
}

/// The high watermark of partition 0: how many records the topic holds.
fn count(consumer: &BaseConsumer, topic: &str) -> i64 {
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map(|(_, high)| high)
        .unwrap_or(0)
}

async fn wait_for_count(consumer: &BaseConsumer, topic: &str, wanted: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(consumer, topic) < wanted {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn headers(width: usize) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(width);
    for i in 0..width {
        headers = headers.insert(Header {
            key: &format!("h{i}"),
            value: Some(b"v".as_slice()),
        });
    }
    headers
}

async fn send(producer: &FutureProducer, topic: &str, headers: Option<OwnedHeaders>, body: &[u8]) {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(body);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    producer
        .send(record, Duration::from_secs(60))
        .await
        .expect("Kafka accepted the record");
}

/// Sends probe messages at `rate` per second, each body its send time, until stopped.
fn probe(
    topic: String,
    rate: f64,
) -> (
    tokio::task::JoinHandle<usize>,
    tokio::sync::watch::Sender<bool>,
) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let producer = producer();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut sent = 0;
        while !*stopped.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            let body = crate::places::body(64);
            send(&producer, &topic, None, &body).await;
            sent += 1;
        }
        sent
    });
    (task, stop)
}

/// Each probe message's arrival time and age, as a plain consumer reads them.
type Arrivals = std::sync::Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>;

/// Reads the probe route's sink in the background until aborted.
fn read_probes(topic: String, arrivals: Arrivals) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use rdkafka::Message;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", KAFKA)
            .set("group.id", format!("{topic}-reader"))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("probe reader");
        consumer.subscribe(&[&topic]).expect("subscribe");
        loop {
            while let Some(Ok(record)) = consumer.poll(Duration::ZERO) {
                if let Some(age) = record.payload().and_then(crate::places::age) {
                    arrivals
                        .lock()
                        .expect("arrivals")
                        .push((Instant::now(), age));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// The p99 age of the probes that arrived between `from` and `to`.
fn p99_between(arrivals: &Arrivals, from: Instant, to: Instant) -> Duration {
    let mut ages: Vec<Duration> = arrivals
        .lock()
        .expect("arrivals")
        .iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .map(|(_, age)| *age)
        .collect();
    ages.sort_unstable();
    ages.get((ages.len() as f64 * 0.99) as usize)
        .or(ages.last())
        .copied()
        .unwrap_or_default()
}

/// What one phase (records of one width, forwarded or refused) cost.
struct Phase {
    took: Duration,
    /// bridge's CPU per header, all threads, less the probe route's share.
    total: Duration,
    /// The same outside librdkafka's threads.
    outside: Duration,
    /// The broker's CPU over the phase.
    tansu: Duration,
    /// The probe route's p99 over the phase.
    probe_p99: Duration,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1?}, bridge {:.3} us per header ({:.3} outside librdkafka), tansu CPU {:.1?}, probe p99 {:.1?}",
            self.took,
            micros(self.total),
            micros(self.outside),
            self.tansu,
            self.probe_p99
        )
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One width's figures.
struct Width {
    width: usize,
    records: usize,
    forwarded: Phase,
    /// Where the width is over the default limit.
    refusal: Option<Phase>,
}

pub async fn run(options: &Options) {
    // Each width handles the same number of headers in all.
    let widths: &[(usize, usize)] = if options.quick {
        &[(1_000, 20), (10_000, 2)]
    } else {
        &[(1_000, 200), (10_000, 20), (100_000, 2)]
    };
    let prefix = format!(
        "bench-headers-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
            % 0xffff_ffff
    );
    let topics = Topics::new(&prefix);
    create_topics(&topics).await;
    let dir = tempfile_dir(&prefix);
    let routes = dir.join("routes.yaml");
    let kafka = format!(
        "{{type: kafka, brokers: '{KAFKA}', group_id: {prefix}, producer_options: {{message.max.bytes: '{MAX_RECORD_BYTES}'}}}}"
    );
    std::fs::write(
        &routes,
        format!(
            "connections:\n  kafka: {kafka}\nroutes:\n  - name: wide\n    from: kafka:{}\n    to: kafka:{}\n    dead_letter: kafka:{}\n    limits: {{max_headers: 200000}}\n  - name: strict\n    from: {{endpoint: 'kafka:{}', options: {{group_id: {prefix}-strict}}}}\n    to: kafka:{}\n    dead_letter: kafka:{}\n  - name: probe\n    from: {{endpoint: 'kafka:{}', options: {{group_id: {prefix}-probe}}}}\n    to: kafka:{}\n    dead_letter: kafka:{}\n",
            topics.wide_in,
            topics.wide_out,
            topics.dead,
            topics.strict_in,
            topics.strict_out,
            topics.dead,
            topics.probe_in,
            topics.probe_out,
            topics.dead,
        ),
    )
    .expect("routes file");
    let mut bridge = std::process::Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["run", routes.to_str().expect("path")])
        .env("BRIDGE_HTTP_LISTEN", "off")
        .env("BRIDGE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("bridge starts");
    let pid = bridge.id();
    let usage = || procfs::usage(pid).expect("bridge is running");
    let brokers = procfs::broker_pids();
    let tansu = || {
        procfs::cpu_of(&brokers)
            .iter()
            .filter(|(name, _)| *name == "tansu")
            .map(|(_, used)| *used)
            .sum::<Duration>()
    };
    let watermarks: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()
        .expect("watermarks");
    let arrivals = Arrivals::default();
    let reader = read_probes(topics.probe_out.clone(), arrivals.clone());
    let producer = producer();
    let rate = 200.0;
    let (prober, stop_probe) = probe(topics.probe_in.clone(), rate);
    // The probe alone, once its route runs: its p99 and what it costs bridge per second.
    wait_for_count(&watermarks, &topics.probe_out, 1, "the probe route").await;
    let (quiet_from, quiet_usage) = (Instant::now(), usage());
    tokio::time::sleep(options.latency_for).await;
    let quiet_for = quiet_from.elapsed();
    let quiet_spent = usage().since(quiet_usage);
    let per_second = |cpu: Duration| cpu.as_secs_f64() / quiet_for.as_secs_f64();
    let probe_rate = (
        per_second(quiet_spent.total),
        per_second(quiet_spent.outside_librdkafka()),
    );
    let quiet = p99_between(&arrivals, quiet_from, Instant::now());
    println!(
        "   probe alone: p99 {quiet:.1?} at {rate} msg/s, bridge CPU {:.1} ms/s",
        probe_rate.0 * 1000.0
    );
    // Sends the records one at a time, each once the one before has arrived (so that the
    // broker, which stores every header of a record as a row, is not kept saturated), and
    // measures bridge's CPU per header less what the probe route spent meanwhile.
    let phase = async |into: &str,
                       out: &str,
                       arrived: &mut i64,
                       template: &OwnedHeaders,
                       records: usize| {
        let (from, before, tansu_before) = (Instant::now(), usage(), tansu());
        for _ in 0..records {
            send(&producer, into, Some(template.clone()), b"wide").await;
            *arrived += 1;
            wait_for_count(&watermarks, out, *arrived, "a record").await;
        }
        let took = from.elapsed();
        let spent = usage().since(before);
        let less_probe = |cpu: Duration, rate: f64| {
            cpu.saturating_sub(Duration::from_secs_f64(rate * took.as_secs_f64()))
        };
        let headers = (rdkafka::message::Headers::count(template) * records) as u32;
        Phase {
            took,
            total: less_probe(spent.total, probe_rate.0) / headers,
            outside: less_probe(spent.outside_librdkafka(), probe_rate.1) / headers,
            tansu: tansu() - tansu_before,
            probe_p99: p99_between(&arrivals, from, Instant::now()),
        }
    };
    let mut figures = Vec::new();
    let (mut delivered, mut refused) = (0, 0);
    for &(width, records) in widths {
        let template = headers(width);
        let forwarded = phase(
            &topics.wide_in,
            &topics.wide_out,
            &mut delivered,
            &template,
            records,
        )
        .await;
        println!("   {width} headers x {records}, forwarded: {forwarded}");
        // The default limit refuses wider records: as a dead letter, in linear time.
        let refusal = if width > DEFAULT_MAX_HEADERS {
            let refusal = phase(
                &topics.strict_in,
                &topics.dead,
                &mut refused,
                &template,
                records,
            )
            .await;
            println!("   {width} headers x {records}, refused: {refusal}");
            Some(refusal)
        } else {
            None
        };
        figures.push(Width {
            width,
            records,
            forwarded,
            refusal,
        });
    }
    let _ = stop_probe.send(true);
    let _ = prober.await;
    reader.abort();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = bridge.wait();
    report(&figures, quiet);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(prefix);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

fn report(figures: &[Width], quiet: Duration) {
    let Some(first) = figures.first() else {
        return;
    };
    let first_refusal = figures.iter().find_map(|w| w.refusal.as_ref());
    let ratio = |a: Duration, b: Duration| micros(a) / micros(b).max(1e-9);
    println!(
        "\n| headers per record | records | forwarded: bridge CPU per header | outside librdkafka | ratio to {} headers (outside) | refused at the default limit ({DEFAULT_MAX_HEADERS}): per header | ratio to the first refused | probe p99 while forwarding | ratio to the probe alone ({quiet:.1?}) |",
        first.width
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in figures {
        let (refused, refused_ratio) = match (&row.refusal, first_refusal) {
            (Some(refusal), Some(first)) => (
                format!("{:.3} us", micros(refusal.total)),
                format!("{:.2}x", ratio(refusal.total, first.total)),
            ),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {} | {} | {:.3} us | {:.3} us | {:.2}x | {refused} | {refused_ratio} | {:.1?} | {:.2}x |",
            row.width,
            row.records,
            micros(row.forwarded.total),
            micros(row.forwarded.outside),
            ratio(row.forwarded.outside, first.forwarded.outside),
            row.forwarded.probe_p99,
            row.forwarded.probe_p99.as_secs_f64() / quiet.as_secs_f64().max(1e-9),
        );
    }
}
