//! The sinks of a running router, opened once per endpoint and shared by every route.
//!
//! Constant endpoints are opened before the routes start and kept for the life of the
//! process. Endpoints rendered from a template or taken from a requester's reply-to are
//! chosen by messages, so there may be any number of them: at most
//! `settings.limits.max_open_sinks` stay open, and opening one more closes the least
//! recently used (after flushing what it was given). The `bridge_open_sinks` gauge shows
//! how many are open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hashlink::LruCache;

use crate::adapter::{AdapterError, Connector, SendError, Sink};
use crate::address::Endpoint;

/// Open sinks by endpoint, and the connectors that open new ones.
pub struct SinkCache {
    connectors: HashMap<String, Arc<dyn Connector>>,
    /// Sinks of constant endpoints: never closed while the router runs.
    pinned: Mutex<HashMap<Endpoint, Arc<dyn Sink>>>,
    /// Sinks of endpoints chosen by messages, the least recently used first.
    rendered: Mutex<LruCache<Endpoint, Arc<dyn Sink>>>,
    gauge: metrics::Gauge,
}

impl SinkCache {
    pub fn new(connectors: HashMap<String, Arc<dyn Connector>>, max_open: usize) -> Self {
        SinkCache {
            connectors,
            pinned: Mutex::new(HashMap::new()),
            rendered: Mutex::new(LruCache::new(max_open.max(1))),
            gauge: crate::telemetry::metrics::open_sinks(),
        }
    }

    fn connector(&self, endpoint: &Endpoint) -> Result<&Arc<dyn Connector>, AdapterError> {
        self.connectors.get(&endpoint.connection).ok_or_else(|| {
            AdapterError::Invalid(format!("no connection `{}` is open", endpoint.connection))
        })
    }

    /// Opens the sink of a constant endpoint and keeps it.
    pub async fn pin(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        if let Some(sink) = self.pinned.lock().expect("sink cache lock").get(endpoint) {
            return Ok(sink.clone());
        }
        let sink = self.connector(endpoint)?.open_sink(endpoint).await?;
        let mut pinned = self.pinned.lock().expect("sink cache lock");
        Ok(pinned.entry(endpoint.clone()).or_insert(sink).clone())
    }

    /// The sink for `endpoint`, opening it when needed (closing the least recently used
    /// one when `max_open_sinks` are open).
    pub async fn get(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        if let Some(sink) = self.pinned.lock().expect("sink cache lock").get(endpoint) {
            return Ok(sink.clone());
        }
        if let Some(sink) = self.rendered.lock().expect("sink cache lock").get(endpoint) {
            return Ok(sink.clone());
        }
        let sink = self.connector(endpoint)?.open_sink(endpoint).await?;
        let (sink, closed) = {
            let mut rendered = self.rendered.lock().expect("sink cache lock");
            if let Some(open) = rendered.get(endpoint) {
                // Opened meanwhile by another message: use that one.
                return Ok(open.clone());
            }
            let closed = if rendered.len() >= rendered.capacity() {
                rendered.remove_lru()
            } else {
                None
            };
            rendered.insert(endpoint.clone(), sink.clone());
            self.gauge.set(rendered.len() as f64);
            (sink, closed)
        };
        if let Some((endpoint, closed)) = closed {
            tracing::debug!(%endpoint, "closing the least recently used sink");
            // Sends still holding it finish first; it closes when the last one lets go.
            tokio::spawn(async move { closed.flush().await });
        }
        Ok(sink)
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

    /// Whether `address` is a plain reply address of `connection`'s system.
    pub fn is_plain_reply_address(&self, connection: &str, address: &str) -> bool {
        self.connectors
            .get(connection)
            .is_some_and(|connector| connector.is_plain_reply_address(address))
    }

    /// How many sinks of rendered endpoints are open.
    #[cfg(test)]
    pub fn rendered_open(&self) -> usize {
        self.rendered.lock().expect("sink cache lock").len()
    }

    /// Waits until every open sink has settled what it was given.
    pub async fn flush_all(&self) {
        let mut sinks: Vec<_> = self
            .pinned
            .lock()
            .expect("sink cache lock")
            .values()
            .cloned()
            .collect();
        sinks.extend(
            self.rendered
                .lock()
                .expect("sink cache lock")
                .iter()
                .map(|(_, sink)| sink.clone()),
        );
        futures::future::join_all(sinks.iter().map(|sink| sink.flush())).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::adapter::{Confirmation, Receipt, Source, SourceSettings, TailSettings};
    use crate::message::Message;

    /// Opens sinks that count their flushes.
    #[derive(Default)]
    struct Counting {
        opened: AtomicUsize,
        flushed: Arc<AtomicUsize>,
    }

    struct CountingSink(Arc<AtomicUsize>);

    #[async_trait]
    impl Sink for CountingSink {
        async fn send(&self, _: &Message) -> Result<Confirmation, SendError> {
            Ok(Box::pin(async { Ok(Receipt::default()) }))
        }
        async fn flush(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl Connector for Counting {
        async fn open_source(
            &self,
            _: &Endpoint,
            _: &SourceSettings,
        ) -> Result<Box<dyn Source>, AdapterError> {
            Err(AdapterError::Invalid("no sources".into()))
        }
        async fn open_sink(&self, _: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
            self.opened.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(CountingSink(self.flushed.clone())))
        }
        async fn open_tail(
            &self,
            _: &Endpoint,
            _: &TailSettings,
        ) -> Result<Box<dyn Source>, AdapterError> {
            Err(AdapterError::Invalid("no tail".into()))
        }
    }

    fn endpoint(path: &str) -> Endpoint {
        Endpoint {
            connection: "c".into(),
            path: path.into(),
        }
    }

    #[tokio::test]
    async fn endpoints_chosen_by_messages_stay_bounded_and_the_oldest_is_closed() {
        let connector = Arc::new(Counting::default());
        let flushed = connector.flushed.clone();
        let cache = SinkCache::new(
            HashMap::from([("c".into(), connector.clone() as Arc<dyn Connector>)]),
            3,
        );
        cache.pin(&endpoint("constant")).await.unwrap();
        for i in 0..3 {
            cache.get(&endpoint(&format!("r{i}"))).await.unwrap();
        }
        // r0 used again: r1 is now the least recently used.
        cache.get(&endpoint("r0")).await.unwrap();
        assert_eq!(connector.opened.load(Ordering::SeqCst), 4);
        for i in 3..1_000 {
            cache.get(&endpoint(&format!("r{i}"))).await.unwrap();
        }
        assert_eq!(cache.rendered_open(), 3);
        // The constant endpoint is never closed and never reopened.
        cache.get(&endpoint("constant")).await.unwrap();
        assert_eq!(connector.opened.load(Ordering::SeqCst), 1 + 1_000);
        tokio::task::yield_now().await;
        while flushed.load(Ordering::SeqCst) < 997 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            flushed.load(Ordering::SeqCst),
            997,
            "each closed sink flushed once"
        );
    }
}
