//! Configuration of a `type: nats` connection (NATS with JetStream), its endpoint paths and
//! its sources' options.

use std::path::PathBuf;

use serde::Deserialize;

use crate::adapter::tls::TlsFiles;
use crate::secret::{Secret, SecretUrl};

/// A NATS server or cluster (`type: nats`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `nats://HOST:PORT` (`tls://HOST:PORT` requires TLS); several servers separated by
    /// commas. A `user:password@` or `token@` in it is used as credentials.
    pub url: SecretUrl,
    /// Token authentication.
    #[serde(default)]
    pub token: Option<Secret>,
    /// User and password authentication (both or neither).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// NKey authentication: the user's seed (`SU...`).
    #[serde(default)]
    pub nkey_seed: Option<Secret>,
    /// Decentralized (JWT) authentication: a `.creds` file with the user's JWT and seed.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// TLS: a CA to trust instead of the system's, and a client certificate.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The connection's name as the server shows it. Default `bridge`.
    #[serde(default = "default_client_name")]
    pub client_name: String,
    /// How long a JetStream publish waits for its acknowledgement, and a JetStream API call
    /// for its answer, in milliseconds. Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Streams and consumers to create at start-up when missing.
    #[serde(default)]
    pub declare: Declarations,
}

fn default_client_name() -> String {
    "bridge".into()
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl Config {
    /// A connection to `url` with every other field at its default.
    pub fn with_url(url: &str) -> Config {
        Config {
            url: SecretUrl::new(url),
            token: None,
            username: None,
            password: None,
            nkey_seed: None,
            credentials_file: None,
            tls: None,
            client_name: default_client_name(),
            timeout_ms: default_timeout_ms(),
            declare: Declarations::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declarations {
    #[serde(default)]
    pub streams: Vec<StreamDeclaration>,
    #[serde(default)]
    pub consumers: Vec<ConsumerDeclaration>,
}

/// A stream to create.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDeclaration {
    pub name: String,
    /// The subjects it captures (wildcards allowed).
    pub subjects: Vec<String>,
    /// Seconds in which a second message with the same `Nats-Msg-Id` is dropped. Default 120.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_seconds: u64,
    /// `file` (default) or `memory`.
    #[serde(default)]
    pub storage: Storage,
    /// Seconds a message is kept; 0 (default) keeps it until limits remove it.
    #[serde(default)]
    pub max_age_seconds: u64,
}

fn default_duplicate_window() -> u64 {
    120
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    #[default]
    File,
    Memory,
}

/// A durable pull consumer to create (sources create their own when missing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerDeclaration {
    pub stream: String,
    pub name: String,
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Seconds before an unacknowledged message is delivered again. Default 30.
    #[serde(default = "default_ack_wait")]
    pub ack_wait_seconds: u64,
}

pub fn default_ack_wait() -> u64 {
    30
}

/// Where a stream's consumer starts the first time it is created.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Deliver {
    /// Every message the stream holds.
    #[default]
    All,
    /// Only messages stored after the consumer was created.
    New,
}

/// Options of a NATS source (`from.options`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// The durable consumer's name. Default `bridge-ROUTE` (characters a consumer name
    /// cannot hold become `-`).
    #[serde(default)]
    pub consumer: Option<String>,
    /// Only messages on this subject (wildcards allowed), when the consumer is created.
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Seconds before a message that is not acknowledged is delivered again; bridge sends
    /// in-progress acknowledgements while it holds one. Default 30.
    #[serde(default)]
    pub ack_wait_seconds: Option<u64>,
    /// Where a new consumer starts: `all` (default) or `new`.
    #[serde(default)]
    pub deliver: Deliver,
}

/// A NATS endpoint path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `stream/NAME`: a JetStream stream (source; tail).
    Stream(String),
    /// `subject/SUBJECT`: JetStream publish, confirmed by the stream that captures the
    /// subject (sink); a core subscription (tail).
    Subject(String),
    /// `core/SUBJECT`: core NATS publish, at most once (sink); a core subscription (tail).
    Core(String),
}

/// Characters a stream or consumer name cannot hold.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !".*>/\\".contains(c))
}

/// A subject to publish to: dot-separated non-empty tokens of printable ASCII, no
/// wildcards, not a system subject (`$JS.API.>`, `$SYS.>`, ...: with bridge's
/// credentials a message there could delete a stream).
pub fn check_publish_subject(subject: &str) -> Result<(), String> {
    check_subject(subject, false)?;
    if subject.starts_with('$') {
        return Err(format!(
            "bridge does not publish to NATS system subject `{subject}` (subjects starting with `$`)"
        ));
    }
    Ok(())
}

/// A subject to subscribe to: wildcards `*` (one token) and `>` (the rest) allowed.
pub fn check_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    for (i, token) in tokens.iter().enumerate() {
        let ok = !token.is_empty()
            && token.chars().all(|c| c.is_ascii_graphic())
            && match *token {
                "*" => wildcards,
                ">" => wildcards && i == last,
                _ => !token.contains(['*', '>']),
            };
        if !ok {
            return Err(format!(
                "`{subject}` is not a NATS subject{}: dot-separated tokens of printable ASCII{}",
                if wildcards { "" } else { " to publish to" },
                if wildcards {
                    ", `*` for one token, `>` at the end"
                } else {
                    ", no wildcards"
                }
            ));
        }
    }
    Ok(())
}

impl Target {
    pub fn parse(path: &str) -> Result<Target, String> {
        let bad = || {
            format!("`{path}` is not a NATS path; use stream/NAME, subject/SUBJECT or core/SUBJECT")
        };
        let (kind, name) = path.split_once('/').ok_or_else(bad)?;
        match kind {
            "stream" if valid_name(name) => Ok(Target::Stream(name.to_owned())),
            "stream" => Err(format!(
                "`{name}` is not a stream name (printable ASCII without `.`, `*`, `>`, `/`, `\\`)"
            )),
            "subject" => check_subject(name, true).map(|()| Target::Subject(name.to_owned())),
            "core" => check_subject(name, true).map(|()| Target::Core(name.to_owned())),
            _ => Err(bad()),
        }
    }
}

/// The default durable consumer name of a route's source.
pub fn consumer_name(route: &str) -> String {
    let name: String = format!("bridge-{route}")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !".*>/\\".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.chars().take(255).collect()
}

/// Checks a consumer or stream name given in the routes file.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a {what} name (printable ASCII without `.`, `*`, `>`, `/`, `\\`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_streams_subjects_and_core_subjects() {
        assert_eq!(
            Target::parse("stream/ORDERS"),
            Ok(Target::Stream("ORDERS".into()))
        );
        assert_eq!(
            Target::parse("subject/orders.eu"),
            Ok(Target::Subject("orders.eu".into()))
        );
        assert_eq!(
            Target::parse("core/_INBOX.abc"),
            Ok(Target::Core("_INBOX.abc".into()))
        );
        assert!(Target::parse("stream/a.b").is_err());
        assert!(Target::parse("subject/a..b").is_err());
        assert!(Target::parse("subject/a b").is_err());
        assert!(Target::parse("queue/x").is_err());
        assert!(Target::parse("subject/a.>.b").is_err());
    }

    #[test]
    fn publishing_refuses_wildcards_and_system_subjects() {
        assert!(check_publish_subject("orders.eu").is_ok());
        assert!(check_publish_subject("orders.*").is_err());
        assert!(check_publish_subject("orders.>").is_err());
        assert!(check_publish_subject("$JS.API.STREAM.DELETE.ORDERS").is_err());
        assert!(check_publish_subject("$SYS.REQ.SERVER.PING").is_err());
        assert!(check_subject("orders.*.created", true).is_ok());
        assert!(check_subject("orders.>", true).is_ok());
    }

    #[test]
    fn default_consumer_names_replace_what_a_name_cannot_hold() {
        assert_eq!(consumer_name("orders to kafka"), "bridge-orders-to-kafka");
        assert_eq!(consumer_name("a.b/c"), "bridge-a-b-c");
        assert!(check_name("consumer", &consumer_name("x*>")).is_ok());
    }
}
