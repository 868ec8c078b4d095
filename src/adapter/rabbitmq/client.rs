//! One AMQP connection per routes-file connection, reopened on demand.
//!
//! Every operation that can hang on a dead socket runs under a timeout; a connection found
//! closed is replaced by a new one on next use. Channels are cheap and belong to one source
//! or to the connection's publisher; they are recreated after any error. Errors are
//! classified here: a broker that cannot be reached or a closed channel is
//! [`AdapterError::Unavailable`]; a missing queue or exchange, or refused access, is
//! [`AdapterError::Invalid`].

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use tokio::sync::Mutex;

use super::config::{Config, Declarations, ExchangeType};
use crate::adapter::AdapterError;
use crate::adapter::tls::TlsFiles;
use crate::secret::{hide_url_secrets, redact_url};

/// Default heartbeat, in seconds, when the URI has none.
const HEARTBEAT_SECONDS: u16 = 10;

/// Parses the URI and adds the default heartbeat. The error never shows the password, even
/// where the parser's own message quotes the whole URI.
pub fn parse_uri(url: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = url.parse().map_err(|e| {
        hide_url_secrets(
            &format!("`{}` is not an AMQP URI: {e}", redact_url(url)),
            url,
        )
    })?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(HEARTBEAT_SECONDS);
    }
    Ok(uri)
}

/// Whether an AMQP error says the thing addressed does not exist or is not allowed.
pub fn is_refusal(error: &lapin::Error) -> bool {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::NOTFOUND
                    | AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::PRECONDITIONFAILED
            ) | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
        ),
        _ => false,
    }
}

/// A lazily (re)opened connection.
pub struct AmqpClient {
    config: Config,
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    connection: Mutex<Option<Arc<Connection>>>,
}

/// The CA and client certificate of `tls`, read once at start-up.
fn tls_config(tls: Option<&TlsFiles>) -> Result<OwnedTLSConfig, String> {
    let Some(tls) = tls else {
        return Ok(OwnedTLSConfig::default());
    };
    let cert_chain = match &tls.ca_file {
        Some(file) => Some(
            String::from_utf8(TlsFiles::read(file)?)
                .map_err(|_| format!("`{}` is not a PEM file", file.display()))?,
        ),
        None => None,
    };
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: TlsFiles::read(cert)?,
            key: TlsFiles::read(key)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

impl AmqpClient {
    pub fn new(config: Config) -> Result<AmqpClient, AdapterError> {
        let uri = parse_uri(config.url.expose()).map_err(AdapterError::Invalid)?;
        let tls = tls_config(config.tls.as_ref()).map_err(AdapterError::Invalid)?;
        Ok(AmqpClient {
            config,
            uri,
            tls,
            connection: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where this client connects, without credentials.
    pub fn describe(&self) -> String {
        super::describe(&self.config)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.connect_timeout_ms)
    }

    fn unavailable(&self, error: impl std::fmt::Display) -> AdapterError {
        AdapterError::Unavailable(format!(
            "cannot reach {}: {error} (is it running?)",
            self.describe()
        ))
    }

    async fn connection(&self) -> Result<Arc<Connection>, AdapterError> {
        let mut current = self.connection.lock().await;
        if let Some(connection) = current.as_ref()
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        let properties = ConnectionProperties::default().with_connection_name("bridge".into());
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| AdapterError::Invalid(format!("no async runtime for AMQP: {e}")))?;
        let connecting = Connection::connect_uri_with_config(
            self.uri.clone(),
            properties,
            self.tls.clone(),
            runtime,
        );
        let connection = match tokio::time::timeout(self.timeout(), connecting).await {
            Ok(Ok(connection)) => Arc::new(connection),
            Ok(Err(error)) if is_refusal(&error) => {
                return Err(AdapterError::Invalid(format!(
                    "{} refused the connection: {error}",
                    self.describe()
                )));
            }
            Ok(Err(error)) => return Err(self.unavailable(error)),
            Err(_) => return Err(self.unavailable("no answer within the connect timeout")),
        };
        // Declared topology is declared again on every new connection, so queues and
        // exchanges that did not survive a broker restart (non-durable) come back.
        if let Err(error) = self.declare_on(&connection, &self.config.declare).await {
            let _ = connection.close(200, "declaration failed".into()).await;
            return Err(error);
        }
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// A new channel, reconnecting first when needed.
    pub async fn channel(&self) -> Result<Channel, AdapterError> {
        let connection = self.connection().await?;
        match tokio::time::timeout(self.timeout(), connection.create_channel()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(error)) => {
                self.connection.lock().await.take();
                Err(self.unavailable(error))
            }
            Err(_) => {
                self.connection.lock().await.take();
                Err(self.unavailable("opening a channel timed out"))
            }
        }
    }

    /// Runs `operation` under the connect timeout, classifying its error.
    pub async fn bounded<T>(
        &self,
        what: &str,
        operation: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T, AdapterError> {
        match tokio::time::timeout(self.timeout(), operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_refusal(&error) => {
                Err(AdapterError::Invalid(format!("{what}: {error}")))
            }
            Ok(Err(error)) => Err(self.unavailable(format!("{what}: {error}"))),
            Err(_) => Err(self.unavailable(format!("{what}: timed out"))),
        }
    }

    /// Declares the configured exchanges, queues and bindings on `connection`.
    async fn declare_on(
        &self,
        connection: &Connection,
        declarations: &Declarations,
    ) -> Result<(), AdapterError> {
        if declarations.exchanges.is_empty() && declarations.queues.is_empty() {
            return Ok(());
        }
        let channel = self
            .bounded("opening a channel", connection.create_channel())
            .await?;
        for exchange in &declarations.exchanges {
            let kind = match exchange.kind {
                ExchangeType::Direct => ExchangeKind::Direct,
                ExchangeType::Fanout => ExchangeKind::Fanout,
                ExchangeType::Topic => ExchangeKind::Topic,
                ExchangeType::Headers => ExchangeKind::Headers,
            };
            let options = ExchangeDeclareOptions {
                durable: exchange.durable,
                ..ExchangeDeclareOptions::default()
            };
            self.bounded(
                &format!("declaring exchange `{}`", exchange.name),
                channel.exchange_declare(
                    exchange.name.as_str().into(),
                    kind,
                    options,
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        for queue in &declarations.queues {
            let mut arguments = FieldTable::default();
            let text = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()));
            if let Some(exchange) = &queue.dead_letter_exchange {
                arguments.insert("x-dead-letter-exchange".into(), text(exchange));
            }
            if let Some(key) = &queue.dead_letter_routing_key {
                arguments.insert("x-dead-letter-routing-key".into(), text(key));
            }
            for (name, value) in &queue.arguments {
                let value = match value {
                    serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
                    serde_json::Value::Number(n) if n.is_i64() => {
                        AMQPValue::LongLongInt(n.as_i64().unwrap_or_default())
                    }
                    serde_json::Value::Number(n) => {
                        AMQPValue::Double(n.as_f64().unwrap_or_default())
                    }
                    serde_json::Value::String(s) => text(s),
                    other => text(&other.to_string()),
                };
                arguments.insert(name.as_str().into(), value);
            }
            let options = QueueDeclareOptions {
                durable: queue.durable,
                ..QueueDeclareOptions::default()
            };
            self.bounded(
                &format!("declaring queue `{}`", queue.name),
                channel.queue_declare(queue.name.as_str().into(), options, arguments),
            )
            .await?;
            for binding in &queue.bindings {
                self.bounded(
                    &format!("binding queue `{}` to `{}`", queue.name, binding.exchange),
                    channel.queue_bind(
                        queue.name.as_str().into(),
                        binding.exchange.as_str().into(),
                        binding.routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
            }
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }
}
