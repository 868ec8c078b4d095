//! bridge moves messages between Amazon SQS, Amazon SNS, Apache Kafka, RabbitMQ and Google
//! Cloud Pub/Sub, faithfully: nothing is dropped silently, headers and correlation travel
//! with the message, undeliverable messages reach a dead letter with their context.
//!
//! # Layout
//!
//! - [`message`]: the canonical envelope (body, ordered headers, key, correlation id,
//!   reply-to, message id, content type, timestamp, read-only origin) and its JSON form.
//! - [`ack`]: ack handles and outcomes (ack, retry, reject; dropped = retry).
//! - [`adapter`]: the `Source` / `Sink` / `Connector` contract and one module per system.
//! - [`address`]: the `CONNECTION:PATH` endpoint form shared by the YAML and the CLI.
//! - [`config`]: the routes file, interpolation, validation with every error and its line.
//! - [`expr`]: CEL conditions and Jinja templates over messages.
//! - [`router`]: route loops, fan-out, retries, dead letters, ordering, drain.
//! - [`relay`]: request-reply across brokers with signed correlation tokens.
//! - [`secret`]: secrets that are never printed; the scrubbing of logs.
//! - [`printable`]: message text made safe for a terminal or a log line.
//! - [`shutdown`]: signals to a cancellation token.
//! - [`strict`]: strict reading of configuration values, for `config` and the adapters.
//! - [`cli`]: the `bridge` commands; the only place that prints.
//!
//! docs/architecture.md explains how these fit together.

pub mod ack;
pub mod adapter;
pub mod address;
pub mod cli;
pub mod config;
pub mod dlq;
pub mod expr;
pub mod message;
pub mod printable;
pub mod relay;
pub mod router;
pub mod secret;
pub mod shutdown;
pub mod strict;
pub mod telemetry;
pub mod transform;
