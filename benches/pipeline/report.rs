//! Printing the figures: one line per run as it finishes, then a Markdown table (the one in
//! docs/performance.md) with bridge's throughput as a ratio of the raw pipe's (over several
//! rounds: the ratio of the mean throughputs; every other column is from the first round).

use std::time::Duration;

use crate::run::{Measured, Row};

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Each broker's share of the brokers' CPU per message, for those that did any work.
fn brokers_apart(m: &Measured) -> String {
    let busy: Vec<String> = m
        .brokers_cpu
        .iter()
        .filter(|(_, used)| m.cpu_us_per_message(*used) >= 0.5)
        .map(|(name, used)| format!("{name} {:.1}", m.cpu_us_per_message(*used)))
        .collect();
    if busy.is_empty() {
        String::new()
    } else {
        format!(" ({})", busy.join(", "))
    }
}

fn describe(label: &str, m: &Measured) -> String {
    let mut line = format!(
        "   {label:>6}: {:>8.0} msg/s {:>6.1} MB/s ({} msgs in {:.2?}); CPU {:.1} us/msg ({:.1} outside librdkafka), brokers {:.1} us/msg{}; RSS peak {} MiB, idle {} MiB",
        m.per_second(),
        m.mb_per_second(),
        m.messages,
        m.elapsed,
        m.cpu_us_per_message(m.cpu.total),
        m.cpu_us_per_message(m.cpu.outside_librdkafka()),
        m.cpu_us_per_message(m.brokers_total()),
        brokers_apart(m),
        mib(m.rss_peak_kib),
        mib(m.rss_idle_kib),
    );
    if let Some(l) = &m.latency {
        line += &format!(
            "\n           latency at {:.0} msg/s: p50 {} ms, p99 {} ms, max {} ms ({} of {} arrived)",
            l.rate,
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            l.received,
            l.sent
        );
    }
    if let Some(s) = &m.stall {
        line += &format!(
            "\n           sink stalled with {} waiting: RSS {} MiB before, max {} MiB, {} MiB at the end; all delivered {:.1?} after the sink came back",
            s.backlog,
            mib(s.before_kib),
            mib(s.max_kib),
            mib(s.end_kib),
            s.recovered_in
        );
    }
    line
}

pub fn print_row(row: &Row) {
    println!("{}", describe("raw", &row.raw));
    println!("{}", describe("bridge", &row.bridge));
    if let Some(peer) = &row.peer {
        println!("{}", describe("peer", peer));
    }
    for (round, (raw, bridge)) in row.more.iter().enumerate() {
        println!("   round {}:", round + 2);
        println!("{}", describe("raw", raw));
        println!("{}", describe("bridge", bridge));
    }
    let each: Vec<String> = row
        .rounds()
        .map(|(raw, bridge)| format!("{:.2}x", bridge.per_second() / raw.per_second()))
        .collect();
    if each.len() == 1 {
        println!("   bridge / raw throughput: {}", each[0]);
    } else {
        println!(
            "   bridge / raw throughput: {:.2}x of the means (rounds: {})",
            row.ratio(),
            each.join(", ")
        );
    }
    if let Some(peer) = &row.peer {
        println!(
            "   peer / raw throughput: {:.2}x (first round)",
            peer.per_second() / row.raw.per_second()
        );
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "| scenario | raw msg/s | bridge msg/s | bridge MB/s | ratio | CPU us/msg raw / bridge (outside librdkafka) | brokers' CPU us/msg raw / bridge | p50 / p99 / max ms raw | p50 / p99 / max ms bridge | RSS MiB bridge idle / peak | stalled sink RSS MiB before / max / end | peer msg/s, ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let (raw, bridge) = (&row.raw, &row.bridge);
        let (raw_rate, bridge_rate) = row.mean_per_second();
        let latency = |m: &Measured| match &m.latency {
            Some(l) => format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.max)),
            None => "-".into(),
        };
        let stall = match &bridge.stall {
            Some(s) => format!(
                "{} / {} / {}",
                mib(s.before_kib),
                mib(s.max_kib),
                mib(s.end_kib)
            ),
            None => "-".into(),
        };
        let peer = match &row.peer {
            Some(peer) => format!(
                "{:.0}, {:.2}x",
                peer.per_second(),
                peer.per_second() / raw.per_second()
            ),
            None => "-".into(),
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.2}x | {:.0} ({:.0}) / {:.0} ({:.0}) | {:.0} / {:.0} | {} | {} | {} / {} | {} | {} |",
            row.name,
            raw_rate,
            bridge_rate,
            bridge_rate * bridge.size as f64 / 1_000_000.0,
            bridge_rate / raw_rate,
            raw.cpu_us_per_message(raw.cpu.total),
            raw.cpu_us_per_message(raw.cpu.outside_librdkafka()),
            bridge.cpu_us_per_message(bridge.cpu.total),
            bridge.cpu_us_per_message(bridge.cpu.outside_librdkafka()),
            raw.cpu_us_per_message(raw.brokers_total()),
            bridge.cpu_us_per_message(bridge.brokers_total()),
            latency(raw),
            latency(bridge),
            mib(bridge.rss_idle_kib),
            mib(bridge.rss_peak_kib),
            stall,
            peer,
        );
    }
}
