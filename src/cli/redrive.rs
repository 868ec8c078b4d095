//! `bridge dlq redrive ENDPOINT`: sends the selected dead letters at ENDPOINT back to the
//! endpoint each one records in `bridge-dlq-source` (or to `--to`), restored as the route
//! received them ([`crate::dlq::restore`]).
//!
//! Guarantees: a dead letter is removed (acknowledged to a reader of bridge's own, `--group`)
//! only after its copy was confirmed by the destination; at most [`WINDOW`] copies are
//! unconfirmed at a time, so a crash sends at most [`DUPLICATES_AT_MOST`] of them twice,
//! each with its message id kept for downstream deduplication. Dead letters that are not
//! selected, or whose copy failed, stay: held unsettled and released at the end (at most
//! [`MAX_HELD`] per run), or, on a log where taking removes nothing (Kafka), passed by the
//! reader's position; there a failure ends the run, so the position never passes a dead
//! letter that did not move. `--dry-run` reads with a peek and sends nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::connections::resolve;
use super::{CliError, ConnectionArgs, DlqRedriveArgs};
use crate::ack::AckHandle;
use crate::adapter::{Confirmation, Connector, DeadLetterRead, Sink};
use crate::address::Endpoint;
use crate::config::RatePlan;
use crate::dlq::restore;
use crate::message::{Message, json, reserved};
use crate::printable::escape;
use crate::router::rate::RateLimit;

/// Copies sent and not yet confirmed, at most.
pub const WINDOW: usize = 64;
/// Copies a crash may leave sent but their dead letters not yet removed: the window, plus
/// removals on their way to the broker (a Kafka group commits up to two windows behind).
pub const DUPLICATES_AT_MOST: usize = 2 * WINDOW;
/// Dead letters left alone (not selected, or failed) that one run holds before it stops.
pub const MAX_HELD: usize = 10_000;
/// Failed copies in a row after which the destination is taken to be down.
const MAX_FAILURES_IN_A_ROW: u32 = 10;

/// What happened to the dead letters one run looked at.
#[derive(Debug, Default)]
struct Tally {
    looked_at: u64,
    moved: u64,
    not_selected: u64,
    failed: u64,
    failures_in_a_row: u32,
    /// Why dead letters were left, by reason, with counts.
    left: BTreeMap<String, u64>,
    /// Copies moved, by destination.
    destinations: BTreeMap<String, u64>,
}

pub async fn redrive(args: DlqRedriveArgs) -> Result<(), CliError> {
    let selection = super::dlq::selection(&args.read.selection)?;
    let to = match &args.to {
        Some(to) => Some(
            to.parse::<Endpoint>()
                .map_err(|e| CliError::Usage(anyhow!("--to: {e}")))?,
        ),
        None => None,
    };
    let (endpoint, connector) = super::dlq::connect(&args.read).await?;
    let positional = connector.dead_letter_take_is_positional();
    let read = if args.dry_run {
        DeadLetterRead::Peek {
            disturb: args.read.disturb,
        }
    } else {
        DeadLetterRead::Take {
            reader: &args.group,
            window: if positional {
                WINDOW
            } else {
                WINDOW + MAX_HELD
            },
        }
    };
    let mut reader = super::dlq::open(connector.as_ref(), &endpoint, read).await?;
    let total = match reader.backlog() {
        Some(backlog) => backlog.messages().await.ok(),
        None => None,
    };
    let mut destinations = Destinations::new(
        args.read.connection.clone(),
        endpoint.connection.clone(),
        connector.clone(),
    );
    let rate = args.rate.map(|per_second| {
        let plan = RatePlan {
            messages: per_second.get(),
            per: Duration::from_secs(1),
            burst: 1,
        };
        RateLimit::new(&plan, metrics::Histogram::noop())
    });
    let shutdown = crate::shutdown::on_signals()
        .map_err(|e| CliError::Runtime(anyhow!("cannot install signal handlers: {e}")))?;
    let mut progress = Progress::new(total, args.read.json);
    let mut tally = Tally::default();
    let mut pending: VecDeque<(Confirmation, AckHandle, String)> = VecDeque::new();
    let mut held: Vec<AckHandle> = Vec::new();
    let started = Instant::now();
    let mut stopped: Option<String> = None;
    let stdout = std::io::stdout();
    loop {
        if args.read.count.is_some_and(|count| tally.moved >= count) {
            break;
        }
        if held.len() >= MAX_HELD {
            stopped = Some(format!(
                "{MAX_HELD} dead letters left alone are held; run again (with a narrower selection) for the rest"
            ));
            break;
        }
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                stopped = Some("interrupted".into());
                break;
            }
            next = reader.recv() => next,
            _ = tokio::time::sleep(args.read.idle) => break,
        };
        let delivery = match next {
            Ok(Some(delivery)) => delivery,
            Ok(None) => break,
            Err(error) => {
                stopped = Some(format!("reading {endpoint} failed: {error}"));
                break;
            }
        };
        tally.looked_at += 1;
        if !selection.matches(&delivery.message) {
            tally.not_selected += 1;
            if positional {
                delivery.ack.ack();
            } else {
                held.push(delivery.ack);
            }
            progress.show(&tally);
            continue;
        }
        let destination = match destinations.of(&delivery.message, to.as_ref()).await {
            Ok(destination) => destination,
            Err(reason) => {
                *tally.left.entry(reason).or_default() += 1;
                if positional {
                    stopped = Some("a dead letter without a destination".into());
                    held.push(delivery.ack);
                    break;
                }
                held.push(delivery.ack);
                progress.show(&tally);
                continue;
            }
        };
        let label = destination.to_string();
        if args.dry_run {
            let line = dry_run_line(&delivery.message, &label, args.read.json);
            let mut out = stdout.lock();
            if out
                .write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                stopped = Some("standard output closed".into());
                break;
            }
            *tally.destinations.entry(label).or_default() += 1;
            tally.moved += 1;
            delivery.ack.ack();
            continue;
        }
        if let Some(rate) = &rate {
            rate.until_ready().await;
        }
        let sent = match destinations.sink(&destination).await {
            Ok(sink) => sink
                .send(&restore(&delivery.message))
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        match sent {
            Ok(confirmation) => pending.push_back((confirmation, delivery.ack, label)),
            Err(error) => {
                tally.failure(format!("sending to {label} failed: {error}"));
                held.push(delivery.ack);
            }
        }
        while pending.len() >= WINDOW {
            let (confirmation, ack, label) = pending.pop_front().expect("a pending copy");
            settle(confirmation, ack, label, &mut tally, &mut held).await;
        }
        progress.show(&tally);
        if let Some(reason) = failing(&tally, positional) {
            stopped = Some(reason);
            break;
        }
    }
    for (confirmation, ack, label) in pending {
        settle(confirmation, ack, label, &mut tally, &mut held).await;
    }
    for ack in held {
        ack.retry("left by bridge dlq redrive");
    }
    reader.close().await;
    destinations.flush().await;
    progress.finish(&tally);
    let summary = Summary {
        endpoint: &args.read.endpoint,
        dry_run: args.dry_run,
        tally: &tally,
        seconds: started.elapsed().as_secs_f64(),
        stopped: stopped.as_deref(),
    };
    print!(
        "{}",
        if args.read.json {
            summary.json()
        } else {
            summary.text()
        }
    );
    let interrupted = stopped.as_deref() == Some("interrupted");
    if tally.failed > 0 || (stopped.is_some() && !interrupted) {
        return Err(CliError::Runtime(anyhow!(
            "{}",
            stopped.unwrap_or_else(|| format!("{} dead letters could not be moved", tally.failed))
        )));
    }
    Ok(())
}

impl Tally {
    fn failure(&mut self, reason: String) {
        self.failed += 1;
        self.failures_in_a_row += 1;
        *self.left.entry(reason).or_default() += 1;
    }
}

/// Why the run must stop after a failure, if it must: on a log (a failure there would let
/// the reader's position pass a dead letter that did not move), or after many in a row.
fn failing(tally: &Tally, positional: bool) -> Option<String> {
    if tally.failures_in_a_row == 0 {
        return None;
    }
    if positional {
        return Some("a copy failed; the reader's position stays before it".into());
    }
    (tally.failures_in_a_row >= MAX_FAILURES_IN_A_ROW).then(|| {
        format!("{MAX_FAILURES_IN_A_ROW} copies in a row failed; the destination seems down")
    })
}

/// Waits for one copy's confirmation, then removes its dead letter, or leaves it.
async fn settle(
    confirmation: Confirmation,
    ack: AckHandle,
    label: String,
    tally: &mut Tally,
    held: &mut Vec<AckHandle>,
) {
    match confirmation.await {
        Ok(_) => {
            ack.ack();
            tally.moved += 1;
            tally.failures_in_a_row = 0;
            *tally.destinations.entry(label).or_default() += 1;
        }
        Err(error) => {
            tally.failure(format!("sending to {label} failed: {error}"));
            held.push(ack);
        }
    }
}

fn dry_run_line(letter: &Message, destination: &str, as_json: bool) -> String {
    let context = |name: &str| letter.headers.get_text(name).unwrap_or_default();
    if as_json {
        let line = serde_json::json!({
            "to": destination,
            "message_id": letter.message_id,
            "route": context(reserved::DLQ_ROUTE),
            "sink": context(reserved::DLQ_SINK),
            "error_class": context(reserved::DLQ_ERROR_CLASS),
            "error": context(reserved::DLQ_ERROR),
            "message": serde_json::from_str::<serde_json::Value>(&json::encode(&restore(letter)))
                .unwrap_or_default(),
        });
        return format!("{line}\n");
    }
    format!(
        "would move {} to {} (route {} · sink {} · {}: {})\n",
        escape(letter.message_id.as_deref().unwrap_or("(no message id)")),
        escape(destination),
        escape(context(reserved::DLQ_ROUTE)),
        escape(context(reserved::DLQ_SINK)),
        escape(context(reserved::DLQ_ERROR_CLASS)),
        escape(context(reserved::DLQ_ERROR)),
    )
}

/// Where copies go: connectors by connection name, opened sinks by endpoint, and what a
/// source path redrives to, each found once per run.
struct Destinations {
    args: ConnectionArgs,
    connectors: HashMap<String, Arc<dyn Connector>>,
    sinks: HashMap<String, Arc<dyn Sink>>,
    /// `bridge-dlq-source` values and the endpoints they redrive to (or why not).
    resolved: HashMap<String, Result<Endpoint, String>>,
}

impl Destinations {
    fn new(args: ConnectionArgs, name: String, connector: Arc<dyn Connector>) -> Destinations {
        Destinations {
            args,
            connectors: HashMap::from([(name, connector)]),
            sinks: HashMap::new(),
            resolved: HashMap::new(),
        }
    }

    async fn connector(&mut self, endpoint: &Endpoint) -> Result<Arc<dyn Connector>, String> {
        if let Some(connector) = self.connectors.get(&endpoint.connection) {
            return Ok(connector.clone());
        }
        let (_, spec) = resolve(&endpoint.to_string(), &self.args).map_err(|e| e.to_string())?;
        let connector = spec
            .connect(&crate::adapter::ConnectContext::default())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", spec.describe()))?;
        self.connectors
            .insert(endpoint.connection.clone(), connector.clone());
        Ok(connector)
    }

    /// Where `letter` goes: `to`, else what its recorded source redrives to.
    async fn of(&mut self, letter: &Message, to: Option<&Endpoint>) -> Result<Endpoint, String> {
        if let Some(to) = to {
            return Ok(to.clone());
        }
        let Some(source) = letter.headers.get_text(reserved::DLQ_SOURCE) else {
            return Err(format!(
                "no {} header (not dead-lettered by bridge): give --to",
                reserved::DLQ_SOURCE
            ));
        };
        if let Some(known) = self.resolved.get(source) {
            return known.clone();
        }
        let found = self.redrive_endpoint(source).await;
        self.resolved.insert(source.to_owned(), found.clone());
        found
    }

    async fn redrive_endpoint(&mut self, source: &str) -> Result<Endpoint, String> {
        let endpoint: Endpoint = source
            .parse()
            .map_err(|e| format!("{}: {e}", reserved::DLQ_SOURCE))?;
        let connector = self.connector(&endpoint).await?;
        let path = connector
            .redrive_path(&endpoint.path)
            .await
            .map_err(|e| format!("{source}: {e}"))?;
        Ok(Endpoint {
            connection: endpoint.connection,
            path,
        })
    }

    async fn sink(&mut self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, String> {
        let key = endpoint.to_string();
        if let Some(sink) = self.sinks.get(&key) {
            return Ok(sink.clone());
        }
        let connector = self.connector(endpoint).await?;
        let sink = connector
            .open_sink(endpoint)
            .await
            .map_err(|e| format!("cannot open {key}: {e}"))?;
        self.sinks.insert(key, sink.clone());
        Ok(sink)
    }

    async fn flush(&self) {
        for sink in self.sinks.values() {
            sink.flush().await;
        }
    }
}

/// Progress on standard error: a bar on a terminal, a plain line at most once a second
/// otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Progress {
    fn new(total: Option<u64>, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let (bar, template) = match total {
                Some(total) => (
                    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                    "{bar:30} {pos}/{len} looked at · {msg} · {per_sec} · ETA {eta}",
                ),
                None => (
                    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                    "{spinner} {pos} looked at · {msg} · {per_sec}",
                ),
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            last_line: Instant::now(),
        }
    }

    fn counts(tally: &Tally) -> String {
        format!(
            "{} moved · {} not selected · {} left",
            tally.moved,
            tally.not_selected,
            tally.left.values().sum::<u64>()
        )
    }

    fn show(&mut self, tally: &Tally) {
        match &self.bar {
            Some(bar) => {
                if bar.length().is_some_and(|length| tally.looked_at > length) {
                    bar.set_length(tally.looked_at);
                }
                bar.set_position(tally.looked_at);
                bar.set_message(Progress::counts(tally));
            }
            None if self.last_line.elapsed() >= Duration::from_secs(1) => {
                self.last_line = Instant::now();
                eprintln!(
                    "redrive: {} looked at · {}",
                    tally.looked_at,
                    Progress::counts(tally)
                );
            }
            None => {}
        }
    }

    fn finish(&self, tally: &Tally) {
        if let Some(bar) = &self.bar {
            bar.set_position(tally.looked_at);
            bar.finish_with_message(Progress::counts(tally));
        }
    }
}

/// The end of a run, for people or for scripts.
struct Summary<'a> {
    endpoint: &'a str,
    dry_run: bool,
    tally: &'a Tally,
    seconds: f64,
    stopped: Option<&'a str>,
}

impl Summary<'_> {
    fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tally.moved as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn json(&self) -> String {
        let tally = self.tally;
        let summary = serde_json::json!({
            "endpoint": self.endpoint,
            "dry_run": self.dry_run,
            "looked_at": tally.looked_at,
            "moved": tally.moved,
            "not_selected": tally.not_selected,
            "left": tally.left.values().sum::<u64>(),
            "failed": tally.failed,
            "left_because": tally.left,
            "destinations": tally.destinations,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "per_second": self.per_second().round(),
            "duplicates_at_most": if self.dry_run { 0 } else { DUPLICATES_AT_MOST },
            "stopped": self.stopped,
        });
        format!("{summary}\n")
    }

    fn text(&self) -> String {
        let tally = self.tally;
        let verb = if self.dry_run { "would move" } else { "moved" };
        let mut text = format!(
            "{}: looked at {} dead letters; {verb} {}, {} not selected (they stay), {} left in {:.1} s ({:.0}/s)\n",
            escape(self.endpoint),
            tally.looked_at,
            tally.moved,
            tally.not_selected,
            tally.left.values().sum::<u64>(),
            self.seconds,
            self.per_second(),
        );
        for (destination, count) in &tally.destinations {
            text.push_str(&format!("  {count:>7} {verb} to {}\n", escape(destination)));
        }
        for (reason, count) in &tally.left {
            text.push_str(&format!("  {count:>7} left: {}\n", escape(reason)));
        }
        if let Some(stopped) = self.stopped {
            text.push_str(&format!("stopped: {}\n", escape(stopped)));
        }
        if !self.dry_run {
            text.push_str(&format!(
                "had the run been cut short, at most {DUPLICATES_AT_MOST} copies could have been sent twice (each keeps its message id)\n"
            ));
        }
        text
    }
}
