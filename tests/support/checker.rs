//! The reliability checker: sequence-numbered messages on several keys go into a source,
//! and what the sinks deliver is counted into a [`Report`] of lost, duplicated and
//! reordered (per key) messages, with the time each fault took to recover from.
//!
//! Reports are printed and kept as JSON in `target/tmp/reliability/`, where
//! `scripts/reliability.sh` turns them into the table of docs/reliability.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::adapter::Source;
use bridge::message::Message;
use tokio_util::sync::CancellationToken;

/// Keys the checker's messages are spread over; order is checked within each.
pub const KEYS: u32 = 16;

/// Checker message `n`: key `k{n % KEYS}`, so each key's sequence numbers increase.
pub fn message(n: u32) -> Message {
    let mut message = Message::new(format!("seq-{n}"));
    message.key = Some(format!("k{}", n % KEYS).into());
    message.headers.push("seq", n.to_string());
    message
}

/// What the sinks delivered so far.
#[derive(Default)]
pub struct Arrivals {
    counts: HashMap<u32, u32>,
    /// The highest sequence number that arrived for the first time, per key.
    highest_per_key: HashMap<String, u32>,
    reordered: u32,
    /// When each message arrived for the first time, in arrival order.
    first_arrivals: Vec<Instant>,
    broken: Vec<String>,
}

impl Arrivals {
    pub fn shared() -> Arc<Mutex<Arrivals>> {
        Arc::new(Mutex::new(Arrivals::default()))
    }

    pub fn record(&mut self, message: &Message) {
        let seq = message.headers.get_text("seq").and_then(|s| s.parse().ok());
        let Some(n) = seq else {
            self.broken.push(format!("no seq header: {message:?}"));
            return;
        };
        if message.body != format!("seq-{n}") || message.key != self::message(n).key {
            self.broken
                .push(format!("message {n} changed: {message:?}"));
        }
        let count = self.counts.entry(n).or_default();
        *count += 1;
        if *count > 1 {
            return;
        }
        self.first_arrivals.push(Instant::now());
        let key = format!("k{}", n % KEYS);
        let highest = self.highest_per_key.entry(key).or_insert(n);
        if n < *highest {
            self.reordered += 1;
        }
        *highest = (*highest).max(n);
    }

    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// How long after `since` the first new message arrived, if one did.
    pub fn progress_after(&self, since: Instant) -> Option<Duration> {
        let at = self.first_arrivals.partition_point(|&t| t < since);
        self.first_arrivals.get(at).map(|&t| t - since)
    }

    /// The report for `sent` messages numbered `0..sent`.
    pub fn report(&self, scenario: &str, sent: u32) -> Report {
        Report {
            scenario: scenario.to_owned(),
            messages: sent,
            lost: (0..sent).filter(|n| !self.counts.contains_key(n)).count() as u32,
            duplicates: self.counts.values().map(|c| c - 1).sum(),
            reordered: self.reordered,
            recovery_ms: None,
            broken: self.broken.iter().take(3).cloned().collect(),
        }
    }
}

/// Reads `source` until the task is aborted, recording and acknowledging every message.
pub fn collect(
    source: Box<dyn Source>,
    arrivals: Arc<Mutex<Arrivals>>,
) -> tokio::task::JoinHandle<()> {
    collect_until(source, arrivals, CancellationToken::new())
}

/// Reads `source` until `stop`, recording and acknowledging every message, then closes it
/// (so its last acknowledgements reach the broker while the broker is still there).
pub fn collect_until(
    mut source: Box<dyn Source>,
    arrivals: Arc<Mutex<Arrivals>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = source.recv() => next,
            };
            let Ok(Some(delivery)) = next else { break };
            arrivals.lock().unwrap().record(&delivery.message);
            delivery.ack.ack();
        }
        source.close().await;
    })
}

/// The outcome of one scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    pub messages: u32,
    pub lost: u32,
    pub duplicates: u32,
    pub reordered: u32,
    /// The longest time from the end of a fault to the next new message at the sink.
    pub recovery_ms: Option<u128>,
    /// The first messages that arrived changed, if any.
    pub broken: Vec<String>,
}

impl Report {
    pub fn with_recovery(mut self, recovery: Option<Duration>) -> Report {
        self.recovery_ms = recovery.map(|d| d.as_millis());
        self
    }

    /// Adds another flow's report of the same scenario (several routes, one table row).
    pub fn merge(mut self, other: Report) -> Report {
        self.messages += other.messages;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.recovery_ms = self.recovery_ms.max(other.recovery_ms);
        self.broken.extend(other.broken);
        self
    }

    /// Prints the report and keeps it for the docs table.
    pub fn publish(&self) {
        println!(
            "reliability report: {}",
            serde_json::to_string(self).unwrap()
        );
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability");
        std::fs::create_dir_all(&dir).unwrap();
        let name: String = self
            .scenario
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let file = dir.join(format!("{name}.json"));
        std::fs::write(file, serde_json::to_vec_pretty(self).unwrap()).unwrap();
    }

    /// Fails unless nothing was lost or changed, duplicates stay within `max_duplicates`
    /// and, when `ordered`, no key's messages arrived out of order.
    pub fn assert_holds(&self, max_duplicates: u32, ordered: bool) {
        assert!(
            self.broken.is_empty(),
            "{}: changed: {:?}",
            self.scenario,
            self.broken
        );
        assert_eq!(self.lost, 0, "{}: lost messages: {self:?}", self.scenario);
        assert!(
            self.duplicates <= max_duplicates,
            "{}: {} duplicates, more than {max_duplicates}",
            self.scenario,
            self.duplicates
        );
        if ordered {
            assert_eq!(self.reordered, 0, "{}: reordered: {self:?}", self.scenario);
        }
    }
}

/// Whether the long mode of the reliability scenarios was asked for
/// (`BRIDGE_RELIABILITY=long`, set by `scripts/reliability.sh --long`).
pub fn long_mode() -> bool {
    std::env::var("BRIDGE_RELIABILITY").is_ok_and(|v| v == "long")
}
