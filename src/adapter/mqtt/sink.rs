//! MQTT sinks: QoS 1 publishes, each confirmed by the broker's PUBACK.
//!
//! The sinks of one connection share one session ([`Publisher`]), a clean session with a
//! client id of its own. rumqttc gives no handle per publish: it reports the packet id a
//! publish went out with (`Sent`), in the order the publishes were queued, and the PUBACK
//! of a packet id. The publisher matches the two in order: publishes waiting for their
//! packet id in a queue, those sent by packet id. A publish resent after a reconnect keeps
//! its packet id and is not matched again.
//!
//! When the connection breaks, every unconfirmed publish fails as `unavailable` (the
//! router sends it again: a duplicate where the broker had it already) and a new session
//! starts; the broker's own queue of the old clean session is gone with it, so nothing is
//! left half-known. At most `window` publishes are unconfirmed (the broker's MQTT 5
//! receive maximum when lower), half of the packet ids rumqttc cycles through, so a packet
//! id is never needed again while still unconfirmed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::sync::{Notify, mpsc, oneshot};

use super::client::{self, Event, SessionSpec};
use super::config::{Config, Protocol};
use super::mapping;
use crate::adapter::{AdapterError, Confirmation, Connection, Receipt, SendError, Sink};
use crate::message::Message;

/// Most publishes unconfirmed at once, per connection.
pub const WINDOW: usize = 256;
/// Most publishes waiting for the session, per connection.
const QUEUE: usize = 1024;

type Reply = oneshot::Sender<Result<(), SendError>>;

struct Job {
    topic: String,
    payload: Bytes,
    properties: Option<PublishProperties>,
    reply: Reply,
}

/// The session every sink of one connection publishes through.
pub struct Publisher {
    jobs: mpsc::Sender<Job>,
    unsettled: Arc<Unsettled>,
    config: Config,
}

/// Publishes queued and not yet answered, for `flush`.
#[derive(Default)]
struct Unsettled {
    count: AtomicUsize,
    settled: Notify,
}

impl Unsettled {
    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }
}

impl Publisher {
    /// Starts the session; returns once the broker accepted it.
    pub async fn start(config: Config) -> Result<Arc<Publisher>, AdapterError> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let client_id = format!("{}-sink-{:08x}", config.client_id_prefix(), rand_suffix());
        let (ready_tx, ready) = oneshot::channel();
        tokio::spawn(drive(config.clone(), client_id, queue, ready_tx));
        let describe = config.describe();
        match tokio::time::timeout(Duration::from_secs(30), ready).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(error),
            Ok(Err(_)) | Err(_) => {
                return Err(AdapterError::Unavailable(format!(
                    "{describe}: no answer within 30 s"
                )));
            }
        }
        Ok(Arc::new(Publisher {
            jobs,
            unsettled: Arc::default(),
            config,
        }))
    }
}

/// A random part for client ids of clean sessions (no two processes share one).
pub fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() as u32
}

/// One sink: a topic of the connection's publisher.
pub struct TopicSink {
    pub publisher: Arc<Publisher>,
    pub topic: String,
}

#[async_trait]
impl Sink for TopicSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let config = &self.publisher.config;
        let (payload, properties) = match config.protocol {
            Protocol::V5 => {
                let (payload, properties) =
                    crate::adapter::map_large(message.headers.len(), || {
                        mapping::encode_v5(message)
                    });
                (payload, Some(properties))
            }
            Protocol::V311 => {
                let payload = mapping::encode_v311(message, config.pack).map_err(|reason| {
                    SendError::permanent(format!("MQTT `{}`: {reason}", self.topic))
                })?;
                (payload, None)
            }
        };
        let (reply, confirmed) = oneshot::channel();
        let job = Job {
            topic: self.topic.clone(),
            payload,
            properties,
            reply,
        };
        let unsettled = self.publisher.unsettled.clone();
        unsettled.count.fetch_add(1, Ordering::AcqRel);
        if self.publisher.jobs.send(job).await.is_err() {
            unsettled.done();
            return Err(SendError::transient("the MQTT publisher stopped"));
        }
        Ok(Box::pin(async move {
            let outcome = confirmed
                .await
                .unwrap_or_else(|_| Err(SendError::transient("the MQTT publisher stopped")));
            unsettled.done();
            outcome.map(|()| Receipt::default())
        }))
    }

    async fn flush(&self) {
        let unsettled = &self.publisher.unsettled;
        loop {
            let settled = unsettled.settled.notified();
            if unsettled.count.load(Ordering::Acquire) == 0 {
                return;
            }
            settled.await;
        }
    }
}

/// Publishes of one session, matched to their packet ids.
#[derive(Default)]
struct Unconfirmed {
    /// Queued to the client, packet id not yet known, in order.
    queued: VecDeque<Reply>,
    /// Sent, by packet id.
    sent: HashMap<u16, Reply>,
    /// Waiting for packet id N to be confirmed before it goes out with that id.
    collided: Option<(u16, Reply)>,
}

impl Unconfirmed {
    fn len(&self) -> usize {
        self.queued.len() + self.sent.len() + usize::from(self.collided.is_some())
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Sent(pkid) if !self.sent.contains_key(&pkid) => {
                if let Some(reply) = self.queued.pop_front() {
                    self.sent.insert(pkid, reply);
                }
            }
            Event::AwaitAck(pkid) => {
                if let Some(reply) = self.queued.pop_front() {
                    self.collided = Some((pkid, reply));
                }
            }
            Event::PubAck(pkid) => {
                if let Some(reply) = self.sent.remove(&pkid) {
                    let _ = reply.send(Ok(()));
                }
                if self.collided.as_ref().is_some_and(|(id, _)| *id == pkid)
                    && let Some((id, reply)) = self.collided.take()
                {
                    self.sent.insert(id, reply);
                }
            }
            _ => {}
        }
    }

    fn fail_all(&mut self, reason: &str) {
        let replies = self
            .queued
            .drain(..)
            .chain(self.sent.drain().map(|(_, reply)| reply))
            .chain(self.collided.take().map(|(_, reply)| reply));
        for reply in replies {
            let _ = reply.send(Err(SendError::unavailable(reason.to_owned())));
        }
    }
}

/// Runs sessions one after the other until every sink is gone.
async fn drive(
    config: Config,
    client_id: String,
    mut jobs: mpsc::Receiver<Job>,
    ready: oneshot::Sender<Result<(), AdapterError>>,
) {
    let mut ready = Some(ready);
    let spec = SessionSpec {
        client_id,
        clean: true,
        manual_acks: false,
        session_expiry_s: None,
        receive_maximum: None,
        inflight: u16::try_from(WINDOW * 2).unwrap_or(u16::MAX),
    };
    let mut wait = Duration::from_millis(200);
    let mut jobs_done = false;
    while !jobs_done {
        let (client, mut events) = match client::open(&config, &spec) {
            Ok(session) => session,
            Err(error) => {
                // The TLS files could not be read: nothing can be published.
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(error));
                    return;
                }
                tracing::error!(%error, "MQTT publisher cannot start a session");
                while let Some(job) = jobs.recv().await {
                    let _ = job.reply.send(Err(SendError::permanent(error.to_string())));
                }
                return;
            }
        };
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                let event = events.poll().await;
                let stop = event.is_err();
                if events_tx.send(event).is_err() || stop {
                    return;
                }
            }
        });
        let mut unconfirmed = Unconfirmed::default();
        let mut connected = false;
        let mut window = WINDOW;
        let reason = loop {
            let room = connected && !jobs_done && unconfirmed.len() < window;
            tokio::select! {
                event = events_rx.recv() => match event {
                    Some(Ok(Event::Connected { receive_maximum, .. })) => {
                        connected = true;
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                        wait = Duration::from_millis(200);
                        window = receive_maximum.map_or(WINDOW, |max| WINDOW.min(usize::from(max)).max(1));
                    }
                    Some(Ok(event)) => unconfirmed.event(event),
                    Some(Err(error)) => {
                        if let Some(ready) = ready.take() {
                            let describe = format!("{}: {}", config.describe(), error.message);
                            let _ = ready.send(Err(if error.refused {
                                AdapterError::Invalid(describe)
                            } else {
                                AdapterError::Unavailable(describe)
                            }));
                            return;
                        }
                        break error.message;
                    }
                    None => break "the MQTT session stopped".into(),
                },
                job = jobs.recv(), if room => match job {
                    Some(job) => {
                        let properties = job.properties;
                        match client.publish(job.topic, job.payload, config.retain, properties).await {
                            Ok(()) => unconfirmed.queued.push_back(job.reply),
                            Err(error) => {
                                let _ = job.reply.send(Err(SendError::unavailable(format!("MQTT publish: {error}"))));
                            }
                        }
                    }
                    None => jobs_done = true,
                },
            }
            if jobs_done && unconfirmed.len() == 0 {
                client.disconnect().await;
                break String::new();
            }
        };
        if !reason.is_empty() {
            tracing::warn!(error = %reason, retry_in = ?wait, "MQTT publisher lost its connection; unconfirmed publishes are sent again");
        }
        unconfirmed.fail_all(&format!("MQTT: {reason}"));
        if jobs_done {
            let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
            return;
        }
        poller.abort();
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> (Reply, oneshot::Receiver<Result<(), SendError>>) {
        oneshot::channel()
    }

    #[test]
    fn publishes_are_confirmed_by_their_own_packet_ids() {
        let mut unconfirmed = Unconfirmed::default();
        let (a, mut a_done) = reply();
        let (b, mut b_done) = reply();
        unconfirmed.queued.extend([a, b]);
        unconfirmed.event(Event::Sent(7));
        unconfirmed.event(Event::Sent(8));
        // A resend after a reconnect keeps its packet id and matches nothing new.
        unconfirmed.event(Event::Sent(7));
        unconfirmed.event(Event::PubAck(8));
        assert!(a_done.try_recv().is_err());
        assert!(matches!(b_done.try_recv(), Ok(Ok(()))));
        unconfirmed.event(Event::PubAck(7));
        assert!(matches!(a_done.try_recv(), Ok(Ok(()))));
        assert_eq!(unconfirmed.len(), 0);
    }

    #[test]
    fn a_collided_publish_takes_its_packet_id_after_the_old_one_is_confirmed() {
        let mut unconfirmed = Unconfirmed::default();
        let (old, mut old_done) = reply();
        let (new, mut new_done) = reply();
        unconfirmed.queued.push_back(old);
        unconfirmed.event(Event::Sent(1));
        unconfirmed.queued.push_back(new);
        unconfirmed.event(Event::AwaitAck(1));
        unconfirmed.event(Event::PubAck(1));
        assert!(matches!(old_done.try_recv(), Ok(Ok(()))));
        assert!(new_done.try_recv().is_err());
        unconfirmed.event(Event::Sent(1));
        unconfirmed.event(Event::PubAck(1));
        assert!(matches!(new_done.try_recv(), Ok(Ok(()))));
    }

    #[test]
    fn a_lost_connection_fails_every_unconfirmed_publish_as_unavailable() {
        let mut unconfirmed = Unconfirmed::default();
        let (a, mut a_done) = reply();
        let (b, mut b_done) = reply();
        unconfirmed.queued.extend([a, b]);
        unconfirmed.event(Event::Sent(3));
        unconfirmed.fail_all("gone");
        for done in [&mut a_done, &mut b_done] {
            let error = done.try_recv().unwrap().unwrap_err();
            assert_eq!(error.class, crate::adapter::ErrorClass::Unavailable);
        }
    }
}
