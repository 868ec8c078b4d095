//! The Redis deduplication store with credentials and over TLS: an ACL user and password on
//! the project's own Redis (`scripts/brokers.sh`, port 6390), and `rediss://` to a
//! redis-server of the test's own that speaks only TLS, its CA given to bridge the way a
//! user gives a private CA (`SSL_CERT_FILE`). A store is shown to be used when a second
//! `bridge run` drops the messages the first one delivered.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::process::bridge;
use support::unique;

/// The project's Redis and its ACL user (scripts/brokers.sh).
const REDIS: &str = "127.0.0.1:6390";
const USER: &str = "bridge";
const PASSWORD: &str = "bridge-pw";

/// Runs stdin -> stdout with `dedup.store: STORE`, feeding JSON envelopes with the message
/// ids `ids`; returns the ids that came out.
fn deliver(dir: &Path, store: &str, env: &[(&str, &str)], ids: &[String]) -> Vec<String> {
    let routes = dir.join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "connections:\n  io: {{type: stdio}}\nroutes:\n  - name: once\n    from: {{endpoint: io:stdin, options: {{format: json}}}}\n    to: io:stdout\n    dedup: {{store: '{store}', window: 5m}}\n"
        ),
    )
    .unwrap();
    let input: String = ids
        .iter()
        .map(|id| format!("{{\"body\":\"b\",\"message_id\":\"{id}\"}}\n"))
        .collect();
    let mut child = bridge()
        .args(["run", routes.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains(PASSWORD),
        "the password is never shown: {stderr}"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let envelope: serde_json::Value = serde_json::from_str(line).unwrap();
            envelope["message_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Checks that `store` deduplicates across two runs.
fn deduplicates_across_runs(store: &str, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let run = unique("dedup");
    let ids: Vec<String> = ["a", "b", "a"]
        .iter()
        .map(|n| format!("{run}-{n}"))
        .collect();
    let first = deliver(dir.path(), store, env, &ids);
    assert_eq!(
        first,
        [ids[0].clone(), ids[1].clone()],
        "a repeat is dropped"
    );
    let second = deliver(dir.path(), store, env, &ids[..2]);
    assert!(second.is_empty(), "the store remembers: {second:?}");
}

#[test]
fn an_acl_user_and_password_reach_the_store() {
    deduplicates_across_runs(&format!("redis://{USER}:{PASSWORD}@{REDIS}/0"), &[]);
}

/// A redis-server of the test's own, listening only with TLS, with the ACL user.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(dir: &Path) -> TlsRedis {
        support::certs::make_certificates(dir);
        let port = support::ports::free_port();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", dir.to_str().unwrap()])
            .args(["--tls-cert-file", &path("server.pem")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.pem")])
            .args(["--tls-auth-clients", "no"])
            .args([
                "--user",
                USER,
                "on",
                &format!(">{PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) runs");
        support::ports::wait_until_listening(port, "redis-server with TLS");
        TlsRedis { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rediss_reaches_a_store_that_speaks_only_tls() {
    let dir = tempfile::tempdir().unwrap();
    let redis = TlsRedis::start(dir.path());
    let ca = dir.path().join("ca.pem");
    let store = format!("rediss://{USER}:{PASSWORD}@localhost:{}/0", redis.port);
    deduplicates_across_runs(&store, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
}
