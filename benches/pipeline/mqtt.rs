//! MQTT's side of the benchmark (rumqttc, MQTT 5, the project's Mosquitto): a publisher of
//! QoS 1 messages whose futures resolve on the broker's PUBACK, and the persistent session
//! that reads each MQTT place. MQTT keeps messages only for a session that has subscribed,
//! so that session is made before the load and both pipes (bridge's route through its
//! `client_id` option, the raw pipe) take it over.

use std::time::Duration;

use futures::future::BoxFuture;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{Mutex, watch};

use crate::{MQTT_HOST, MQTT_PORT};

/// How long Mosquitto keeps a reading session while no one is connected to it.
pub const SESSION_EXPIRY_S: u32 = 3600;
/// The largest packet either side takes (rumqttc's default is 10 KiB).
pub const MAX_PACKET: u32 = 1 << 20;

/// The client id of the persistent session that reads MQTT place `name` (whose topic is
/// `name`).
pub fn client_id(name: &str) -> String {
    format!("{name}-session")
}

/// Options of a client of the project's Mosquitto.
pub fn options(client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, MQTT_HOST, MQTT_PORT);
    options.set_max_packet_size(Some(MAX_PACKET));
    options
}

/// Makes (`keep`) or ends the persistent session that reads place `name`: made, it is
/// subscribed to the topic with QoS 1 and the broker queues what is published there.
pub async fn session(name: &str, keep: bool) -> Result<(), String> {
    let mut options = options(&client_id(name));
    options
        .set_clean_start(!keep)
        .set_session_expiry_interval(keep.then_some(SESSION_EXPIRY_S));
    let (client, mut events) = AsyncClient::new(options, 10);
    // Queued before the first poll, which connects and then sends them.
    let queued = if keep {
        client.try_subscribe(name, QoS::AtLeastOnce)
    } else {
        client.try_disconnect()
    };
    queued.map_err(|e| e.to_string())?;
    let done = async {
        loop {
            match events.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::SubAck(ack)) => {
                    let granted = ack
                        .return_codes
                        .iter()
                        .all(|code| matches!(code, SubscribeReasonCode::Success(_)));
                    if !granted {
                        return Err(format!("subscription refused: {:?}", ack.return_codes));
                    }
                    client.try_disconnect().map_err(|e| e.to_string())?;
                }
                Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

/// A clean session publishing QoS 1 messages; its event loop is polled in a task of its
/// own, which counts the PUBACKs.
pub struct Publisher {
    client: AsyncClient,
    /// Publishes queued so far, counted in the order they are queued.
    queued: Mutex<u64>,
    /// PUBACKs received so far. Mosquitto acknowledges a connection's publishes in order,
    /// so the n-th publish is confirmed once n have come back.
    acked: watch::Receiver<u64>,
    poller: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Connects; returns once the broker accepted the connection.
    pub async fn connect() -> Publisher {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let mut options = options(&format!("bench-publisher-{nanos:x}"));
        // Mosquitto's own in-flight limit here (max_inflight_messages).
        options.set_outgoing_inflight_upper_limit(1000);
        let (client, mut events) = AsyncClient::new(options, 1024);
        let (acked_tx, acked) = watch::channel(0);
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let poller = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked_tx.send_modify(|n| *n += 1),
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(connected) = connected_tx.take() {
                            let _ = connected.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        eprintln!("MQTT publisher: {error}; connecting again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected)
            .await
            .ok()
            .and_then(Result::ok)
            .expect("Mosquitto on 1884 (scripts/brokers.sh up mosquitto)");
        Publisher {
            client,
            queued: Mutex::new(0),
            acked,
            poller,
        }
    }

    /// Queues a QoS 1 publish to `topic`; the returned future resolves on its PUBACK.
    pub async fn publish(&self, topic: &str, body: Vec<u8>) -> BoxFuture<'static, ()> {
        let n = {
            // Held while queuing, so that the count follows the order of the queue.
            let mut queued = self.queued.lock().await;
            self.client
                .publish_bytes(topic, QoS::AtLeastOnce, false, body.into())
                .await
                .expect("MQTT publish");
            *queued += 1;
            *queued
        };
        let mut acked = self.acked.clone();
        Box::pin(async move {
            acked
                .wait_for(|acked| *acked >= n)
                .await
                .expect("the MQTT publisher stopped");
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.poller.abort();
    }
}
