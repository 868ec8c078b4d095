//! Shared helpers for integration tests: a router on in-process memory queues.

#![allow(dead_code)]

pub mod brokers;
pub mod certs;
pub mod checker;
pub mod fault_proxy;
pub mod flow;
pub mod http;
pub mod ports;
pub mod process;
pub mod systems;
pub mod tally;

use std::sync::Arc;
use std::time::Duration;

use bridge::adapter::ConnectContext;
use bridge::adapter::memory::{MemoryBroker, MemoryQueue};
use bridge::config;
use bridge::router::{Router, RunReport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running router over memory queues.
pub struct Harness {
    pub broker: MemoryBroker,
    pub shutdown: CancellationToken,
    run: JoinHandle<RunReport>,
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Validates `yaml` and starts its routes on a fresh memory broker.
pub async fn start(yaml: &str) -> Harness {
    let plan = config::load_str(yaml, "test.yaml", &no_env).unwrap_or_else(|e| panic!("{e}"));
    let broker = MemoryBroker::new();
    let context = ConnectContext {
        memory: broker.clone(),
    };
    let shutdown = CancellationToken::new();
    let router = Router::connect(&plan, &context, &shutdown)
        .await
        .expect("router connects");
    let run = tokio::spawn(router.run(shutdown.clone()));
    Harness {
        broker,
        shutdown,
        run,
    }
}

impl Harness {
    pub fn queue(&self, name: &str) -> Arc<MemoryQueue> {
        self.broker.queue(name)
    }

    /// Requests shutdown (as SIGTERM does) and waits for the drain.
    pub async fn stop(self) -> RunReport {
        self.shutdown.cancel();
        self.finished().await
    }

    /// Waits for the router to end by itself.
    pub async fn finished(self) -> RunReport {
        tokio::time::timeout(PATIENCE * 3, self.run)
            .await
            .expect("router ends in time")
            .expect("router task does not panic")
    }
}

/// Waits until `queue` satisfies `condition`, failing the test with `what` otherwise.
pub async fn wait_for(queue: &MemoryQueue, what: &str, condition: impl Fn(&MemoryQueue) -> bool) {
    assert!(
        queue.wait_until(PATIENCE, condition).await,
        "timed out waiting for: {what}"
    );
}

/// A connector for a connection written as JSON (with its `type`), as a routes file would.
pub async fn connector(connection: &serde_json::Value) -> Arc<dyn bridge::adapter::Connector> {
    let connection = bridge::adapter::connection_from_json(connection).unwrap();
    connection
        .connect(&ConnectContext::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} must be running (scripts/brokers.sh up): {e}",
                connection.describe()
            )
        })
}

/// The options of a source on `path` of `connection` (JSON with its `type`), checked by
/// its adapter as a routes file's `from.options` are.
pub fn source_options(
    connection: &serde_json::Value,
    path: &str,
    options: &serde_json::Value,
) -> bridge::adapter::SourceOptions {
    bridge::adapter::connection_from_json(connection)
        .unwrap()
        .source_options(path, options)
        .unwrap()
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Sets bridge's logs to the test output (level from `BRIDGE_LOG`, default `warn`).
pub fn init_logs() {
    let filter = std::env::var("BRIDGE_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}
