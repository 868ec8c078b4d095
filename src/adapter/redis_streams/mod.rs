//! Redis Streams (`type: redis`), through the `redis` crate. Tested against Redis 7.0.
//!
//! Endpoints: `NAME:stream/KEY` as a source (a consumer group), a sink (`XADD`) and for
//! tail (`XREAD`).
//!
//! - Source ([`source`]): a consumer group (`from.options.group`, default `bridge-ROUTE`,
//!   created at the stream's start when missing) read with `XREADGROUP`; this replica's
//!   consumer (`from.options.consumer`, default the host name and the route) takes its
//!   own pending entries first after a restart and claims entries other consumers left
//!   pending past `claim_idle_ms` (`XAUTOCLAIM`). Ack = `XACK`; retry = `XCLAIM` to itself
//!   and handed out again (the delivery count grows); a stream has no reject: routes from
//!   Redis need a `dead_letter`. The window is the route's `max_in_flight`.
//! - Sink ([`sink`]): `XADD` in call order, pipelined, with `MAXLEN ~ max_len` when set;
//!   the entry id is the receipt.
//! - Mapping ([`mapping`]): envelope fields and headers as entry fields, in order.
//! - Tail ([`tail`]): `XREAD` without a group, acknowledging nothing.
//! - Credentials: `redis://USER:PASSWORD@HOST:PORT/DB` (ACL users, or the password alone);
//!   `rediss://` for TLS (the system's roots, or `SSL_CERT_FILE`).

mod config;
mod mapping;
mod sink;
mod source;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use config::Config;
use config::{SourceOptions as RedisSourceOptions, Target};

use super::{
    Adapter, AdapterError, ConnectContext, Connection, Connector, FieldError, OriginField, Role,
    Sink, Source, SourceOptions, SourceSettings, TailSettings,
};
use crate::address::Endpoint;

/// The `redis` system (`type: redis`, `--url redis://HOST:PORT`).
pub struct Redis;

impl Adapter for Redis {
    fn type_name(&self) -> &'static str {
        "redis"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["redis", "rediss"]
    }

    fn parse(&self, fields: serde_json::Value) -> crate::adapter::contract::Parsed {
        crate::adapter::contract::parse_connection::<Config>(fields)
    }

    fn parse_url(&self, url: &str) -> Result<Arc<dyn Connection>, String> {
        Ok(Arc::new(Config::with_url(url)))
    }
}

fn check_config(config: &Config) -> Result<(), FieldError> {
    let url = config.url.expose();
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(FieldError::at(
            "url",
            format!(
                "`{}` is not redis://HOST:PORT or rediss://HOST:PORT",
                config.url.redacted()
            ),
        ));
    }
    if config.max_len == Some(0) {
        return Err(FieldError::at("max_len", "`max_len` must be at least 1"));
    }
    for stream in &config.declare.streams {
        config::check_name("stream", &stream.name).map_err(|e| FieldError::at("declare", e))?;
        for group in &stream.groups {
            config::check_name("group", group).map_err(|e| FieldError::at("declare", e))?;
        }
    }
    Ok(())
}

/// The client for `config`'s URL, its errors without the password.
fn client(config: &Config) -> Result<redis::Client, AdapterError> {
    redis::Client::open(config.url.expose()).map_err(|e| {
        AdapterError::Invalid(crate::secret::hide_url_secrets(
            &format!("Redis URL: {e}"),
            config.url.expose(),
        ))
    })
}

/// A connection that answers within `timeout` (a blocking read needs longer than its block).
async fn manager(
    client: &redis::Client,
    timeout: Duration,
    describe: &str,
) -> Result<ConnectionManager, AdapterError> {
    let settings = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    ConnectionManager::new_with_config(client.clone(), settings)
        .await
        .map_err(|e| {
            if e.kind() == redis::ErrorKind::AuthenticationFailed {
                AdapterError::Invalid(format!("{describe}: authentication failed"))
            } else {
                AdapterError::Unavailable(format!("{describe}: {e}"))
            }
        })
}

/// Creates group `group` on `stream` (and the stream) unless it exists.
async fn create_group(
    connection: &mut ConnectionManager,
    stream: &str,
    group: &str,
) -> Result<(), AdapterError> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(connection)
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(AdapterError::Unavailable(format!(
            "Redis: creating group `{group}` on `{stream}`: {e}"
        ))),
    }
}

#[async_trait]
impl Connection for Config {
    /// Only messages bridge wrote carry a key (the `key` field).
    fn source_has_keys(&self, _path: &str) -> bool {
        false
    }

    fn type_name(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> Result<(), FieldError> {
        check_config(self)
    }

    fn check_endpoint(&self, path: &str, _role: Role) -> Result<(), String> {
        Target::parse(path).map(drop)
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
        let options: RedisSourceOptions = crate::strict::parse_strict(options.clone())
            .map_err(|e| format!("Redis source options: {e}"))?;
        if let Some(group) = &options.group {
            config::check_name("group", group)?;
        }
        if let Some(consumer) = &options.consumer {
            config::check_name("consumer", consumer)?;
        }
        if options.claim_idle_ms == Some(0) {
            return Err("`claim_idle_ms` must be at least 1".into());
        }
        Ok(SourceOptions::new(options))
    }

    fn check_reject_without_dead_letter(&self, _: &str, _: &SourceOptions) -> Result<(), String> {
        Err("a Redis stream has no reject of its own: a message that cannot be delivered would stay pending forever".into())
    }

    fn reply_address(&self, path: &str) -> Option<String> {
        Target::parse(path).ok().map(|target| target.stream)
    }

    fn may_feed(&self, sink: Option<&str>, source: &str) -> bool {
        sink.is_none_or(|sink| sink == source)
    }

    fn origin_fields(&self) -> &'static [OriginField] {
        &[
            OriginField::ReceiveCount,
            OriginField::BrokerMessageId,
            OriginField::Named("stream"),
        ]
    }

    /// Redis's default `proto-max-bulk-len` (512 MiB) bounds one field; bridge's default
    /// limit for routes from Redis is that of the largest brokers here.
    fn max_message_bytes(&self) -> usize {
        16 << 20
    }

    fn describe(&self) -> String {
        format!("Redis at {}", self.url.redacted())
    }

    async fn connect(&self, _context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        let client = client(self)?;
        let describe = self.describe();
        let mut commands = manager(&client, Duration::from_secs(10), &describe).await?;
        for stream in &self.declare.streams {
            if stream.groups.is_empty() {
                // A stream exists only with an entry or a group: make it through a group,
                // then remove that group.
                create_group(&mut commands, &stream.name, "bridge-declare").await?;
                let _: Result<u64, _> = redis::cmd("XGROUP")
                    .arg("DESTROY")
                    .arg(&stream.name)
                    .arg("bridge-declare")
                    .query_async(&mut commands)
                    .await;
            }
            for group in &stream.groups {
                create_group(&mut commands, &stream.name, group).await?;
            }
        }
        Ok(Arc::new(RedisConnector {
            client,
            commands,
            describe,
            max_len: self.max_len,
        }))
    }
}

struct RedisConnector {
    client: redis::Client,
    commands: ConnectionManager,
    describe: String,
    max_len: Option<usize>,
}

impl RedisConnector {
    /// A connection of its own for blocking reads.
    async fn reader(&self) -> Result<ConnectionManager, AdapterError> {
        let timeout = Duration::from_millis(source::BLOCK_MS) + Duration::from_secs(5);
        manager(&self.client, timeout, &self.describe).await
    }
}

#[async_trait]
impl Connector for RedisConnector {
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        let options: RedisSourceOptions = settings.options.get()?;
        let group = options
            .group
            .clone()
            .unwrap_or_else(|| config::group_name(&settings.route));
        let consumer = options
            .consumer
            .clone()
            .unwrap_or_else(|| config::consumer_name(&settings.route));
        let mut commands = self.commands.clone();
        create_group(&mut commands, &target.stream, &group).await?;
        tracing::info!(stream = %target.stream, %group, %consumer, window = settings.max_in_flight, "consuming from a Redis stream");
        Ok(Box::new(source::StreamSource::start(
            self.reader().await?,
            commands,
            source::ReadSpec {
                stream: target.stream,
                group,
                consumer,
                endpoint: endpoint.to_string(),
                window: settings.max_in_flight,
                claim_idle: Duration::from_millis(
                    options
                        .claim_idle_ms
                        .unwrap_or(config::DEFAULT_CLAIM_IDLE_MS),
                ),
            },
        )))
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        Ok(Arc::new(sink::StreamSink::start(
            self.commands.clone(),
            target.stream,
            self.max_len,
        )))
    }

    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        let target = Target::parse(&endpoint.path).map_err(AdapterError::Invalid)?;
        Ok(Box::new(tail::StreamTail::start(
            self.reader().await?,
            target.stream,
            endpoint.to_string(),
            settings.from_beginning,
        )))
    }

    /// Dead letters are taken through a consumer group of their own (`bridge-dlq`, or the
    /// `--group` of `bridge dlq redrive`).
    fn dead_letter_reader_options(&self, reader: &str) -> SourceOptions {
        SourceOptions::new(RedisSourceOptions {
            group: Some(reader.into()),
            ..RedisSourceOptions::default()
        })
    }

    /// New entries only, without a group.
    async fn open_reply_reader(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Box<dyn Source>, AdapterError> {
        self.open_tail(endpoint, &TailSettings::default()).await
    }

    fn reply_path(&self, address: &str) -> Result<String, String> {
        config::check_name("stream", address)?;
        Ok(format!("stream/{address}"))
    }
}
