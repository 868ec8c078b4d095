//! `bridge dlq stats`, `redrive` (and `--dry-run`) end to end on every system as the
//! dead-letter endpoint: three kinds of dead letters, one kind redriven to its source where
//! the fixed route delivers it, the others left where they were. Also a redrive killed
//! midway and run again, and its progress on a terminal and in a pipe.
//!
//! Not in the `e2e` test group: these tests wait on brokers and on `--idle`, not on the
//! CPU, and run beside the others.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::adapter::Connector;
use bridge::message::{Message, reserved};
use serde_json::Value;
use support::flow::{publish, wait_until};
use support::systems::{Place, Resources, Sys, source_yaml};
use support::{connector, init_logs, unique};

/// The three kinds of dead letters, as a route writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A body the route's transform could not read.
    Poison,
    /// A destination that does not exist.
    Unroutable,
    /// An outage of the sink that outlasted the retries; the message had already come
    /// round a loop of routes up to the hop limit.
    Outage,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Poison, Kind::Unroutable, Kind::Outage];

    fn label(self) -> &'static str {
        match self {
            Kind::Poison => "poison",
            Kind::Unroutable => "unroutable",
            Kind::Outage => "outage",
        }
    }
}

/// Dead letter `n` of `kind`, received by route `fixed` from `source`; its errors differ
/// from its kind's others only in ids and numbers.
fn dead_letter(kind: Kind, n: u32, source: &str, sink: &str) -> Message {
    let mut letter = Message::new(format!("{}-{n} body", kind.label()));
    letter.message_id = Some(format!("{}-{n}", kind.label()));
    letter.key = Some(format!("k{}", n % 4).into());
    letter.headers.push("app-kind", kind.label());
    let (failing_sink, class, error) = match kind {
        Kind::Poison => (
            "route".to_owned(),
            "permanent",
            format!("route transform: the body is not JSON (expected value at line 1 column {n})"),
        ),
        Kind::Unroutable => (
            format!("{sink}-archive"),
            "permanent",
            format!("the destination does not exist (request id 7f3a-{n:04}, attempt {n})"),
        ),
        Kind::Outage => (
            sink.to_owned(),
            "transient",
            format!(
                "connection refused (os error 111) to 10.0.{}.{}:5672 after 5 attempts",
                n / 250,
                n % 250
            ),
        ),
    };
    if kind == Kind::Outage {
        // At the hop limit: the route would refuse it again unless redrive resets the count.
        letter.headers.push(reserved::HOPS, "10");
    }
    for (name, value) in [
        (reserved::DLQ_ROUTE, "fixed".to_owned()),
        (reserved::DLQ_SINK, failing_sink),
        (reserved::DLQ_ERROR_CLASS, class.to_owned()),
        (reserved::DLQ_ERROR, error),
        (reserved::DLQ_ATTEMPTS, "5".to_owned()),
        (
            reserved::DLQ_FIRST_FAILURE,
            "2026-12-07T10:00:00.000Z".to_owned(),
        ),
        (
            reserved::DLQ_LAST_FAILURE,
            "2026-12-07T10:00:05.000Z".to_owned(),
        ),
        (reserved::DLQ_SOURCE, source.to_owned()),
    ] {
        letter.headers.push(name, value);
    }
    letter
}

/// Runs `bridge ARGS` off the runtime's threads; returns exit code, stdout, stderr.
async fn bridge(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = support::process::run(&args, b"");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// A `dlq` command's arguments on `endpoint` with the routes file `file`.
fn dlq_args(command: &str, endpoint: &str, file: &Path, sys: Sys, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["dlq", command, endpoint, "--config", file.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // These have no undisturbed read: a peek holds the messages and releases them.
    if matches!(sys, Sys::Rabbit | Sys::Sqs | Sys::Sns | Sys::PubSub) {
        args.push("--disturb".into());
    }
    // A Kafka reader first joins its group; an SQS reader's receives take up to 2 s, and
    // several times that when moto is busy with the other tests' queues.
    let idle = match sys {
        Sys::Kafka => "8s",
        Sys::Sqs | Sys::Sns => "10s",
        _ => "3s",
    };
    args.extend(["--idle".into(), idle.into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `bridge dlq stats --json`: the count of each group, keyed by its failing sink's kind.
async fn stats(endpoint: &str, file: &Path, sys: Sys) -> (u64, HashMap<String, u64>) {
    let (code, stdout, stderr) = bridge(dlq_args("stats", endpoint, file, sys, &["--json"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    if !stderr.is_empty() {
        eprintln!("dlq stats {endpoint}: {stderr}");
    }
    let stats: Value = serde_json::from_str(&stdout).unwrap();
    let mut groups = HashMap::new();
    for group in stats["groups"].as_array().unwrap() {
        let kind = match group["class"].as_str().unwrap() {
            "transient" => "outage",
            _ if group["sink"] == "route" => "poison",
            _ => "unroutable",
        };
        let previous = groups.insert(kind.to_owned(), group["count"].as_u64().unwrap());
        assert!(
            previous.is_none(),
            "errors differing in ids form one group: {stats}"
        );
    }
    (stats["total"].as_u64().unwrap(), groups)
}

/// The steps that read the dead-letter endpoint, each through a subscription of its own
/// on Pub/Sub, where the emulator often delivers nothing to a subscription's second
/// consumer (LOCAL-BROKERS.md); other systems read the one endpoint every time.
const READS: [&str; 4] = ["stats", "dry", "redrive", "after"];

struct Setup {
    sys: Sys,
    file: tempfile::TempPath,
    /// The dead-letter endpoint as the `dlq` commands read it, by step of [`READS`].
    dlq: HashMap<&'static str, String>,
    src: Place,
    connection: Value,
    checker: Arc<dyn Connector>,
}

/// A source, an out place and a dead-letter place on `sys`, and a routes file whose
/// route `fixed` reads the source; `letters` dead letters of each kind at the endpoint.
async fn set_up(sys: Sys, name: &str, letters: [u32; 3]) -> Setup {
    let mut resources = Resources::new(sys, &format!("{name}-group"));
    let src = resources.place(&format!("{name}-src"));
    let out = resources.place(&format!("{name}-out"));
    let dead = resources.place(&format!("{name}-dlq"));
    let label = sys.label();
    let dlq = READS
        .into_iter()
        .map(|step| {
            let endpoint = match sys {
                // A topic's dead letters are read from the queue subscribed to it.
                Sys::Sns => format!("{label}:sqs/{name}-dlq-q"),
                Sys::PubSub => {
                    let topic = format!("{name}-dlq");
                    let path = resources.subscription(&topic, &format!("{topic}-{step}"));
                    format!("{label}:{path}")
                }
                _ => format!("{label}:{}", dead.source),
            };
            (step, endpoint)
        })
        .collect();
    let connection = resources.connection();
    let routes = format!(
        "connections:\n  {label}: {connection}\nroutes:\n  - name: fixed\n    from: {}\n    to: '{label}:{}'\n    dead_letter: '{label}:{}'\n",
        source_yaml(label, &src),
        out.sink,
        dead.sink
    );
    let file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::write(&file, routes).unwrap();
    let checker = connector(&resources.checker_connection()).await;
    let source = format!("{label}:{}", src.source);
    let sink = format!("{label}:{}", out.sink);
    let mut all = Vec::new();
    for (kind, count) in Kind::ALL.into_iter().zip(letters) {
        all.extend((0..count).map(|n| dead_letter(kind, n, &source, &sink)));
    }
    publish(&checker, &format!("{label}:{}", dead.sink), all, 100).await;
    Setup {
        sys,
        file,
        dlq,
        src,
        connection,
        checker,
    }
}

/// The fixed route, in process: from the source to a memory queue, at a hop limit of 10.
async fn fixed_route(setup: &Setup) -> support::Harness {
    let label = setup.sys.label();
    support::start(&format!(
        "settings: {{max_hops: 10}}\nconnections:\n  {label}: {}\n  mem: {{type: memory}}\nroutes:\n  - name: fixed\n    from: {}\n    to: mem:out\n    dead_letter: mem:dlq\n",
        setup.connection,
        source_yaml(label, &setup.src)
    ))
    .await
}

async fn redrives_one_kind_and_leaves_the_others(sys: Sys, per_kind: [u32; 3]) {
    init_logs();
    let name = unique(&format!("dlq-{}", sys.label()));
    let setup = set_up(sys, &name, per_kind).await;
    let file: &Path = &setup.file;
    let total: u64 = per_kind.iter().map(|n| u64::from(*n)).sum();

    let (seen, groups) = stats(&setup.dlq["stats"], file, sys).await;
    assert_eq!(seen, total);
    for (kind, count) in Kind::ALL.into_iter().zip(per_kind) {
        assert_eq!(
            groups[kind.label()],
            u64::from(count),
            "{kind:?}: {groups:?}"
        );
    }

    // NATS: the source stream captures `NAME.>`, so which subject fed it is not known.
    let to = format!("{}:{}", sys.label(), setup.src.sink);
    let mut select = vec!["--error-class", "transient", "--json"];
    if sys == Sys::Nats {
        select.extend(["--to", &to]);
    }
    let outages = u64::from(per_kind[2]);

    // A dry run lists what would move and changes nothing. Not on moto, whose every call
    // costs more as a queue grows: there `stats` covers the same peek, and the tests of
    // the other systems the dry run.
    if !matches!(sys, Sys::Sqs | Sys::Sns) {
        let mut dry = select.clone();
        dry.push("--dry-run");
        let (code, stdout, stderr) =
            bridge(dlq_args("redrive", &setup.dlq["dry"], file, sys, &dry)).await;
        assert_eq!(code, Some(0), "{stderr}");
        if !stderr.is_empty() {
            eprintln!("dry run: {stderr}");
        }
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (listed, summary) = lines.split_at(lines.len() - 1);
        assert_eq!(listed.len() as u64, outages, "{stdout}");
        let recorded = format!("{}:{}", sys.label(), setup.src.source);
        let expected_to = match sys {
            Sys::Nats => to.clone(),
            // A subscription is fed by its topic.
            Sys::PubSub => format!(
                "{}:topic/projects/{}/topics/{name}-src",
                sys.label(),
                support::systems::PROJECT
            ),
            _ => recorded,
        };
        for line in listed {
            assert_eq!(line["error_class"], "transient", "{line}");
            assert_eq!(line["to"], expected_to.as_str(), "{line}");
        }
        assert_eq!(summary[0]["dry_run"], true);
        // Where dead letters are removed (RabbitMQ), the count after the redrive below
        // shows that the dry run removed none; on a log, read the endpoint again now.
        if matches!(sys, Sys::Kafka | Sys::Nats | Sys::Redis) {
            let (after_dry_run, _) = stats(&setup.dlq["dry"], file, sys).await;
            assert_eq!(after_dry_run, total, "a dry run moves nothing");
        }
    }

    let (code, stdout, stderr) = bridge(dlq_args(
        "redrive",
        &setup.dlq["redrive"],
        file,
        sys,
        &select,
    ))
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["moved"], outages, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["duplicates_at_most"], 128);

    // The fixed route delivers exactly the outages, restored, past the hop limit.
    let harness = fixed_route(&setup).await;
    let out = harness.queue("out");
    wait_until("the redriven outages", Duration::from_secs(60), || {
        out.len() as u64 >= outages
    })
    .await;
    let delivered = out.messages();
    let mut ids: Vec<String> = delivered
        .iter()
        .map(|m| m.message_id.clone().unwrap_or_default())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, outages, "0 lost, 0 duplicated");
    for message in &delivered {
        let id = message.message_id.as_deref().unwrap();
        assert!(id.starts_with("outage-"), "{id}");
        assert_eq!(message.body, format!("{id} body").into_bytes());
        assert_eq!(message.headers.get_text("app-kind"), Some("outage"));
        assert!(
            message
                .headers
                .iter()
                .all(|(n, _)| !n.starts_with("bridge-dlq-")),
            "{message:?}"
        );
    }
    assert!(
        harness.queue("dlq").is_empty(),
        "the loop guard let them pass"
    );
    harness.stop().await;

    match sys {
        Sys::Kafka | Sys::Nats | Sys::Redis => {
            // A topic, a JetStream stream with limits retention and a Redis stream keep
            // what was taken: the reader (`--group`) keeps the progress, and a rerun
            // moves none of those again.
            let endpoint = &setup.dlq["after"];
            let (code, stdout, stderr) =
                bridge(dlq_args("redrive", endpoint, file, sys, &select)).await;
            assert_eq!(code, Some(0), "{stderr}");
            let rerun: Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(rerun["moved"], 0, "{rerun}");
            // NATS and Redis held the others and gave them back; Kafka's group went past
            // them.
            let permanent = ["--error-class", "permanent", "--json", "--to", &to];
            let (code, stdout, stderr) =
                bridge(dlq_args("redrive", endpoint, file, sys, &permanent)).await;
            assert_eq!(code, Some(0), "{stderr}");
            let rest: Value = serde_json::from_str(&stdout).unwrap();
            let stayed = if sys == Sys::Kafka {
                0
            } else {
                total - outages
            };
            assert_eq!(rest["moved"], stayed, "{rest}");
        }
        // The emulator delivers nothing to a subscription's next consumer: what stays is
        // what the redrive did not select and gave back.
        Sys::PubSub => assert_eq!(summary["not_selected"], total - outages, "{summary}"),
        _ => {
            // Exactly the outages are gone: the redrive took those, the dry run none.
            let (seen, groups) = stats(&setup.dlq["after"], file, sys).await;
            assert_eq!(seen, total - outages, "{groups:?}");
            assert!(!groups.contains_key("outage"));
            assert_eq!(groups["poison"], u64::from(per_kind[0]));
            assert_eq!(groups["unroutable"], u64::from(per_kind[1]));
        }
    }
    drop(setup.checker);
}

macro_rules! on_each_system {
    ($($test:ident: $sys:expr, $per_kind:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            redrives_one_kind_and_leaves_the_others($sys, $per_kind).await;
        }
    )*};
}

// 1,000 dead letters in all; 300 on the SQS stand-in, which slows down as a queue grows.
on_each_system! {
    dlq_redrive_on_kafka_moves_one_kind_and_leaves_the_others: Sys::Kafka, [400, 300, 300];
    dlq_redrive_on_rabbitmq_moves_one_kind_and_leaves_the_others: Sys::Rabbit, [400, 300, 300];
    dlq_redrive_on_sqs_moves_one_kind_and_leaves_the_others: Sys::Sqs, [100, 100, 100];
    dlq_redrive_on_sns_moves_one_kind_and_leaves_the_others: Sys::Sns, [100, 100, 100];
    dlq_redrive_on_pubsub_moves_one_kind_and_leaves_the_others: Sys::PubSub, [400, 300, 300];
    dlq_redrive_on_nats_moves_one_kind_and_leaves_the_others: Sys::Nats, [400, 300, 300];
    dlq_redrive_on_redis_moves_one_kind_and_leaves_the_others: Sys::Redis, [400, 300, 300];
}

/// Reads `place` until aborted, counting each message id.
fn count_arrivals(
    mut source: Box<dyn bridge::adapter::Source>,
) -> (
    Arc<Mutex<HashMap<String, u32>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let into = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok(Some(delivery)) = source.recv().await {
            let id = delivery.message.message_id.clone().unwrap_or_default();
            *into.lock().unwrap().entry(id).or_insert(0) += 1;
            delivery.ack.ack();
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_killed_midway_and_run_again_loses_nothing() {
    init_logs();
    let name = unique("dlq-kill");
    let setup = set_up(Sys::Rabbit, &name, [0, 0, 1000]).await;
    let settings = bridge::adapter::SourceSettings {
        route: "checker".into(),
        options: setup.src.options.clone(),
        max_in_flight: 256,
        dead_letter: true,
    };
    let source = setup
        .checker
        .open_source(
            &format!("rabbit:{}", setup.src.source).parse().unwrap(),
            &settings,
        )
        .await
        .unwrap();
    let (seen, reader) = count_arrivals(source);
    let arrived = {
        let seen = seen.clone();
        move || seen.lock().unwrap().len()
    };

    let args = dlq_args(
        "redrive",
        &setup.dlq["redrive"],
        &setup.file,
        Sys::Rabbit,
        &["--rate", "100"],
    );
    let mut first = support::process::bridge()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("part of the redrive", Duration::from_secs(30), || {
        arrived() >= 200
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let moved_before = arrived();
    assert!(
        moved_before < 1000,
        "killed midway: {moved_before} had arrived"
    );

    let (code, stdout, stderr) = bridge(dlq_args(
        "redrive",
        &setup.dlq["redrive"],
        &setup.file,
        Sys::Rabbit,
        &["--json"],
    ))
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    let bound = summary["duplicates_at_most"].as_u64().unwrap();
    wait_until(
        "every dead letter at the source",
        Duration::from_secs(60),
        || arrived() == 1000,
    )
    .await;
    reader.abort();
    let copies: u32 = seen.lock().unwrap().values().sum();
    let duplicates = u64::from(copies) - 1000;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, bound {bound}"
    );
    let (left, _) = stats(&setup.dlq["after"], &setup.file, Sys::Rabbit).await;
    assert_eq!(left, 0, "every dead letter was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_shows_a_progress_bar_on_a_terminal_and_lines_in_a_pipe() {
    init_logs();
    let name = unique("dlq-progress");
    let setup = set_up(Sys::Rabbit, &name, [0, 0, 60]).await;
    let mut args = dlq_args(
        "redrive",
        &setup.dlq["redrive"],
        &setup.file,
        Sys::Rabbit,
        &["--rate", "20", "--count", "30"],
    );
    // In a pipe: plain lines, no terminal control.
    let (code, _, stderr) = bridge(args.clone()).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("redrive: "), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");

    // On a terminal (script(1) gives it one): the bar, redrawn in place.
    args.insert(0, support::process::binary().to_owned());
    let command = args
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qefc", &command, "/dev/null"])
            .env("BRIDGE_HTTP_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let terminal = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{terminal}");
    assert!(terminal.contains("looked at · "), "{terminal:?}");
    assert!(terminal.contains("moved"), "{terminal:?}");
    assert!(
        terminal.contains('\x1b') || terminal.contains('\r'),
        "{terminal:?}"
    );
    assert!(!terminal.contains("redrive: "), "{terminal:?}");
}
