//! `scripts/brokers.sh` from tests: stopping and starting a local broker mid-test.

/// Runs `scripts/brokers.sh COMMAND BROKER` (`pause` or `resume`; `rabbitmq`, `kafka`,
/// `aws` or `pubsub`) and fails the test when it fails.
pub fn brokers(command: &str, broker: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brokers.sh");
    let status = std::process::Command::new(script)
        .args([command, broker])
        .status()
        .unwrap();
    assert!(status.success(), "brokers.sh {command} {broker} failed");
}
