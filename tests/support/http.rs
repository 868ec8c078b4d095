//! Reads bridge's HTTP port the way a kubelet or Prometheus does: a plain GET.
//!
//! A dozen lines of HTTP/1.0 instead of an HTTP client crate: the tests only need a
//! status line and a body from a loopback server, and blocking reads keep them simple.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on `address` (`HOST:PORT`): the status code and the body.
pub fn get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The address `bridge run` logged when it started serving, once it has.
pub fn served_address(log: &str) -> Option<String> {
    let start = log.find("on http://")? + "on http://".len();
    let address: String = log[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    Some(address)
}

/// Waits for `log()` to show the served address.
pub fn wait_for_address(log: impl Fn() -> String, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(address) = served_address(&log()) {
            return address;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bridge never said where it serves HTTP: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the Prometheus sample `name` whose labels include all of `labels`, or
/// `None` when there is none (label values here never contain `",`).
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (inside, value) = rest.split_once("} ")?;
        let found: Vec<(&str, &str)> = inside
            .trim_end_matches('"')
            .split("\",")
            .filter_map(|pair| pair.split_once("=\""))
            .collect();
        labels
            .iter()
            .all(|wanted| found.contains(wanted))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}
