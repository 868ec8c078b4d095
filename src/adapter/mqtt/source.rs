//! MQTT sources: a persistent session subscribed with QoS 1, for `bridge run`; and a clean
//! session that acknowledges by itself, for `tail` and reply readers.
//!
//! - The session is the route's own (client id per route and host, clean start off), so
//!   the broker keeps its subscription and queues what arrives while bridge is away. The
//!   first connect of a process subscribes (so a changed filter takes effect); a reconnect
//!   subscribes again only when the broker lost the session.
//! - PUBACK is sent only after the message's sinks confirmed, and in the order the
//!   messages arrived, as MQTT 3.1.1 requires: the confirmed prefix is acknowledged, as a
//!   Kafka source commits offsets. Messages of an earlier connection are never
//!   acknowledged on a later one (the broker sends them again, marked as duplicates).
//! - Retry hands the message out again from memory, its receive count one higher; MQTT
//!   has no negative acknowledgement. A dropped handle is a retry. Reject is not MQTT's
//!   either: routes from MQTT need a `dead_letter`.
//! - The broker sends at most its in-flight limit of unacknowledged messages (MQTT 5: the
//!   receive maximum bridge asks for, the route's `max_in_flight`; MQTT 3.1.1: the
//!   broker's setting), which bounds what waits here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::client::{self, Client, Event, Incoming, SessionSpec};
use super::config::{Config, Protocol};
use super::mapping;
use crate::ack::{AckHandle, Outcome};
use crate::adapter::{AdapterError, Delivery, Source};
use crate::message::{Message, Origin, OriginValue};

/// What a source reads and how.
pub struct ReadSpec {
    pub endpoint: String,
    /// The filter subscribed to (`$share/GROUP/...` for a shared subscription).
    pub filter: String,
    pub session: SessionSpec,
}

/// The arrival order of unacknowledged messages of the current connection.
#[derive(Default)]
struct AckOrder {
    /// Bumped on every connect and disconnect.
    epoch: u64,
    next_seq: u64,
    /// Sequence, packet id, confirmed; consecutive sequences.
    entries: VecDeque<(u64, u16, bool)>,
}

impl AckOrder {
    fn new_connection(&mut self) {
        self.epoch += 1;
        self.entries.clear();
    }

    /// Records an arrival; its sequence, or `None` for a QoS 0 message.
    fn arrive(&mut self, pkid: u16) -> Option<u64> {
        if pkid == 0 {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back((seq, pkid, false));
        Some(seq)
    }

    /// Marks `seq` of `epoch` confirmed; the packet ids now acknowledgeable, in order.
    fn confirm(&mut self, epoch: u64, seq: u64) -> Vec<u16> {
        if epoch != self.epoch {
            return Vec::new();
        }
        let Some(&(first, _, _)) = self.entries.front() else {
            return Vec::new();
        };
        let Some(entry) = seq
            .checked_sub(first)
            .and_then(|index| self.entries.get_mut(usize::try_from(index).ok()?))
        else {
            return Vec::new();
        };
        entry.2 = true;
        let mut ready = Vec::new();
        while let Some(&(_, pkid, true)) = self.entries.front() {
            ready.push(pkid);
            self.entries.pop_front();
        }
        ready
    }
}

struct Arrival {
    epoch: u64,
    seq: Option<u64>,
    incoming: Incoming,
}

struct Again {
    message: Message,
    epoch: u64,
    seq: Option<u64>,
}

pub struct SessionSource {
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    again: mpsc::UnboundedReceiver<Again>,
    again_tx: mpsc::UnboundedSender<Again>,
    acks: mpsc::UnboundedSender<(u64, Vec<u16>)>,
    order: Arc<Mutex<AckOrder>>,
    client: Client,
    poller: tokio::task::JoinHandle<()>,
    acker: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
    endpoint: String,
    protocol: Protocol,
    pack: bool,
    /// Whether bridge acknowledges (a route's session) or the client does (tail).
    manual: bool,
}

impl SessionSource {
    /// Connects and subscribes; returns once the broker granted the subscription.
    pub async fn start(config: &Config, spec: ReadSpec) -> Result<SessionSource, AdapterError> {
        let (client, events) = client::open(config, &spec.session)?;
        let order = Arc::new(Mutex::new(AckOrder::default()));
        let failure = Arc::new(Mutex::new(None));
        let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        let poller = tokio::spawn(poll(
            events,
            client.clone(),
            spec.filter.clone(),
            order.clone(),
            arrivals_tx,
            ready_tx,
            failure.clone(),
        ));
        let describe = format!("MQTT `{}`", spec.filter);
        match tokio::time::timeout(Duration::from_secs(30), ready).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                poller.abort();
                return Err(error);
            }
            Ok(Err(_)) | Err(_) => {
                poller.abort();
                return Err(AdapterError::Unavailable(format!(
                    "{describe}: no subscription within 30 s"
                )));
            }
        }
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let (again_tx, again) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let acker = tokio::spawn(acknowledge(
            client.clone(),
            order.clone(),
            acks_rx,
            stop.clone(),
        ));
        Ok(SessionSource {
            arrivals,
            again,
            again_tx,
            acks,
            order,
            client,
            poller,
            acker: Some(acker),
            stop,
            failure,
            endpoint: spec.endpoint,
            protocol: config.protocol,
            pack: config.pack,
            manual: spec.session.manual_acks,
        })
    }

    fn delivery(&self, message: Message, epoch: u64, seq: Option<u64>) -> Delivery {
        if !self.manual {
            return Delivery {
                message,
                ack: AckHandle::noop(),
            };
        }
        let order = self.order.clone();
        let acks = self.acks.clone();
        let again = self.again_tx.clone();
        let kept = message.clone();
        let ack = AckHandle::new(move |outcome| match outcome {
            Outcome::Ack => {
                let Some(seq) = seq else { return };
                let ready = order.lock().expect("ack order lock").confirm(epoch, seq);
                if !ready.is_empty() {
                    let _ = acks.send((epoch, ready));
                }
            }
            Outcome::Retry(_) | Outcome::Reject(_) => {
                let _ = again.send(Again {
                    message: kept,
                    epoch,
                    seq,
                });
            }
        });
        Delivery { message, ack }
    }

    fn decode(&self, arrival: Incoming) -> Message {
        let message = match self.protocol {
            Protocol::V5 => {
                let headers = arrival
                    .properties
                    .as_ref()
                    .map_or(0, |p| p.user_properties.len());
                crate::adapter::map_large(headers, || {
                    mapping::decode_v5(arrival.payload, arrival.properties)
                })
            }
            Protocol::V311 => mapping::decode_v311(arrival.payload, self.pack),
        };
        message.with_origin(Origin {
            endpoint: self.endpoint.clone(),
            receive_count: Some(if arrival.dup { 2 } else { 1 }),
            fields: vec![
                ("topic", OriginValue::text(&arrival.topic)),
                ("retain", OriginValue::Bool(arrival.retain)),
            ],
            ..Origin::default()
        })
    }
}

/// Polls the event loop: hands out arrivals, subscribes, reconnects. Never waits for
/// anything but the event loop.
async fn poll(
    mut events: client::EventLoop,
    client: Client,
    filter: String,
    order: Arc<Mutex<AckOrder>>,
    arrivals: mpsc::UnboundedSender<Arrival>,
    ready: oneshot::Sender<Result<(), AdapterError>>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let mut ready = Some(ready);
    let mut first = true;
    let mut wait = Duration::from_millis(200);
    loop {
        let fail = |reason: String, ready: &mut Option<oneshot::Sender<_>>, invalid: bool| {
            let error = if invalid {
                AdapterError::Invalid(reason.clone())
            } else {
                AdapterError::Unavailable(reason.clone())
            };
            match ready.take() {
                Some(ready) => {
                    let _ = ready.send(Err(error));
                }
                None => *failure.lock().expect("failure lock") = Some(reason),
            }
        };
        match events.poll().await {
            Ok(Event::Connected {
                session_present, ..
            }) => {
                order.lock().expect("ack order lock").new_connection();
                wait = Duration::from_millis(200);
                if first || !session_present {
                    if let Err(error) = client.subscribe(&filter) {
                        fail(
                            format!("MQTT subscribe `{filter}`: {error}"),
                            &mut ready,
                            false,
                        );
                        return;
                    }
                } else if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
                first = false;
            }
            Ok(Event::SubAck(refusal)) => match refusal {
                None => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
                Some(reason) => {
                    fail(format!("MQTT `{filter}`: {reason}"), &mut ready, true);
                    return;
                }
            },
            Ok(Event::Publish(incoming)) => {
                let (epoch, seq) = {
                    let mut order = order.lock().expect("ack order lock");
                    let seq = order.arrive(incoming.pkid);
                    (order.epoch, seq)
                };
                let arrival = Arrival {
                    epoch,
                    seq,
                    incoming,
                };
                if arrivals.send(arrival).is_err() {
                    return;
                }
            }
            Ok(Event::Disconnected) => return,
            Ok(_) => {}
            Err(error) => {
                order.lock().expect("ack order lock").new_connection();
                if error.refused || ready.is_some() {
                    let reason = format!("MQTT: {}", error.message);
                    fail(reason, &mut ready, error.refused);
                    return;
                }
                tracing::warn!(error = %error.message, %filter, retry_in = ?wait, "MQTT source lost its connection; reconnecting");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Sends the PUBACKs the ack order releases, for the connection they belong to.
async fn acknowledge(
    client: Client,
    order: Arc<Mutex<AckOrder>>,
    mut acks: mpsc::UnboundedReceiver<(u64, Vec<u16>)>,
    stop: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            biased;
            batch = acks.recv() => batch,
            _ = stop.cancelled() => acks.try_recv().ok(),
        };
        let Some((epoch, pkids)) = batch else { return };
        if order.lock().expect("ack order lock").epoch != epoch {
            continue;
        }
        for pkid in pkids {
            if let Err(error) = client.ack(pkid).await {
                tracing::warn!(%error, "MQTT acknowledgement not sent; the broker will send the message again");
            }
        }
    }
}

#[async_trait]
impl Source for SessionSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        tokio::select! {
            biased;
            Some(again) = self.again.recv() => {
                let mut message = again.message;
                let count = message.origin().and_then(|o| o.receive_count).unwrap_or(1);
                if let Some(origin) = message.origin().cloned() {
                    message = message.with_origin(Origin {
                        receive_count: Some(count.saturating_add(1)),
                        ..origin
                    });
                }
                Ok(Some(self.delivery(message, again.epoch, again.seq)))
            }
            arrival = self.arrivals.recv() => match arrival {
                Some(arrival) => {
                    let (epoch, seq) = (arrival.epoch, arrival.seq);
                    let message = self.decode(arrival.incoming);
                    Ok(Some(self.delivery(message, epoch, seq)))
                }
                None => Err(match self.failure.lock().expect("failure lock").clone() {
                    Some(reason) => AdapterError::Invalid(reason),
                    None => AdapterError::Unavailable("the MQTT session stopped".into()),
                }),
            },
        }
    }

    async fn close(mut self: Box<Self>) {
        // What was not handed out stays unacknowledged: the broker sends it again to the
        // next session of this client id.
        self.arrivals.close();
        self.stop.cancel();
        if let Some(acker) = self.acker.take() {
            let _ = acker.await;
        }
        // The DISCONNECT goes out after the acknowledgements queued before it.
        self.client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(5), &mut self.poller)
            .await
            .is_err()
        {
            tracing::warn!("MQTT session did not close within 5 s");
            self.poller.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledges_the_confirmed_prefix_in_arrival_order() {
        let mut order = AckOrder::default();
        order.new_connection();
        let epoch = order.epoch;
        let a = order.arrive(10).unwrap();
        let b = order.arrive(11).unwrap();
        let c = order.arrive(12).unwrap();
        assert_eq!(order.arrive(0), None, "QoS 0 needs no acknowledgement");
        assert!(order.confirm(epoch, c).is_empty());
        assert!(order.confirm(epoch, b).is_empty());
        assert_eq!(order.confirm(epoch, a), [10, 11, 12]);
    }

    #[test]
    fn confirmations_of_an_earlier_connection_acknowledge_nothing() {
        let mut order = AckOrder::default();
        order.new_connection();
        let old = order.epoch;
        let a = order.arrive(5).unwrap();
        order.new_connection();
        let b = order.arrive(5).unwrap();
        assert!(order.confirm(old, a).is_empty());
        assert_eq!(order.confirm(order.epoch, b), [5]);
    }
}
