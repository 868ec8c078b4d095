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
//!
//! Identities come from messages, so their length is the sender's choice: stores keep a
//! 128-bit digest of each (SHA-256, truncated), never the identity itself, so an entry
//! costs the same whatever the message carried and the memory store's `capacity` bounds
//! its bytes (about 100 bytes an entry).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};

use crate::expr::{Scope, Template};

/// What a route deduplicates by.
#[derive(Debug, Clone)]
pub enum IdentityOf {
    /// The message id.
    MessageId,
    /// A template's rendering (`dedup.key`).
    Template(Template),
    /// The correlation id: a reply route's token, read before it is restored.
    CorrelationId,
}

/// The fixed-size digest a store keeps of an identity.
pub type Digest = [u8; 16];

/// The digest of `identity`.
pub fn digest(identity: &str) -> Digest {
    let full = Sha256::digest(identity.as_bytes());
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

/// Where identities are remembered.
#[async_trait]
pub trait DedupStore: Send + Sync {
    /// Whether `identity` was remembered within the window.
    async fn seen(&self, identity: &str) -> Result<bool, String>;
    /// Remembers `identity` for the window.
    async fn remember(&self, identity: &str) -> Result<(), String>;
    /// Remembers `identity` unless it is remembered already, in one step (two copies
    /// processed at once cannot both claim it); true when this call remembered it.
    async fn claim(&self, identity: &str) -> Result<bool, String>;
    /// Forgets `identity`.
    async fn forget(&self, identity: &str) -> Result<(), String>;
}

/// A route's deduplication step.
pub struct Dedup {
    identity: IdentityOf,
    store: Box<dyn DedupStore>,
    /// Rate limit of the warning about an unreachable store.
    last_warning: Mutex<Option<Instant>>,
}

impl Dedup {
    pub fn new(identity: IdentityOf, store: Box<dyn DedupStore>) -> Dedup {
        Dedup {
            identity,
            store,
            last_warning: Mutex::new(None),
        }
    }

    /// Whether the identity is the correlation id (read before a reply is restored).
    pub fn by_correlation_id(&self) -> bool {
        matches!(self.identity, IdentityOf::CorrelationId)
    }

    /// The identity of the message of `scope`; `None` (not deduplicated) when it has none.
    pub fn identity_in(&self, scope: &Scope<'_>) -> Option<String> {
        let message = scope.message();
        let identity = match &self.identity {
            IdentityOf::MessageId => message.message_id.clone()?,
            IdentityOf::Template(template) => template.render_in(scope).ok()?,
            IdentityOf::CorrelationId => message.correlation_id.clone()?,
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

    /// Claims the identity for this delivery (see [`DedupStore::claim`]); true when it was
    /// not claimed before, or when the store cannot answer.
    pub async fn claim(&self, route: &str, identity: &str) -> bool {
        self.store.claim(identity).await.unwrap_or_else(|error| {
            self.warn(route, &error);
            true
        })
    }

    /// Gives a claim back, for a delivery handed back to its source.
    pub async fn forget(&self, route: &str, identity: &str) {
        if let Err(error) = self.store.forget(identity).await {
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
    until: HashMap<Digest, Instant>,
    /// Identities in the order they were remembered, with their expiry, for forgetting.
    order: VecDeque<(Instant, Digest)>,
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
    /// Remembers `digest` until `until`, forgetting what expired or is over `capacity`.
    fn insert(&mut self, digest: Digest, now: Instant, until: Instant, capacity: usize) {
        self.until.insert(digest, until);
        self.order.push_back((until, digest));
        self.forget_expired(now, capacity);
    }

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
            .get(&digest(identity))
            .is_some_and(|until| *until > Instant::now()))
    }

    async fn remember(&self, identity: &str) -> Result<(), String> {
        let now = Instant::now();
        let mut remembered = self.remembered.lock().expect("dedup store lock");
        remembered.insert(digest(identity), now, now + self.window, self.capacity);
        Ok(())
    }

    async fn claim(&self, identity: &str) -> Result<bool, String> {
        let now = Instant::now();
        let digest = digest(identity);
        let mut remembered = self.remembered.lock().expect("dedup store lock");
        if remembered
            .until
            .get(&digest)
            .is_some_and(|until| *until > now)
        {
            return Ok(false);
        }
        remembered.insert(digest, now, now + self.window, self.capacity);
        Ok(true)
    }

    async fn forget(&self, identity: &str) -> Result<(), String> {
        let mut remembered = self.remembered.lock().expect("dedup store lock");
        // Its entry in `order` no longer matches and is dropped when it comes up.
        remembered.until.remove(&digest(identity));
        Ok(())
    }
}

/// Identities in Redis, as keys `bridge:dedup:ROUTE:DIGEST` (the identity's digest in hex)
/// that expire after the window.
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

    fn window_millis(&self) -> u64 {
        u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn key(&self, identity: &str) -> String {
        let mut key = self.prefix.clone();
        for byte in digest(identity) {
            key.push_str(&format!("{byte:02x}"));
        }
        key
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
            .arg(self.key(identity))
            .query_async::<bool>(&mut connection)
            .await
            .map_err(|e| format!("Redis EXISTS: {e}"))
    }

    async fn remember(&self, identity: &str) -> Result<(), String> {
        let mut connection = self.connection().await?;
        redis::cmd("SET")
            .arg(self.key(identity))
            .arg(1)
            .arg("PX")
            .arg(self.window_millis())
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| format!("Redis SET: {e}"))
    }

    async fn claim(&self, identity: &str) -> Result<bool, String> {
        let mut connection = self.connection().await?;
        redis::cmd("SET")
            .arg(self.key(identity))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(self.window_millis())
            .query_async::<Option<String>>(&mut connection)
            .await
            .map(|set| set.is_some())
            .map_err(|e| format!("Redis SET NX: {e}"))
    }

    async fn forget(&self, identity: &str) -> Result<(), String> {
        let mut connection = self.connection().await?;
        redis::cmd("DEL")
            .arg(self.key(identity))
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| format!("Redis DEL: {e}"))
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
    async fn a_claim_is_taken_once_until_given_back() {
        let store = MemoryStore::new(Duration::from_secs(60), 10);
        assert!(store.claim("t").await.unwrap());
        assert!(!store.claim("t").await.unwrap());
        store.forget("t").await.unwrap();
        assert!(store.claim("t").await.unwrap());
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
        use crate::message::Message;
        let identity = |dedup: &Dedup, message: &Message| dedup.identity_in(&Scope::new(message));
        let dedup = Dedup::new(
            IdentityOf::MessageId,
            Box::new(MemoryStore::new(Duration::from_secs(1), 10)),
        );
        let mut message = Message::new("x");
        assert_eq!(identity(&dedup, &message), None);
        message.message_id = Some("m-1".into());
        assert_eq!(identity(&dedup, &message).as_deref(), Some("m-1"));
        let by_header = Dedup::new(
            IdentityOf::Template(Template::compile("{{ headers.order }}").unwrap()),
            Box::new(MemoryStore::new(Duration::from_secs(1), 10)),
        );
        assert_eq!(identity(&by_header, &message), None, "renders empty");
        message.headers.push("order", "o-7");
        assert_eq!(identity(&by_header, &message).as_deref(), Some("o-7"));
    }

    #[tokio::test]
    async fn an_entry_costs_the_same_whatever_the_identity_holds() {
        let store = MemoryStore::new(Duration::from_secs(60), 10);
        let huge = "x".repeat(1 << 20);
        store.remember(&huge).await.unwrap();
        assert!(store.seen(&huge).await.unwrap());
        assert!(!store.seen(&huge[1..]).await.unwrap());
        let remembered = store.remembered.lock().unwrap();
        assert_eq!(remembered.order.len(), 1);
        assert_eq!(std::mem::size_of_val(&remembered.order[0].1), 16);
    }
}
