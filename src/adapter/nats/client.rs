//! The NATS client of a connection: servers, credentials and TLS from the config, the
//! JetStream context, and the streams and consumers listed in `declare`. No error shows a
//! credential.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{ConnectErrorKind, ConnectOptions};

use super::config::{Config, ConsumerDeclaration, Storage, StreamDeclaration};
use crate::adapter::AdapterError;

/// A connected client and its JetStream context.
#[derive(Clone)]
pub struct NatsClient {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    /// The servers, without credentials, for messages.
    pub servers: String,
}

impl NatsClient {
    pub async fn connect(config: &Config) -> Result<NatsClient, AdapterError> {
        let servers = crate::secret::redact_url(config.url.expose());
        let hide = |text: String| crate::secret::hide_url_secrets(&text, config.url.expose());
        let mut options = ConnectOptions::new()
            .name(&config.client_name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_millis(config.timeout_ms)));
        if let Some(token) = &config.token {
            options = options.token(token.expose().to_owned());
        }
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(seed) = &config.nkey_seed {
            options = options.nkey(seed.expose().to_owned());
        }
        if let Some(file) = &config.credentials_file {
            options = options.credentials_file(file).await.map_err(|e| {
                AdapterError::Invalid(format!(
                    "cannot read NATS credentials file `{}`: {e}",
                    file.display()
                ))
            })?;
        }
        if let Some(tls) = &config.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca_file {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let addresses: Vec<&str> = config
            .url
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = options.connect(addresses).await.map_err(|error| {
            let message = hide(format!("cannot connect to NATS at {servers}: {error}"));
            match error.kind() {
                ConnectErrorKind::Io | ConnectErrorKind::TimedOut | ConnectErrorKind::Dns => {
                    AdapterError::Unavailable(format!(
                        "{message} (is the server running and `url` right?)"
                    ))
                }
                _ => AdapterError::Invalid(message),
            }
        })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build(client.clone());
        Ok(NatsClient {
            client,
            jetstream,
            servers,
        })
    }

    /// Creates the streams and consumers of `declare` that do not exist (existing ones
    /// are left as they are).
    pub async fn declare(&self, config: &Config) -> Result<(), AdapterError> {
        for declared in &config.declare.streams {
            self.declare_stream(declared).await?;
        }
        for declared in &config.declare.consumers {
            self.declare_consumer(declared).await?;
        }
        Ok(())
    }

    async fn declare_stream(&self, declared: &StreamDeclaration) -> Result<(), AdapterError> {
        let config = stream::Config {
            name: declared.name.clone(),
            subjects: declared.subjects.clone(),
            duplicate_window: Duration::from_secs(declared.duplicate_window_seconds),
            max_age: Duration::from_secs(declared.max_age_seconds),
            storage: match declared.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            ..stream::Config::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map(drop)
            .map_err(|e| self.api_error(&format!("creating stream `{}`", declared.name), e))
    }

    async fn declare_consumer(&self, declared: &ConsumerDeclaration) -> Result<(), AdapterError> {
        let stream = self.stream(&declared.stream).await?;
        let config = consumer::pull::Config {
            durable_name: Some(declared.name.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(declared.ack_wait_seconds),
            filter_subject: declared.filter_subject.clone().unwrap_or_default(),
            ..consumer::pull::Config::default()
        };
        stream
            .get_or_create_consumer(&declared.name, config)
            .await
            .map(drop)
            .map_err(|e| self.api_error(&format!("creating consumer `{}`", declared.name), e))
    }

    /// The stream named `name`, or an error saying it does not exist.
    pub async fn stream(&self, name: &str) -> Result<stream::Stream, AdapterError> {
        use jetstream::context::GetStreamErrorKind;
        self.jetstream.get_stream(name).await.map_err(|error| {
            match error.kind() {
                GetStreamErrorKind::JetStream(e) if e.code() == 404 => AdapterError::Invalid(format!(
                    "JetStream stream `{name}` does not exist at {}; create it or list it under `declare.streams`",
                    self.servers
                )),
                _ => self.api_error(&format!("reading stream `{name}`"), error),
            }
        })
    }

    /// A JetStream API call's failure: unavailable while the server cannot be reached.
    pub fn api_error(&self, what: &str, error: impl std::fmt::Display) -> AdapterError {
        let message = format!("NATS at {}: {what}: {error}", self.servers);
        if matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        ) {
            AdapterError::Invalid(message)
        } else {
            AdapterError::Unavailable(message)
        }
    }
}
