//! Deduplication of a route's messages (`dedup:` in the routes file).
//!
//! A message's identity (its message id, or a template) is looked up before it is sent; an
//! identity already remembered is acknowledged without forwarding. An identity is
//! remembered for `window` once its message is settled with an acknowledgement (delivered
//! to every required sink, or dead-lettered), never before: a crash before that point
//! leads to a redelivery that is forwarded again, so deduplication never loses a message.
//!
//! What it cannot remove: a message whose send was still unconfirmed when bridge crashed
//! (the broker may have stored it) is sent again after the redelivery, unless the sink
//! deduplicates by the identity, which the router attaches to the message for that (SQS and
//! SNS FIFO `MessageDeduplicationId`); and two copies of a
//! message processed at the same moment by two replicas both pass the lookup. The memory
//! store is this process's only and empty after a restart; the Redis store is shared by
//! replicas and survives restarts. When the store cannot be reached the message is
//! forwarded (at-least-once wins over deduplication) and a warning is logged.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::expr::Template;
use crate::message::Message;

/// Where identities are remembered.
#[async_trait]
pub trait DedupStore: Send + Sync {
    /// Whether `identity` was remembered within the window.
    async fn seen(&self, identity: &str) -> Result<bool, String>;
    /// Remembers `identity` for the window.
    async fn remember(&self, identity: &str) -> Result<(), String>;
}

/// A route's deduplication step.
pub struct Dedup {
    /// Renders the identity; `None` reads the message id.
    key: Option<Template>,
    store: Box<dyn DedupStore>,
    /// Rate limit of the warning about an unreachable store.
    last_warning: Mutex<Option<Instant>>,
}

impl Dedup {
    pub fn new(key: Option<Template>, store: Box<dyn DedupStore>) -> Dedup {
        Dedup {
            key,
            store,
            last_warning: Mutex::new(None),
        }
    }

    /// The message's identity; `None` (not deduplicated) when it has none.
    pub fn identity(&self, message: &Message) -> Option<String> {
        let identity = match &self.key {
            None => message.message_id.clone()?,
            Some(template) => template.render(message).ok()?,
        };
        (!identity.is_empty()).then_some(identity)
    }

    /// Whether the identity was already delivered; false when the store cannot answer.
    pub async fn seen(&self, route: &str, identity: &str) -> bool {
        self.store.seen(identity).await.unwrap_or_else(|error| {
            self.warn(route, &error);
            false
        })
    }

    pub async fn remember(&self, route: &str, identity: &str) {
        if let Err(error) = self.store.remember(identity).await {
            self.warn(route, &error);
        }
    }

    fn warn(&self, route: &str, error: &str) {
        let mut last = self.last_warning.lock().expect("dedup warning lock");
        if last.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            tracing::warn!(
                route,
                error,
                "deduplication store unavailable; messages are forwarded without it"
            );
            *last = Some(Instant::now());
        }
    }
}

/// Identities in this process's memory: at most `capacity`, the oldest forgotten first.
pub struct MemoryStore {
    window: Duration,
    capacity: usize,
    remembered: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    until: HashMap<String, Instant>,
    /// Identities in the order they were remembered, with their expiry, for forgetting.
    order: VecDeque<(Instant, String)>,
}

impl MemoryStore {
    pub fn new(window: Duration, capacity: usize) -> MemoryStore {
        MemoryStore {
            window,
            capacity: capacity.max(1),
            remembered: Mutex::new(Remembered::default()),
        }
    }
}

impl Remembered {
    fn forget_expired(&mut self, now: Instant, capacity: usize) {
        while let Some((until, identity)) = self.order.front() {
            if *until > now && self.order.len() <= capacity {
                break;
            }
            // A later remember of the same identity left a newer expiry: keep that one.
            if self.until.get(identity) == Some(until) {
                self.until.remove(identity);
            }
            self.order.pop_front();
        }
    }
}

#[async_trait]
impl DedupStore for MemoryStore {
    async fn seen(&self, identity: &str) -> Result<bool, String> {
        let remembered = self.remembered.lock().expect("dedup store lock");
        Ok(remembered
            .until
            .get(identity)
            .is_some_and(|until| *until > Instant::now()))
    }

    async fn remember(&self, identity: &str) -> Result<(), String> {
        let now = Instant::now();
        let until = now + self.window;
        let mut remembered = self.remembered.lock().expect("dedup store lock");
        remembered.until.insert(identity.to_owned(), until);
        remembered.order.push_back((until, identity.to_owned()));
        remembered.forget_expired(now, self.capacity);
        Ok(())
    }
}

/// Identities in Redis, as keys `bridge:dedup:ROUTE:IDENTITY` that expire after the window.
#[cfg(feature = "redis")]
pub struct RedisStore {
    client: redis::Client,
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    prefix: String,
    window: Duration,
}

#[cfg(feature = "redis")]
impl RedisStore {
    /// A store at `url` (`redis://HOST:PORT/DB`); connects on first use, so a Redis that
    /// is down at start-up delays nothing.
    pub fn new(url: &str, route: &str, window: Duration) -> Result<RedisStore, String> {
        let client = redis::Client::open(url)
            .map_err(|e| crate::secret::hide_url_secrets(&format!("Redis URL: {e}"), url))?;
        Ok(RedisStore {
            client,
            connection: tokio::sync::OnceCell::new(),
            prefix: format!("bridge:dedup:{route}:"),
            window,
        })
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        self.connection
            .get_or_try_init(|| redis::aio::ConnectionManager::new(self.client.clone()))
            .await
            .cloned()
            .map_err(|e| format!("Redis: {e}"))
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl DedupStore for RedisStore {
    async fn seen(&self, identity: &str) -> Result<bool, String> {
        let mut connection = self.connection().await?;
        redis::cmd("EXISTS")
            .arg(format!("{}{identity}", self.prefix))
            .query_async::<bool>(&mut connection)
            .await
            .map_err(|e| format!("Redis EXISTS: {e}"))
    }

    async fn remember(&self, identity: &str) -> Result<(), String> {
        let mut connection = self.connection().await?;
        let millis = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        redis::cmd("SET")
            .arg(format!("{}{identity}", self.prefix))
            .arg(1)
            .arg("PX")
            .arg(millis.max(1))
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| format!("Redis SET: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_within_the_window_and_forgets_after() {
        let store = MemoryStore::new(Duration::from_millis(50), 100);
        assert!(!store.seen("a").await.unwrap());
        store.remember("a").await.unwrap();
        assert!(store.seen("a").await.unwrap());
        assert!(!store.seen("b").await.unwrap());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!store.seen("a").await.unwrap(), "the window has passed");
    }

    #[tokio::test]
    async fn forgets_the_oldest_beyond_capacity() {
        let store = MemoryStore::new(Duration::from_secs(60), 2);
        for identity in ["a", "b", "c"] {
            store.remember(identity).await.unwrap();
        }
        assert!(!store.seen("a").await.unwrap());
        assert!(store.seen("b").await.unwrap() && store.seen("c").await.unwrap());
    }

    #[tokio::test]
    async fn a_message_without_identity_is_not_deduplicated() {
        let dedup = Dedup::new(None, Box::new(MemoryStore::new(Duration::from_secs(1), 10)));
        let mut message = Message::new("x");
        assert_eq!(dedup.identity(&message), None);
        message.message_id = Some("m-1".into());
        assert_eq!(dedup.identity(&message).as_deref(), Some("m-1"));
        let by_header = Dedup::new(
            Some(Template::compile("{{ headers.order }}").unwrap()),
            Box::new(MemoryStore::new(Duration::from_secs(1), 10)),
        );
        assert_eq!(by_header.identity(&message), None, "renders empty");
        message.headers.push("order", "o-7");
        assert_eq!(by_header.identity(&message).as_deref(), Some("o-7"));
    }
}
