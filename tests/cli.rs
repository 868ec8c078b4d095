//! The `bridge` binary as users run it: exit codes, error texts, stdin -> stdout, drain.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::process::{bridge, run};

fn fixture(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_lists_every_mistake_with_its_line_and_exits_2() {
    let output = run(
        &[
            "validate",
            &fixture("tests/fixtures/invalid/many-mistakes.yaml"),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("7 errors"), "{stderr}");
    for line in [
        "9:3:", "10:3:", "13:5:", "14:3:", "16:5:", "21:19:", "22:5:",
    ] {
        assert!(
            stderr.contains(&format!("many-mistakes.yaml:{line}")),
            "missing line {line} in {stderr}"
        );
    }
}

#[test]
fn validate_accepts_the_example_file_without_any_network() {
    // Point the brokers at addresses nothing listens on: validate must not connect.
    let output = bridge()
        .args(["validate", &fixture("routes.example.yaml")])
        .env("KAFKA_BROKERS", "192.0.2.1:9092")
        .env("RABBIT_HOST", "192.0.2.1")
        .env("AWS_ENDPOINT_URL", "http://192.0.2.1:4566")
        .env("PUBSUB_ENDPOINT", "http://192.0.2.1:8085")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok (4 connections, 5 routes)"));
}

fn stdio_routes(dir: &std::path::Path) -> String {
    let file = dir.join("stdio.yaml");
    std::fs::write(&file, "connections:\n  io: {type: stdio}\nroutes:\n  - name: echo\n    from: io:stdin\n    to: io:stdout\n").unwrap();
    file.to_str().unwrap().to_owned()
}

#[test]
fn stdin_to_stdout_route_turns_each_line_into_a_json_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&["run", &stdio_routes(dir.path())], b"a\nb\n");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["body"], "a");
    assert_eq!(lines[1]["body"], "b");
    // stdout is not read back, so the loop guard adds no header (`count_hops: auto`).
    assert_eq!(lines[0]["headers"], serde_json::json!([]));
}

#[test]
fn sigterm_drains_in_flight_messages_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bridge()
        .args(["run", &stdio_routes(dir.path())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    for n in 0..100 {
        writeln!(input, "line {n}").unwrap();
    }
    input.flush().unwrap();
    let mut first = String::new();
    output.read_line(&mut first).unwrap();
    assert!(first.contains("line 0"));
    // Standard input stays open: only the signal can end the run.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut output, &mut rest).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bridge did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(input);
    assert_eq!(code, Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("SIGTERM received; draining"), "{stderr}");
    assert!(!stderr.contains("dropped unresolved"), "{stderr}");
}

#[test]
fn send_without_a_connection_says_what_to_do_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = bridge()
        .args(["send", "kafka:orders", "hello"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pass --config FILE") && stderr.contains("--url URL"),
        "{stderr}"
    );
}

#[test]
fn send_to_an_unreachable_broker_names_it_and_exits_1() {
    let output = run(
        &[
            "send",
            "rabbit:queue/x",
            "hi",
            "--url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RabbitMQ at 127.0.0.1:1") && stderr.contains("is it running?"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("guest:guest"),
        "credentials are never printed: {stderr}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    let output = run(&["send"], b"");
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["send", "not-an-address", "x", "--url", "stdio:"], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CONNECTION:PATH"));
}

#[test]
fn send_prints_one_receipt_per_message() {
    let output = run(
        &[
            "send",
            "io:stdout",
            "n={n}",
            "--count",
            "3",
            "--url",
            "stdio:",
            "--json",
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let receipts: Vec<_> = stdout
        .lines()
        .filter(|l| l.contains("\"number\""))
        .collect();
    assert_eq!(receipts.len(), 3, "{stdout}");
    assert!(stdout.contains("\"body\":\"n=2\""), "{stdout}");
}

/// Runs `bridge validate FILE` and returns its exit code (None: killed by a signal), its
/// standard error and its peak resident memory in KiB, measured by the kernel
/// (`getrusage` of the waited child, through Python's `resource`).
fn validate_with_peak_memory(file: &std::path::Path) -> (Option<i32>, String, u64) {
    let script = "import resource, subprocess, sys\n\
        p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n\
        sys.stderr.write(p.stderr.decode(errors='replace'))\n\
        print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let output = Command::new("python3")
        .args(["-c", script, support::process::binary(), "validate"])
        .arg(file)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut fields = stdout.split_whitespace();
    let code: i32 = fields.next().unwrap().parse().unwrap();
    let peak: u64 = fields.next().unwrap().parse().unwrap();
    let code = (code >= 0).then_some(code);
    (
        code,
        String::from_utf8_lossy(&output.stderr).into_owned(),
        peak,
    )
}

#[test]
fn hostile_routes_files_are_refused_with_exit_2_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A billion laughs in under 1 KiB: nine anchors, each nine aliases of the one before.
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..9 {
        let prior = format!("*a{}", level - 1);
        let items = [prior.as_str(); 9].join(", ");
        bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    assert!(bomb.len() < 1024, "{}", bomb.len());
    let cases = [
        ("alias-bomb.yaml", bomb, "aliases"),
        (
            "small-alias.yaml",
            "settings: &s {max_hops: 3}\nroutes: *s\n".to_owned(),
            "aliases",
        ),
        (
            "block-nesting.yaml",
            "- ".repeat(100_000) + "x\n",
            "nested more than",
        ),
        ("flow-nesting.yaml", "[".repeat(100_000), "nested more than"),
        (
            "dev-zero.yaml",
            "settings:\n  reply_signing_key: ${file:/dev/zero}\n".to_owned(),
            "larger than 1024 KiB",
        ),
    ];
    for (name, text, expected) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (code, stderr, peak_kib) = validate_with_peak_memory(&file);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(peak_kib < 100 * 1024, "{name}: peak {peak_kib} KiB");
    }
}

#[test]
fn a_routes_file_larger_than_the_cap_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.yaml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(&file, line.repeat((2 << 20) / line.len())).unwrap();
    let output = run(&["validate", file.to_str().unwrap()], b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("larger than 1024 KiB"), "{stderr}");
}

#[test]
fn tail_never_passes_a_control_sequence_from_a_message_to_the_terminal() {
    let output = run(
        &["tail", "io:stdin", "--url", "stdio:", "--idle", "2s"],
        b"title \x1b]0;owned\x07 and \x1b[2J clear\r\n",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("title \\u{1b}]0;owned\\u{7} and \\u{1b}[2J clear"),
        "{stdout:?}"
    );
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\x07'),
        "{stdout:?}"
    );
}

#[test]
fn a_validation_error_names_the_variable_instead_of_quoting_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        "connections:\n  rabbit: {type: rabbitmq, url: '${RABBIT_URL}'}\n  redis-fed:\n    type: memory\nroutes:\n  - name: r\n    from: rabbit:queue/q\n    to: redis-fed:out\n    dead_letter: redis-fed:dlq\n    dedup: {store: '${DEDUP_STORE}'}\n",
    )
    .unwrap();
    let output = bridge()
        .args(["validate", file.to_str().unwrap()])
        .env("RABBIT_URL", "amqp://u:Sq9/pa?ss#wd@h/%2f")
        .env("DEDUP_STORE", "valkey://:Sq9-store-pw@cache:6379")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("connections.rabbit.url"), "{stderr}");
    assert!(
        stderr.contains("${RABBIT_URL}") && stderr.contains("${DEDUP_STORE}"),
        "{stderr}"
    );
    for secret in ["Sq9/pa?ss#wd", "pa?ss", "Sq9-store-pw"] {
        assert!(!stderr.contains(secret), "{secret} in {stderr}");
    }
}

#[test]
fn a_url_whose_password_does_not_parse_is_refused_without_showing_it() {
    for url in [
        "amqp://u:Sq9/pa@127.0.0.1:1/%2f",
        "amqp:u:Sq9/pa@127.0.0.1",
        "kafka://u:Sq9/pa@127.0.0.1:1",
        "aws://us-east-1?endpoint_url=http://u:Sq9/pa@127.0.0.1:1&oops",
        "pubsub://p?endpoint=http://u:Sq9/pa@127.0.0.1:1&oops",
    ] {
        for command in [
            vec!["send", "x:queue/q", "hi", "--url", url],
            vec!["tail", "x:queue/q", "--url", url, "--idle", "1s"],
            vec![
                "request",
                "x:queue/q",
                "hi",
                "--reply-from",
                "x:queue/r",
                "--timeout",
                "1s",
                "--url",
                url,
            ],
        ] {
            let output = run(&command, b"");
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert_ne!(output.status.code(), Some(0), "{command:?}: {printed}");
            assert!(
                !printed.contains("Sq9/pa"),
                "{command:?} printed the password: {printed}"
            );
        }
    }
}

#[test]
fn test_runs_the_documented_cases_and_fails_on_a_mismatch() {
    let routes = fixture("docs/examples/shaping.yaml");
    let output = run(
        &[
            "test",
            &routes,
            &fixture("docs/examples/shaping-cases.yaml"),
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("4 cases, 0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        "- name: expects the wrong key\n  route: events\n  message: {body: '{\"id\": 1, \"amount\": 1}', origin: {endpoint: 'rabbit:queue/events', routing_key: order.x}}\n  expect: {sinks: [{endpoint: 'kafka:orders', key: other}]}\n",
    )
    .unwrap();
    let output = run(&["test", &routes, wrong.to_str().unwrap()], b"");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL expects the wrong key: kafka:orders: key is Some(\"order.x\")"),
        "{stdout}"
    );
}

#[test]
fn explain_shows_what_each_sink_receives_and_refuses_unknown_origin_fields() {
    let routes = fixture("docs/examples/shaping.yaml");
    let message = r#"{"body": "{\"id\": 7, \"amount\": 3}", "headers": [{"name": "X-Tenant", "text": "acme"}], "origin": {"endpoint": "rabbit:queue/events", "routing_key": "order.paid"}}"#;
    let output = run(
        &["explain", &routes, "--route", "events", "-"],
        message.as_bytes(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("route `events`: 1 of 2 sinks receive the message"),
        "{stdout}"
    );
    assert!(stdout.contains("kafka:orders -> kafka:orders"), "{stdout}");
    assert!(stdout.contains("key: order.paid"), "{stdout}");
    assert!(stdout.contains(r#"{"id":7,"amount":3}"#), "{stdout}");

    let output = run(
        &["explain", &routes, "--route", "events", "--json", "-"],
        message.as_bytes(),
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["verdict"]["sinks"][1]["message"]["key"], "order.paid");
    assert_eq!(json["dead_letter"], "kafka:events-dead");

    let forged =
        r#"{"body": "{}", "origin": {"endpoint": "rabbit:queue/events", "partition_of_doom": 1}}"#;
    let output = run(
        &["explain", &routes, "--route", "events", "-"],
        forged.as_bytes(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("origin field `partition_of_doom` is not one the route's source sets")
    );
}
