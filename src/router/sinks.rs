//! The sinks of a running router, opened once per endpoint and shared by every route.
//!
//! Constant endpoints are opened before the routes start; endpoints rendered from a
//! template are opened on first use and kept for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::adapter::{AdapterError, Connector, SendError, Sink};
use crate::address::Endpoint;

/// Open sinks by endpoint, and the connectors that open new ones.
pub struct SinkCache {
    connectors: HashMap<String, Arc<dyn Connector>>,
    open: Mutex<HashMap<Endpoint, Arc<dyn Sink>>>,
}

impl SinkCache {
    pub fn new(connectors: HashMap<String, Arc<dyn Connector>>) -> Self {
        SinkCache {
            connectors,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The sink for `endpoint`, opening it when needed.
    pub async fn get(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        if let Some(sink) = self.open.lock().expect("sink cache lock").get(endpoint) {
            return Ok(sink.clone());
        }
        let connector = self.connectors.get(&endpoint.connection).ok_or_else(|| {
            AdapterError::Invalid(format!("no connection `{}` is open", endpoint.connection))
        })?;
        let sink = connector.open_sink(endpoint).await?;
        let mut open = self.open.lock().expect("sink cache lock");
        Ok(open.entry(endpoint.clone()).or_insert(sink).clone())
    }

    /// Like [`get`](Self::get), with the error classified for a message being sent.
    pub async fn get_for_send(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, SendError> {
        self.get(endpoint).await.map_err(|error| match error {
            AdapterError::Unavailable(message) => {
                SendError::unavailable(format!("cannot open {endpoint}: {message}"))
            }
            AdapterError::Invalid(message) => {
                SendError::permanent(format!("cannot open {endpoint}: {message}"))
            }
        })
    }

    /// The path on `connection` that reaches a requester's reply address.
    pub fn reply_path(&self, connection: &str, address: &str) -> Result<String, String> {
        self.connectors
            .get(connection)
            .ok_or_else(|| format!("no connection `{connection}` is open"))?
            .reply_path(address)
    }

    /// Waits until every open sink has settled what it was given.
    pub async fn flush_all(&self) {
        let sinks: Vec<_> = self
            .open
            .lock()
            .expect("sink cache lock")
            .values()
            .cloned()
            .collect();
        futures::future::join_all(sinks.iter().map(|sink| sink.flush())).await;
    }
}
