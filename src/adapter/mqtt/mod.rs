//! MQTT 3.1.1 and 5 (`type: mqtt`), through the `rumqttc` crate. Tested against
//! Mosquitto 2.0.
//!
//! Endpoints: `NAME:topic/TOPIC` — a topic filter (`+`, `#`) as a source, a topic name as
//! a sink (a template allowed) and for tail.
//!
//! - Source ([`source`]): a persistent session per route and host (client id
//!   `bridge-HOSTNAME-ROUTE`, or `client_id`), subscribed with QoS 1, optionally as a
//!   member of a shared subscription (`share_group`). PUBACK only after the sinks
//!   confirmed, in arrival order (the confirmed prefix). Retry = handed out again from
//!   memory; there is no reject: routes from MQTT need a `dead_letter`.
//! - Sink ([`sink`]): QoS 1 publish confirmed by PUBACK, the retain flag from the
//!   connection's `retain`; one clean session per connection for all its sinks.
//! - Mapping ([`mapping`]): MQTT 5 properties (user properties, correlation data, response
//!   topic, content type, message expiry); MQTT 3.1.1 payload only, refused or packed.
//! - Tail: a clean session with a random client id that acknowledges by itself, so no one
//!   else's session is touched; MQTT keeps no history, so it sees new (and retained)
//!   messages only.
//! - Credentials: `mqtt://USER:PASSWORD@HOST:PORT` or `username` and `password`;
//!   `mqtts://` for TLS (the system's roots plus `tls.ca_file`, client certificates).

mod client;
mod config;
mod mapping;
mod sink;
mod source;

use std::sync::Arc;

use async_trait::async_trait;

pub use config::Config;
use config::{Protocol, SourceOptions as MqttSourceOptions, Target};

use super::{
    Adapter, AdapterError, ConnectContext, Connection, Connector, FieldError, OriginField, Role,
    Sink, Source, SourceOptions, SourceSettings, TailSettings,
};
use crate::address::Endpoint;

/// The `mqtt` system (`type: mqtt`, `--url mqtt://HOST:PORT`).
pub struct Mqtt;

impl Adapter for Mqtt {
    fn type_name(&self) -> &'static str {
        "mqtt"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["mqtt", "mqtts"]
    }

    fn parse(&self, fields: serde_json::Value) -> crate::adapter::contract::Parsed {
        crate::adapter::contract::parse_connection::<Config>(fields)
    }

    fn parse_url(&self, url: &str) -> Result<Arc<dyn Connection>, String> {
        Ok(Arc::new(Config::with_url(url)))
    }
}

fn check_config(config: &Config) -> Result<(), FieldError> {
    client::check_url(config).map_err(|e| FieldError::at("url", e))?;
    if config.username.is_some() != config.password.is_some() {
        return Err(FieldError::at(
            "username",
            "`username` and `password` go together",
        ));
    }
    if let Some(tls) = &config.tls {
        tls.check().map_err(|e| FieldError::at("tls", e))?;
        if !config.url.expose().starts_with("mqtts://") {
            return Err(FieldError::at("tls", "`tls` needs an mqtts:// URL"));
        }
    }
    if config.pack && config.protocol == Protocol::V5 {
        return Err(FieldError::at(
            "pack",
            "`pack` is for `protocol: \"3.1.1\"`; MQTT 5 carries headers as user properties",
        ));
    }
    if config.keep_alive_s < 5 {
        return Err(FieldError::at(
            "keep_alive_s",
            "`keep_alive_s` must be at least 5",
        ));
    }
    if let Some(prefix) = &config.client_id {
        config::check_name("client_id", prefix).map_err(|e| FieldError::at("client_id", e))?;
    }
    Ok(())
}

/// The topic of `path` (after `topic/`), for the rules that compare paths.
fn topic_of(path: &str) -> Option<&str> {
    path.strip_prefix("topic/")
}

#[async_trait]
impl Connection for Config {
    /// Only MQTT 5 messages bridge wrote carry a key (`bridge-key`).
    fn source_has_keys(&self, _path: &str) -> bool {
        false
    }

    fn type_name(&self) -> &'static str {
        "mqtt"
    }

    fn check(&self) -> Result<(), FieldError> {
        check_config(self)
    }

    fn check_endpoint(&self, path: &str, role: Role) -> Result<(), String> {
        Target::parse(path, role == Role::Source).map(drop)
    }

    fn source_options(
        &self,
        path: &str,
        options: &serde_json::Value,
    ) -> Result<SourceOptions, String> {
        self.check_endpoint(path, Role::Source)?;
        if options.is_null() {
            return Ok(SourceOptions::none());
        }
        let options: MqttSourceOptions = crate::strict::parse_strict(options.clone())
            .map_err(|e| format!("MQTT source options: {e}"))?;
        if let Some(group) = &options.share_group {
            config::check_name("share_group", group)?;
        }
        if let Some(client_id) = &options.client_id {
            config::check_name("client_id", client_id)?;
        }
        Ok(SourceOptions::new(options))
    }

    fn check_reject_without_dead_letter(&self, _: &str, _: &SourceOptions) -> Result<(), String> {
        Err(
            "MQTT has no reject: a message that cannot be delivered would be sent again forever"
                .into(),
        )
    }

    fn reply_address(&self, path: &str) -> Option<String> {
        Target::parse(path, false).ok().map(|target| target.topic)
    }

    fn may_feed(&self, sink: Option<&str>, source: &str) -> bool {
        match (sink.and_then(topic_of), topic_of(source)) {
            (Some(topic), Some(filter)) => config::matches(filter, topic),
            _ => true,
        }
    }

    fn origin_fields(&self) -> &'static [OriginField] {
        &[
            OriginField::ReceiveCount,
            OriginField::Named("topic"),
            OriginField::Named("retain"),
        ]
    }

    /// Mosquitto takes messages up to MQTT's 256 MiB by default; bridge's default limit
    /// for routes from MQTT is that of the largest brokers here.
    fn max_message_bytes(&self) -> usize {
        16 << 20
    }

    fn describe(&self) -> String {
        format!("MQTT at {}", self.url.redacted())
    }

    async fn connect(&self, _context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        let publisher = sink::Publisher::start(self.clone()).await?;
        Ok(Arc::new(MqttConnector {
            config: self.clone(),
            publisher,
        }))
    }
}

struct MqttConnector {
    config: Config,
    publisher: Arc<sink::Publisher>,
}

impl MqttConnector {
    /// A clean session that acknowledges by itself, for tail and replies.
    async fn watch(&self, endpoint: &Endpoint) -> Result<Box<dyn Source>, AdapterError> {
        let target = Target::parse(&endpoint.path, true).map_err(AdapterError::Invalid)?;
        let session = client::SessionSpec {
            client_id: format!(
                "{}-tail-{:08x}",
                self.config.client_id_prefix(),
                sink::rand_suffix()
            ),
            clean: true,
            manual_acks: false,
            session_expiry_s: None,
            receive_maximum: None,
            inflight: 16,
        };
        let spec = source::ReadSpec {
            endpoint: endpoint.to_string(),
            filter: target.topic,
            session,
        };
        Ok(Box::new(
            source::SessionSource::start(&self.config, spec).await?,
        ))
    }
}

#[async_trait]
impl Connector for MqttConnector {
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let target = Target::parse(&endpoint.path, true).map_err(AdapterError::Invalid)?;
        let options: MqttSourceOptions = settings.options.get()?;
        let filter = match &options.share_group {
            Some(group) => format!("$share/{group}/{}", target.topic),
            None => target.topic,
        };
        // Route names may hold `/` (`ROUTE/replies`); client ids keep to the safe set.
        let route: String = settings
            .route
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("{}-{route}", self.config.client_id_prefix()));
        let window = u16::try_from(settings.max_in_flight.clamp(1, 65_535)).unwrap_or(u16::MAX);
        tracing::info!(%filter, %client_id, window, "subscribing to MQTT");
        let session = client::SessionSpec {
            client_id,
            clean: false,
            manual_acks: true,
            session_expiry_s: Some(
                options
                    .session_expiry_s
                    .unwrap_or(config::DEFAULT_SESSION_EXPIRY_S),
            ),
            receive_maximum: Some(window),
            inflight: 16,
        };
        let spec = source::ReadSpec {
            endpoint: endpoint.to_string(),
            filter,
            session,
        };
        Ok(Box::new(
            source::SessionSource::start(&self.config, spec).await?,
        ))
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        let target = Target::parse(&endpoint.path, false).map_err(AdapterError::Invalid)?;
        Ok(Arc::new(sink::TopicSink {
            publisher: self.publisher.clone(),
            topic: target.topic,
        }))
    }

    /// New (and retained) messages only: MQTT keeps no history to start from.
    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        _settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        self.watch(endpoint).await
    }

    async fn open_reply_reader(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Box<dyn Source>, AdapterError> {
        self.watch(endpoint).await
    }

    fn reply_path(&self, address: &str) -> Result<String, String> {
        config::check_topic(address, false)?;
        Ok(format!("topic/{address}"))
    }

    /// A topic name without wildcards that is not a broker's own (`$SYS/...`).
    fn is_plain_reply_address(&self, address: &str) -> bool {
        !address.starts_with('$') && config::check_topic(address, false).is_ok()
    }
}
