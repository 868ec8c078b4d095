//! `bridge run` as a platform runs it: `/readyz` before connecting, while running and
//! while draining; `/healthz`; the HTTP port's settings. No broker needed: standard input
//! and output stand in for one, and an unblocked pipe is the slow sink.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::http::{get, sample, wait_for_address};
use support::process::bridge;

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The exit code once the child has exited, or None (and the child killed) after `timeout`.
fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn log_of(path: &std::path::Path) -> impl Fn() -> String + '_ {
    move || std::fs::read_to_string(path).unwrap_or_default()
}

/// A `bridge run` of a routes file, its directory, log and HTTP address.
struct Launched {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    child: Child,
    address: String,
}

/// Starts `bridge run` on `yaml` (stdin and stdout piped) and waits for its HTTP address.
fn launch(yaml: &str) -> Launched {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, yaml).unwrap();
    let log = dir.path().join("bridge.log");
    let child = bridge()
        .args(["run", routes.to_str().unwrap()])
        .env("BRIDGE_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let address = wait_for_address(log_of(&log), Duration::from_secs(20));
    Launched {
        _dir: dir,
        log,
        child,
        address,
    }
}

#[test]
fn readyz_turns_503_on_sigterm_before_the_drain_ends_and_nothing_is_lost() {
    const LINES: usize = 1000;
    let Launched {
        _dir,
        log,
        mut child,
        address,
    } = launch(
        "settings: {drain_timeout: 60s}\nconnections:\n  io: {type: stdio}\nroutes:\n  - name: echo\n    from: io:stdin\n    to: io:stdout\n    max_in_flight: 2000\n",
    );
    wait_until("/readyz 200", Duration::from_secs(20), || {
        matches!(get(&address, "/readyz"), Ok((200, _)))
    });
    assert_eq!(get(&address, "/healthz").unwrap().0, 200);

    // Nobody reads standard output yet: once its pipe is full, the sink blocks, the
    // route stops taking lines (backpressure) and what it took is in flight.
    let mut input = child.stdin.take().unwrap();
    for n in 0..LINES {
        writeln!(input, "line {n}").unwrap();
    }
    input.flush().unwrap();
    let received = || {
        let metrics = get(&address, "/metrics").unwrap().1;
        sample(
            &metrics,
            "bridge_messages_received_total",
            &[("route", "echo")],
        )
        .unwrap_or(0.0)
    };
    let mut last = -1.0;
    wait_until(
        "the route to stop taking lines",
        Duration::from_secs(20),
        || {
            std::thread::sleep(Duration::from_millis(500));
            let now = received();
            std::mem::replace(&mut last, now) == now && now > 0.0
        },
    );
    let metrics = get(&address, "/metrics").unwrap().1;
    let in_flight = sample(&metrics, "bridge_messages_in_flight", &[("route", "echo")]).unwrap();
    assert!(
        in_flight > 0.0,
        "the blocked pipe holds messages in flight: {metrics}"
    );

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_until(
        "/readyz 503 while draining",
        Duration::from_secs(10),
        || matches!(get(&address, "/readyz"), Ok((503, body)) if body.contains("draining")),
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the drain is still waiting for the blocked sink"
    );
    assert_eq!(
        get(&address, "/healthz").unwrap().0,
        200,
        "alive while draining"
    );
    // The source has stopped: this is everything bridge took from standard input.
    let taken = received() as usize;
    assert!(taken < LINES, "the rest waits in the input pipe, untaken");

    // Unblock the sink: the drain finishes and every line received comes out.
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        lines.push(line.unwrap());
    }
    let status = child.wait().unwrap();
    drop(input);
    assert_eq!(status.code(), Some(0), "{}", log_of(&log)());
    assert_eq!(lines.len(), taken, "every line taken comes out");
    for (n, line) in lines.iter().enumerate() {
        let envelope: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            envelope["body"].as_str().unwrap() == format!("line {n}"),
            "line {n}: {line}"
        );
    }
}

#[cfg(feature = "rabbitmq")]
#[test]
fn readyz_is_503_until_every_endpoint_is_connected_and_healthz_is_200() {
    // Nothing listens on port 1: bridge keeps waiting for the broker.
    let Launched {
        _dir,
        log,
        mut child,
        address,
    } = launch(
        "connections:\n  rabbit: {type: rabbitmq, url: 'amqp://guest:guest@127.0.0.1:1/%2f', connect_timeout_ms: 500}\n  io: {type: stdio}\nroutes:\n  - name: waiting\n    from: io:stdin\n    to: rabbit:queue/nowhere\n",
    );
    wait_until(
        "a failed connection attempt",
        Duration::from_secs(20),
        || log_of(&log)().contains("not available yet"),
    );
    let (status, body) = get(&address, "/readyz").unwrap();
    assert_eq!(
        (status, body.trim()),
        (503, "starting: connecting to brokers")
    );
    assert_eq!(get(&address, "/healthz").unwrap().0, 200);
    let (status, metrics) = get(&address, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(!metrics.contains("guest:guest"), "{metrics}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn http_listen_off_serves_nothing_and_a_bad_address_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "connections:\n  io: {type: stdio}\nroutes:\n  - name: echo\n    from: io:stdin\n    to: io:stdout\n",
    )
    .unwrap();
    let off = bridge()
        .args(["run", routes.to_str().unwrap(), "--http-listen", "off"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(off.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&off.stderr).contains("on http://"));

    let bad = bridge()
        .args([
            "run",
            routes.to_str().unwrap(),
            "--http-listen",
            "localhost",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not `HOST:PORT` or `off`"));
}

#[test]
fn sighup_is_logged_and_ignored_instead_of_killing_the_process() {
    let Launched {
        _dir,
        log,
        mut child,
        address,
    } = launch(
        "connections:\n  io: {type: stdio}\nroutes:\n  - name: echo\n    from: io:stdin\n    to: io:stdout\n",
    );
    wait_until("ready", Duration::from_secs(20), || {
        matches!(get(&address, "/readyz"), Ok((200, _)))
    });
    let pid = child.id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("HUP");
    wait_until("the SIGHUP warning", Duration::from_secs(10), || {
        log_of(&log)().contains("does not reload its routes file")
    });
    let mut input = child.stdin.take().unwrap();
    writeln!(input, "still running").unwrap();
    input.flush().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    assert!(line.contains("still running"), "{line}");
    assert_eq!(get(&address, "/readyz").unwrap().0, 200);
    // stdin stays open: SIGTERM alone must end the process (a pipe's writer may never close).
    signal("TERM");
    let status = wait_for_exit(&mut child, Duration::from_secs(30));
    drop(input);
    assert_eq!(status, Some(0), "{}", log_of(&log)());
}
