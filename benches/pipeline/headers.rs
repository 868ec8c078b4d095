//! Header scaling (`--headers`): what records with very many headers cost bridge, and what
//! they do to another route of the same process.
//!
//! One `bridge run` has three Kafka -> Kafka routes: `wide` with its header limit raised to
//! take records of 1,000, 10,000 and 100,000 headers; `strict` with the default limits,
//! which refuses such records (dead letter); and `probe`, RabbitMQ -> RabbitMQ for small
//! messages (on another broker, so that the Kafka broker's load, which stores every header
//! as a row, does not stand in for bridge's own effect on another route).
//!
//! First, with nothing else flowing, the same number of headers in all goes through `wide`
//! (and `strict`) at each width: bridge's CPU time (its threads' own, to the nanosecond,
//! less what it spends idle) divided by the headers handled, so a linear cost shows as the
//! same figure per header at every width. Then `probe` gets a steady 200 messages a second,
//! alone and while each width's records go through `wide` again: its end-to-end p99 (which
//! the broker's load also moves) and bridge's own processing p99 for it (from the
//! `bridge_processing_seconds` histogram). A measurement, not a test: it fails only when a
//! record never arrives.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use bridge::message::limits::DEFAULT_MAX_HEADERS;

use crate::{KAFKA, Options};

/// The largest record the benchmark writes and reads (100,000 short headers fit).
const MAX_RECORD_BYTES: usize = 16 << 20;

struct Topics {
    wide_in: String,
    wide_out: String,
    strict_in: String,
    strict_out: String,
    raw_in: String,
    raw_out: String,
    /// RabbitMQ queues: the probe is on another broker, so that the Kafka broker's load
    /// (it stores every header as a row) does not stand in for bridge's own.
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
            raw_in: name("raw-in"),
            raw_out: name("raw-out"),
            probe_in: name("probe-in"),
            probe_out: name("probe-out"),
            dead: name("dead"),
        }
    }

    /// The Kafka topics.
    fn all(&self) -> [&str; 7] {
        [
            &self.wide_in,
            &self.wide_out,
            &self.strict_in,
            &self.strict_out,
            &self.raw_in,
            &self.raw_out,
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

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()
        .expect("admin")
}

/// Deletes the run's topics, so that their millions of header rows do not stay in the
/// broker (tansu keeps each header as a row).
async fn delete_topics(topics: &Topics) {
    let _ = admin()
        .delete_topics(&topics.all(), &AdminOptions::new())
        .await;
}

async fn create_topics(topics: &Topics) {
    let admin = admin();
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

/// Sends probe messages to the RabbitMQ queue `queue` at `rate` per second, each body its
/// send time, until stopped.
fn probe(
    queue: String,
    rate: f64,
) -> (
    tokio::task::JoinHandle<usize>,
    tokio::sync::watch::Sender<bool>,
) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let connection =
            lapin::Connection::connect(crate::RABBIT, lapin::ConnectionProperties::default())
                .await
                .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut sent = 0;
        while !*stopped.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            let body = crate::places::body(64);
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            sent += 1;
        }
        sent
    });
    (task, stop)
}

/// Declares the probe's two RabbitMQ queues (deleted once unused for 15 minutes).
async fn declare_probe_queues(topics: &Topics) {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let connection =
        lapin::Connection::connect(crate::RABBIT, lapin::ConnectionProperties::default())
            .await
            .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongInt(900_000));
    for queue in [&topics.probe_in, &topics.probe_out] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                arguments.clone(),
            )
            .await
            .expect("queue.declare");
    }
}

/// Each probe message's arrival time and age, as a plain consumer reads them.
type Arrivals = std::sync::Arc<std::sync::Mutex<Vec<(Instant, Duration)>>>;

/// Reads the probe route's RabbitMQ sink queue in the background until aborted.
fn read_probes(queue: String, arrivals: Arrivals) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    use lapin::options::BasicConsumeOptions;
    tokio::spawn(async move {
        let connection =
            lapin::Connection::connect(crate::RABBIT, lapin::ConnectionProperties::default())
                .await
                .expect("RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "probe-reader".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("basic.consume");
        while let Some(Ok(delivery)) = consumer.next().await {
            if let Some(age) = crate::places::age(&delivery.data) {
                arrivals
                    .lock()
                    .expect("arrivals")
                    .push((Instant::now(), age));
            }
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

/// CPU time of a process's live threads to the nanosecond (`/proc/PID/task/*/schedstat`),
/// all of them and librdkafka's (`rdk:*`) apart: the 10 ms ticks of `/proc/PID/stat` are
/// too coarse for a phase of a few seconds.
fn thread_cpu(pid: u32) -> (Duration, Duration) {
    let (mut total, mut librdkafka) = (0u64, 0u64);
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let nanos: u64 = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        total += nanos;
        if name.starts_with("rdk:") {
            librdkafka += nanos;
        }
    }
    (
        Duration::from_nanos(total),
        Duration::from_nanos(librdkafka),
    )
}

/// The probe route's processing-time histogram from `/metrics`: (upper bound, count) per
/// bucket, cumulative as Prometheus gives it.
fn processing_buckets(port: u16) -> Vec<(f64, f64)> {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .filter(|line| {
            line.starts_with("bridge_processing_seconds_bucket") && line.contains("route=\"probe\"")
        })
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = line.rsplit(' ').next()?.parse().ok()?;
            Some((bound, count))
        })
        .collect()
}

/// The p99 processing time of the probe route between two scrapes: the upper bound of the
/// bucket where 99% of the probes settled in between.
fn processing_p99(before: &[(f64, f64)], after: &[(f64, f64)]) -> f64 {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            (*bound, count - earlier)
        })
        .collect();
    let total = deltas.last().map_or(0.0, |(_, c)| *c);
    deltas
        .iter()
        .find(|(_, count)| *count >= total * 0.99)
        .map_or(f64::NAN, |(bound, _)| *bound)
}

/// What one phase (records of one width, forwarded or refused) cost bridge.
struct Cost {
    took: Duration,
    /// CPU per header, all threads, less what bridge spends idle in as long.
    total: Duration,
    /// The same outside librdkafka's threads.
    outside: Duration,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "in {:.1?}: {:.3} us per header ({:.3} outside librdkafka)",
            self.took,
            micros(self.total),
            micros(self.outside)
        )
    }
}

/// What a process spends idle per second (librdkafka polls its brokers), all threads and
/// outside librdkafka.
async fn idle_rate(pid: u32) -> (f64, f64) {
    let idle_for = Duration::from_secs(3);
    let (before_total, before_rdk) = thread_cpu(pid);
    tokio::time::sleep(idle_for).await;
    let (total, rdk) = thread_cpu(pid);
    (
        (total - before_total).as_secs_f64() / idle_for.as_secs_f64(),
        ((total - rdk) - (before_total - before_rdk)).as_secs_f64() / idle_for.as_secs_f64(),
    )
}

/// A process that forwards from one topic to another, measured by its threads' CPU.
struct Pipe<'a> {
    pid: u32,
    idle: (f64, f64),
    producer: &'a FutureProducer,
    watermarks: &'a BaseConsumer,
}

impl Pipe<'_> {
    /// Sends `records` records of `template` to `into`, waits until `out` holds them, and
    /// returns the process's CPU per header, less what it spends idle meanwhile.
    async fn cost(
        &self,
        into: &str,
        out: &str,
        arrived: &mut i64,
        template: &OwnedHeaders,
        records: usize,
    ) -> Cost {
        let (from, (before_total, before_rdk)) = (Instant::now(), thread_cpu(self.pid));
        for _ in 0..records {
            send(self.producer, into, Some(template.clone()), b"wide").await;
        }
        *arrived += records as i64;
        wait_for_count(self.watermarks, out, *arrived, "the records").await;
        let took = from.elapsed();
        let (after_total, after_rdk) = thread_cpu(self.pid);
        let headers = (rdkafka::message::Headers::count(template) * records) as u32;
        let less_idle = |spent: Duration, rate: f64| {
            spent.saturating_sub(Duration::from_secs_f64(rate * took.as_secs_f64())) / headers
        };
        Cost {
            took,
            total: less_idle(after_total - before_total, self.idle.0),
            outside: less_idle(
                (after_total - after_rdk) - (before_total - before_rdk),
                self.idle.1,
            ),
        }
    }
}

/// The probe route while records of one width flow through the same process.
struct Probe {
    /// From the send to the arrival at the probe's sink.
    end_to_end_p99: Duration,
    /// bridge's own processing time (receipt to settlement), from its histogram.
    processing_p99: f64,
}

/// One width's figures.
struct Width {
    width: usize,
    records: usize,
    /// The raw pipe forwarding the same records.
    baseline: Cost,
    forwarded: Cost,
    /// Where the width is over the default limit.
    refused: Option<Cost>,
    /// The probe while the raw pipe forwards this width's records.
    probe_beside_raw: Probe,
    /// The probe while bridge's `wide` route forwards them.
    probe: Probe,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

pub async fn run(options: &Options) {
    // Each width handles the same number of headers in all.
    let widths: &[(usize, usize)] = if options.quick {
        &[(1_000, 20), (10_000, 2)]
    } else {
        &[(1_000, 1_000), (10_000, 100), (100_000, 10)]
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
    let rabbit = format!("{{type: rabbitmq, url: '{}'}}", crate::RABBIT);
    declare_probe_queues(&topics).await;
    std::fs::write(
        &routes,
        format!(
            "connections:\n  kafka: {kafka}\n  rabbit: {rabbit}\nroutes:\n  - name: wide\n    from: kafka:{}\n    to: kafka:{}\n    dead_letter: kafka:{}\n    limits: {{max_headers: 200000}}\n  - name: strict\n    from: {{endpoint: 'kafka:{}', options: {{group_id: {prefix}-strict}}}}\n    to: kafka:{}\n    dead_letter: kafka:{}\n  - name: probe\n    from: rabbit:queue/{}\n    to: rabbit:queue/{}\n    dead_letter: kafka:{}\n",
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
    let port = free_port();
    let mut bridge = std::process::Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["run", routes.to_str().expect("path")])
        .env("BRIDGE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("BRIDGE_LOG", "error")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("bridge starts");
    let pid = bridge.id();
    let watermarks: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()
        .expect("watermarks");
    let producer = producer();
    // Every route runs once bridge serves its port (`/readyz` would say; the probe's
    // first messages show it too).
    let arrivals = Arrivals::default();
    let reader = read_probes(topics.probe_out.clone(), arrivals.clone());
    let rate = 200.0;
    let (prober, stop_probe) = probe(topics.probe_in.clone(), rate);
    let started = Instant::now();
    while arrivals.lock().expect("arrivals").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the probe route never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_probe.send(true);
    let _ = prober.await;
    let idle = idle_rate(pid).await;
    println!(
        "   bridge idle: {:.1} ms of CPU per second ({:.1} outside librdkafka)",
        idle.0 * 1000.0,
        idle.1 * 1000.0
    );
    // The baseline: a raw rdkafka pipe (this binary as `raw-pipe`) from its own topic.
    let spec = crate::raw::PipeSpec {
        from: crate::Sys::Kafka,
        to: crate::Sys::Kafka,
        routes: vec![(topics.raw_in.clone(), vec![topics.raw_out.clone()])],
        window: options.window,
        group: format!("{prefix}-raw"),
        rabbit_url: crate::RABBIT.to_owned(),
    };
    let mut raw = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
        .arg("raw-pipe")
        .arg(serde_json::to_string(&spec).expect("spec"))
        .env("BENCH_RAW_MESSAGE_MAX_BYTES", MAX_RECORD_BYTES.to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("the raw pipe starts");
    let raw_pid = raw.id();
    send(&producer, &topics.raw_in, None, &crate::places::body(64)).await;
    wait_for_count(&watermarks, &topics.raw_out, 1, "the raw pipe").await;
    let raw_idle = idle_rate(raw_pid).await;
    let bridge_pipe = Pipe {
        pid,
        idle,
        producer: &producer,
        watermarks: &watermarks,
    };
    let raw_pipe = Pipe {
        pid: raw_pid,
        idle: raw_idle,
        producer: &producer,
        watermarks: &watermarks,
    };
    let (mut delivered, mut refused, mut raw_delivered) = (0, 0, 1);
    let mut costs = Vec::new();
    for &(width, records) in widths {
        let template = headers(width);
        let baseline = raw_pipe
            .cost(
                &topics.raw_in,
                &topics.raw_out,
                &mut raw_delivered,
                &template,
                records,
            )
            .await;
        let forwarded = bridge_pipe
            .cost(
                &topics.wide_in,
                &topics.wide_out,
                &mut delivered,
                &template,
                records,
            )
            .await;
        println!("   {width} headers x {records}: raw pipe {baseline}; bridge {forwarded}");
        // The default limit refuses wider records: as a dead letter, in linear time.
        let refusal = if width > DEFAULT_MAX_HEADERS {
            let refusal = bridge_pipe
                .cost(
                    &topics.strict_in,
                    &topics.dead,
                    &mut refused,
                    &template,
                    records,
                )
                .await;
            println!("   {width} headers x {records}: refused {refusal}");
            Some(refusal)
        } else {
            None
        };
        costs.push((width, records, baseline, forwarded, refusal));
    }
    // The probe route, alone, then beside each width's records going through the raw pipe
    // (another process: what the machine and the brokers do to the probe), then through
    // bridge's own `wide` route (what bridge adds to that).
    let (prober, stop_probe) = probe(topics.probe_in.clone(), rate);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (from, before) = (Instant::now(), processing_buckets(port));
    tokio::time::sleep(options.latency_for).await;
    let alone = Probe {
        end_to_end_p99: p99_between(&arrivals, from, Instant::now()),
        processing_p99: processing_p99(&before, &processing_buckets(port)),
    };
    let mut figures = Vec::new();
    for (width, records, baseline, forwarded, refused) in costs {
        let template = headers(width);
        let beside = async |into: &str, out: &str, arrived: &mut i64| {
            let (from, before) = (Instant::now(), processing_buckets(port));
            for _ in 0..records {
                send(&producer, into, Some(template.clone()), b"wide").await;
            }
            *arrived += records as i64;
            wait_for_count(&watermarks, out, *arrived, "the records").await;
            Probe {
                end_to_end_p99: p99_between(&arrivals, from, Instant::now()),
                processing_p99: processing_p99(&before, &processing_buckets(port)),
            }
        };
        let probe_beside_raw = beside(&topics.raw_in, &topics.raw_out, &mut raw_delivered).await;
        let probe = beside(&topics.wide_in, &topics.wide_out, &mut delivered).await;
        figures.push(Width {
            width,
            records,
            baseline,
            forwarded,
            refused,
            probe_beside_raw,
            probe,
        });
    }
    let _ = stop_probe.send(true);
    let _ = prober.await;
    reader.abort();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &raw_pid.to_string()])
        .status();
    let _ = raw.wait();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = bridge.wait();
    report(&figures, &alone);
    delete_topics(&topics).await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(prefix);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn report(figures: &[Width], alone: &Probe) {
    let Some(first) = figures.first() else {
        return;
    };
    let first_refused = figures.iter().find_map(|w| w.refused.as_ref());
    let ratio = |a: Duration, b: Duration| micros(a) / micros(b).max(1e-9);
    println!(
        "\n| headers per record | records | raw pipe: CPU per header (outside librdkafka) | bridge: CPU per header (outside librdkafka) | bridge / raw | bridge per header, ratio to {} headers (outside librdkafka) | refused at the default limit ({DEFAULT_MAX_HEADERS}): per header | ratio to the first refused |",
        first.width
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in figures {
        let (refused, refused_ratio) = match (&row.refused, first_refused) {
            (Some(refused), Some(first)) => (
                format!("{:.3} us", micros(refused.total)),
                format!("{:.2}x", ratio(refused.total, first.total)),
            ),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {} | {} | {:.3} us ({:.3}) | {:.3} us ({:.3}) | {:.2}x | {:.2}x ({:.2}x) | {refused} | {refused_ratio} |",
            row.width,
            row.records,
            micros(row.baseline.total),
            micros(row.baseline.outside),
            micros(row.forwarded.total),
            micros(row.forwarded.outside),
            ratio(row.forwarded.total, row.baseline.total),
            ratio(row.forwarded.total, first.forwarded.total),
            ratio(row.forwarded.outside, first.forwarded.outside),
        );
    }
    println!(
        "\n| the probe route (RabbitMQ, 200 msg/s) | p99 | ratio to alone | bridge's processing p99 (bucket) |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| alone | {:.1?} | 1.00x | {} s |",
        alone.end_to_end_p99, alone.processing_p99
    );
    let ratio = |probe: &Probe| {
        probe.end_to_end_p99.as_secs_f64() / alone.end_to_end_p99.as_secs_f64().max(1e-9)
    };
    for row in figures {
        for (what, probe) in [
            ("the raw pipe forwards", &row.probe_beside_raw),
            ("bridge forwards", &row.probe),
        ] {
            println!(
                "| while {what} {} records of {} headers | {:.1?} | {:.2}x | {} s |",
                row.records,
                row.width,
                probe.end_to_end_p99,
                ratio(probe),
                probe.processing_p99,
            );
        }
    }
}
