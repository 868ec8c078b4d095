//! Moving test traffic through real brokers: publishing with a window of confirmations,
//! collecting everything a source delivers into a [`Tally`], and waiting for a condition.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::adapter::{Connector, Source};
use bridge::message::Message;

use super::tally::Tally;

/// Sends every message to `endpoint` (`CONNECTION:PATH` on `connector`), with at most
/// `window` confirmations outstanding, and returns once all are confirmed.
pub async fn publish(
    connector: &Arc<dyn Connector>,
    endpoint: &str,
    messages: impl IntoIterator<Item = Message>,
    window: usize,
) {
    let sink = connector
        .open_sink(&endpoint.parse().unwrap())
        .await
        .unwrap();
    let mut pending = VecDeque::new();
    for message in messages {
        pending.push_back(sink.send(&message).await.unwrap());
        if pending.len() > window {
            pending.pop_front().unwrap().await.unwrap();
        }
    }
    for confirmation in pending {
        confirmation.await.unwrap();
    }
}

/// Reads `source` until the task is aborted, recording and acknowledging every message.
pub fn collect(
    mut source: Box<dyn Source>,
    tally: Arc<Mutex<Tally>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(Some(delivery)) = source.recv().await {
            tally.lock().unwrap().record(&delivery.message);
            delivery.ack.ack();
        }
    })
}

/// Waits until `condition` holds; false when `timeout` passed first.
pub async fn waited(timeout: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

/// Waits until `condition` holds, failing the test after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, condition: impl Fn() -> bool) {
    assert!(
        waited(timeout, condition).await,
        "timed out waiting for {what}"
    );
}
