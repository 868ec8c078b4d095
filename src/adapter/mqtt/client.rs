//! The MQTT sessions of a connection: options, credentials and TLS, and one event type
//! and client handle over rumqttc's MQTT 3.1.1 and MQTT 5 APIs, so that the source, sink
//! and tail are written once.
//!
//! rumqttc splits a session into a client handle (requests go through a bounded channel)
//! and an event loop that must be polled for anything to happen, pings included. Each
//! session here polls its event loop in a task of its own that never waits for anything
//! else, so a slow route cannot stop the pings.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::{QoS, TlsConfiguration, Transport};

use super::config::{Config, Protocol};
use crate::adapter::AdapterError;
use crate::adapter::tls::TlsFiles;

/// The largest packet MQTT allows (256 MiB): larger limits of bridge's own are the
/// router's to enforce, so that a large message is dead-lettered instead of breaking the
/// connection over and over.
const MAX_PACKET: u32 = 268_435_455;
/// Requests waiting for the event loop, per session.
const REQUESTS: usize = 1024;

/// How one session behaves.
pub struct SessionSpec {
    pub client_id: String,
    /// A new session on each connect (tail, sinks), or the broker keeps it (sources).
    pub clean: bool,
    /// Incoming messages are acknowledged by bridge, after their sinks confirmed.
    pub manual_acks: bool,
    /// MQTT 5: how long the broker keeps a persistent session while bridge is away.
    pub session_expiry_s: Option<u32>,
    /// MQTT 5: most unacknowledged messages the broker may send at once.
    pub receive_maximum: Option<u16>,
    /// Most outgoing publishes without a PUBACK.
    pub inflight: u16,
}

/// A received PUBLISH, the same for both protocol versions.
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    /// 0 for a QoS 0 message (nothing to acknowledge).
    pub pkid: u16,
    pub dup: bool,
    pub retain: bool,
    /// MQTT 5 only.
    pub properties: Option<PublishProperties>,
}

/// What the event loop reports, as the adapter needs it.
pub enum Event {
    Connected {
        session_present: bool,
        /// MQTT 5: most unacknowledged publishes the broker takes from us.
        receive_maximum: Option<u16>,
    },
    Publish(Incoming),
    /// The broker confirmed our publish with this packet id.
    PubAck(u16),
    /// Our publish went out with this packet id (also sent again after a reconnect).
    Sent(u16),
    /// Our next publish waits for packet id N to be confirmed before it goes out.
    AwaitAck(u16),
    /// The answer to a SUBSCRIBE: `None` when granted, else why not.
    SubAck(Option<String>),
    /// Our DISCONNECT went out.
    Disconnected,
    Other,
}

/// Why the event loop stopped: `refused` when the broker refused the credentials or the
/// client id (waiting will not help).
pub struct PollError {
    pub message: String,
    pub refused: bool,
}

/// The requesting half of a session.
#[derive(Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The polled half of a session.
pub enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Host, port, TLS and credentials read from the connection's URL and fields.
struct Address {
    host: String,
    port: u16,
    tls: bool,
    login: Option<(String, String)>,
}

fn address(config: &Config) -> Result<Address, String> {
    let url = config.url.expose();
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else {
        return Err(format!(
            "`{}` is not mqtt://HOST:PORT or mqtts://HOST:PORT",
            config.url.redacted()
        ));
    };
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let (userinfo, host_port) = match rest.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, rest),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            let port = port
                .parse()
                .map_err(|_| format!("`{}`: the port is not a number", config.url.redacted()))?;
            (host, port)
        }
        _ => (host_port, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{}` has no host", config.url.redacted()));
    }
    let from_url = userinfo.map(|userinfo| {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        (
            crate::secret::percent_decode(user),
            crate::secret::percent_decode(password),
        )
    });
    let from_fields = config.username.as_ref().map(|user| {
        let password = config.password.as_ref().map(|p| p.expose().to_owned());
        (user.clone(), password.unwrap_or_default())
    });
    Ok(Address {
        host: host.to_owned(),
        port,
        tls,
        login: from_fields.or(from_url),
    })
}

/// Checks the URL (what `check` can know without connecting).
pub fn check_url(config: &Config) -> Result<(), String> {
    address(config).map(drop)
}

/// The TLS settings: the system's roots plus `ca_file`, and a client certificate.
fn tls_config(files: Option<&TlsFiles>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let files = files.cloned().unwrap_or_default();
    if let Some(file) = &files.ca_file {
        let pem = TlsFiles::read(file)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("`{}`: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("`{}`: {e}", file.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(&TlsFiles::read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("`{}`: {e}", cert.display()))?;
            let key_der = PrivateKeyDer::from_pem_slice(&TlsFiles::read(key)?)
                .map_err(|e| format!("`{}`: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A session as `spec` says, not yet connected (the first poll connects).
pub fn open(config: &Config, spec: &SessionSpec) -> Result<(Client, EventLoop), AdapterError> {
    let address = address(config).map_err(AdapterError::Invalid)?;
    let transport = if address.tls {
        Transport::tls_with_config(TlsConfiguration::Rustls(
            tls_config(config.tls.as_ref()).map_err(AdapterError::Invalid)?,
        ))
    } else {
        Transport::tcp()
    };
    let keep_alive = Duration::from_secs(config.keep_alive_s.max(5));
    Ok(match config.protocol {
        Protocol::V311 => {
            let mut options =
                rumqttc::MqttOptions::new(&spec.client_id, &address.host, address.port);
            options
                .set_transport(transport)
                .set_keep_alive(keep_alive)
                .set_clean_session(spec.clean)
                .set_manual_acks(spec.manual_acks)
                .set_inflight(spec.inflight)
                .set_max_packet_size(MAX_PACKET as usize, MAX_PACKET as usize);
            if let Some((user, password)) = address.login {
                options.set_credentials(user, password);
            }
            let (client, events) = rumqttc::AsyncClient::new(options, REQUESTS);
            (Client::V311(client), EventLoop::V311(Box::new(events)))
        }
        Protocol::V5 => {
            let mut options =
                rumqttc::v5::MqttOptions::new(&spec.client_id, &address.host, address.port);
            options
                .set_transport(transport)
                .set_keep_alive(keep_alive)
                .set_clean_start(spec.clean)
                .set_manual_acks(spec.manual_acks)
                .set_outgoing_inflight_upper_limit(spec.inflight)
                .set_max_packet_size(Some(MAX_PACKET))
                .set_receive_maximum(spec.receive_maximum)
                .set_session_expiry_interval(spec.session_expiry_s);
            if let Some((user, password)) = address.login {
                options.set_credentials(user, password);
            }
            let (client, events) = rumqttc::v5::AsyncClient::new(options, REQUESTS);
            (Client::V5(client), EventLoop::V5(Box::new(events)))
        }
    })
}

impl EventLoop {
    /// The next event; after an error the next call connects again.
    pub async fn poll(&mut self) -> Result<Event, PollError> {
        match self {
            EventLoop::V311(events) => events.poll().await.map(v311_event).map_err(|e| {
                use rumqttc::{ConnectReturnCode as Code, ConnectionError as E};
                PollError {
                    refused: matches!(
                        e,
                        E::ConnectionRefused(
                            Code::BadUserNamePassword | Code::NotAuthorized | Code::BadClientId
                        )
                    ),
                    message: e.to_string(),
                }
            }),
            EventLoop::V5(events) => events.poll().await.map(v5_event).map_err(|e| {
                use rumqttc::v5::ConnectionError as E;
                use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
                PollError {
                    refused: matches!(
                        e,
                        E::ConnectionRefused(
                            Code::BadUserNamePassword
                                | Code::NotAuthorized
                                | Code::ClientIdentifierNotValid
                                | Code::BadAuthenticationMethod
                        )
                    ),
                    message: e.to_string(),
                }
            }),
        }
    }
}

fn outgoing(event: &rumqttc::Outgoing) -> Event {
    match event {
        rumqttc::Outgoing::Publish(pkid) if *pkid != 0 => Event::Sent(*pkid),
        rumqttc::Outgoing::AwaitAck(pkid) => Event::AwaitAck(*pkid),
        rumqttc::Outgoing::Disconnect => Event::Disconnected,
        _ => Event::Other,
    }
}

fn v311_event(event: rumqttc::Event) -> Event {
    use rumqttc::{Event as E, Packet, SubscribeReasonCode};
    match event {
        E::Incoming(Packet::ConnAck(ack)) => Event::Connected {
            session_present: ack.session_present,
            receive_maximum: None,
        },
        E::Incoming(Packet::Publish(publish)) => Event::Publish(Incoming {
            topic: publish.topic,
            payload: publish.payload,
            pkid: publish.pkid,
            dup: publish.dup,
            retain: publish.retain,
            properties: None,
        }),
        E::Incoming(Packet::PubAck(ack)) => Event::PubAck(ack.pkid),
        E::Incoming(Packet::SubAck(ack)) => Event::SubAck(
            ack.return_codes
                .iter()
                .any(|code| matches!(code, SubscribeReasonCode::Failure))
                .then(|| "the broker refused the subscription".to_owned()),
        ),
        E::Outgoing(event) => outgoing(&event),
        E::Incoming(_) => Event::Other,
    }
}

fn v5_event(event: rumqttc::v5::Event) -> Event {
    use rumqttc::v5::Event as E;
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    match event {
        E::Incoming(Packet::ConnAck(ack)) => Event::Connected {
            session_present: ack.session_present,
            receive_maximum: ack.properties.and_then(|p| p.receive_max),
        },
        E::Incoming(Packet::Publish(publish)) => Event::Publish(Incoming {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            payload: publish.payload,
            pkid: publish.pkid,
            dup: publish.dup,
            retain: publish.retain,
            properties: publish.properties,
        }),
        E::Incoming(Packet::PubAck(ack)) => Event::PubAck(ack.pkid),
        E::Incoming(Packet::SubAck(ack)) => Event::SubAck(
            ack.return_codes
                .iter()
                .find(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                .map(|code| format!("the broker refused the subscription: {code:?}")),
        ),
        E::Outgoing(event) => outgoing(&event),
        E::Incoming(_) => Event::Other,
    }
}

impl Client {
    /// Queues a QoS 1 publish.
    pub async fn publish(
        &self,
        topic: String,
        payload: Bytes,
        retain: bool,
        properties: Option<PublishProperties>,
    ) -> Result<(), String> {
        match self {
            Client::V311(client) => client
                .publish_bytes(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(client) => {
                let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
                match properties {
                    Some(properties) => client
                        .publish_bytes_with_properties(topic, qos, retain, payload, properties)
                        .await
                        .map_err(|e| e.to_string()),
                    None => client
                        .publish_bytes(topic, qos, retain, payload)
                        .await
                        .map_err(|e| e.to_string()),
                }
            }
        }
    }

    /// Queues the PUBACK of the QoS 1 message with packet id `pkid`.
    pub async fn ack(&self, pkid: u16) -> Result<(), String> {
        match self {
            Client::V311(client) => {
                let mut publish = rumqttc::Publish::new("", QoS::AtLeastOnce, Vec::new());
                publish.pkid = pkid;
                client.ack(&publish).await.map_err(|e| e.to_string())
            }
            Client::V5(client) => {
                let mut publish = rumqttc::v5::mqttbytes::v5::Publish::new(
                    "",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::new(),
                    None,
                );
                publish.pkid = pkid;
                client.ack(&publish).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Queues a QoS 1 subscription to `filter` without waiting (called from the task that
    /// polls the event loop, which alone drains the queue). Retained messages come only
    /// with a new subscription where the protocol can say so (MQTT 5).
    pub fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V311(client) => client
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(client) => {
                use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
                let mut subscription =
                    Filter::new(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
                subscription.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                client
                    .try_subscribe_many([subscription])
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Queues a DISCONNECT (after everything queued before it).
    pub async fn disconnect(&self) {
        let _ = match self {
            Client::V311(client) => client.disconnect().await.map_err(drop),
            Client::V5(client) => client.disconnect().await.map_err(drop),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_tls_and_login() {
        let config = Config::with_url("mqtts://dev%40ice:p%3Aw@broker.example:8884");
        let found = address(&config).unwrap();
        assert_eq!(
            (found.host.as_str(), found.port, found.tls),
            ("broker.example", 8884, true)
        );
        assert_eq!(found.login, Some(("dev@ice".into(), "p:w".into())));
        let found = address(&Config::with_url("mqtt://127.0.0.1")).unwrap();
        assert_eq!((found.port, found.tls, found.login), (1883, false, None));
        assert!(address(&Config::with_url("tcp://x:1")).is_err());
        assert!(address(&Config::with_url("mqtt://x:port")).is_err());
    }
}
