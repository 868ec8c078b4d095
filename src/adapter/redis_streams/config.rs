//! Configuration of a `type: redis` connection (Redis Streams), its endpoint paths and its
//! sources' options.

use serde::Deserialize;

use crate::secret::SecretUrl;

/// A Redis server (`type: redis`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://...` for TLS.
    pub url: SecretUrl,
    /// Sinks trim each stream to about this many entries (`XADD ... MAXLEN ~ N`). Default:
    /// no cap.
    #[serde(default)]
    pub max_len: Option<usize>,
    /// Streams and consumer groups to create at start-up when missing.
    #[serde(default)]
    pub declare: Declarations,
}

impl Config {
    /// A connection to `url` with every other field at its default.
    pub fn with_url(url: &str) -> Config {
        Config {
            url: SecretUrl::new(url),
            max_len: None,
            declare: Declarations::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declarations {
    #[serde(default)]
    pub streams: Vec<StreamDeclaration>,
}

/// A stream to create, with its consumer groups (each reading from the stream's start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDeclaration {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Options of a Redis Streams source (`from.options`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// The consumer group. Default `bridge-ROUTE`; created (reading from the stream's
    /// start) when missing.
    #[serde(default)]
    pub group: Option<String>,
    /// This replica's consumer name in the group. Default the host name and the route,
    /// so a restarted replica finds its own pending entries again.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Entries pending longer than this with another consumer (a replica that crashed)
    /// are claimed, in milliseconds. Default 30000.
    #[serde(default)]
    pub claim_idle_ms: Option<u64>,
}

/// Default of `claim_idle_ms`.
pub const DEFAULT_CLAIM_IDLE_MS: u64 = 30_000;

/// A Redis Streams endpoint path: `stream/KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub stream: String,
}

impl Target {
    pub fn parse(path: &str) -> Result<Target, String> {
        let Some(name) = path.strip_prefix("stream/") else {
            return Err(format!("`{path}` is not stream/KEY"));
        };
        check_name("stream", name)?;
        Ok(Target {
            stream: name.to_owned(),
        })
    }
}

/// Keys, groups and consumer names: 1 to 512 printable characters without spaces.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 512 || name.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "{what} name `{}` must be 1 to 512 printable characters without spaces",
            crate::printable::escape(name)
        ));
    }
    Ok(())
}

/// The consumer group of route `route` when none is given.
pub fn group_name(route: &str) -> String {
    format!("bridge-{route}")
}

/// The consumer of route `route` in this process when none is given: the host name and
/// the route, stable across restarts of one replica and distinct between replicas.
pub fn consumer_name(route: &str) -> String {
    let host = crate::adapter::host_name().unwrap_or_else(|| "bridge".into());
    format!("{host}-{route}")
}
