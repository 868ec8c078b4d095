//! CPU time and resident memory of a child process, read from `/proc` (Linux only), with
//! librdkafka's own threads (named `rdk:*`) counted apart so that the cost of the code
//! around the client can be compared on its own; and the CPU time of the local brokers, to
//! tell whether a pipe or its broker sets the pace.

use std::time::Duration;

/// CPU time used so far by a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// All threads, including those already gone.
    pub total: Duration,
    /// Live threads whose name starts with `rdk:` (librdkafka's).
    pub librdkafka: Duration,
}

impl Usage {
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            total: self.total.saturating_sub(earlier.total),
            librdkafka: self.librdkafka.saturating_sub(earlier.librdkafka),
        }
    }

    pub fn outside_librdkafka(self) -> Duration {
        self.total.saturating_sub(self.librdkafka)
    }
}

fn ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The name and utime + stime of a `/proc/.../stat` line (the name may hold spaces).
fn parse_stat(stat: &str) -> Option<(&str, Duration)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = &stat[open + 1..close];
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((
        name,
        Duration::from_millis(ticks * 1000 / ticks_per_second()),
    ))
}

pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, total) = parse_stat(&stat)?;
    let mut librdkafka = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("stat"))
            && let Some((name, used)) = parse_stat(&stat)
            && name.starts_with("rdk:")
        {
            librdkafka += used;
        }
    }
    Some(Usage { total, librdkafka })
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Command names of the local brokers' processes (tansu, RabbitMQ's Erlang VM, moto).
const BROKER_COMMANDS: [&str; 3] = ["tansu", "beam.smp", "moto_server"];

/// The project's own brokers whose program may also run as a system service (or, for the
/// Pub/Sub emulator, is a JVM among others): command name, text of the command line that
/// tells ours apart (Redis shows its address there), short name.
const OURS_BY_COMMAND_LINE: [(&str, &str, &str); 4] = [
    ("nats-server", "4223", "nats-server"),
    ("java", "pubsub", "pubsub-emulator"),
    ("redis-server", ":6390", "redis-server"),
    ("mosquitto", "state/mosquitto/", "mosquitto"),
];

/// CPU time used by each local broker process, by short name.
pub type BrokersCpu = Vec<(&'static str, Duration)>;

/// The local brokers' processes (short name and id); found once, so that sampling them
/// costs little.
pub fn broker_pids() -> Vec<(&'static str, u32)> {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let (name, _) = parse_stat(&stat)?;
            let known = BROKER_COMMANDS
                .iter()
                .find(|command| name.starts_with(**command))
                .copied()
                .or_else(|| {
                    let (_, marker, short) = OURS_BY_COMMAND_LINE
                        .iter()
                        .find(|(command, _, _)| name == *command)?;
                    let line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                    String::from_utf8_lossy(&line)
                        .contains(marker)
                        .then_some(*short)
                })?;
            Some((known, pid))
        })
        .collect()
}

/// CPU time used so far by each of the broker processes `brokers` (zero once one is gone).
pub fn cpu_of(brokers: &[(&'static str, u32)]) -> BrokersCpu {
    brokers
        .iter()
        .map(|(name, pid)| {
            let used = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat).map(|(_, used)| used))
                .unwrap_or_default();
            (*name, used)
        })
        .collect()
}
