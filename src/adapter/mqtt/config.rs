//! Configuration of a `type: mqtt` connection (MQTT 3.1.1 or 5), its endpoint paths and
//! its sources' options.

use serde::Deserialize;

use crate::adapter::tls::TlsFiles;
use crate::secret::{Secret, SecretUrl};

/// An MQTT broker (`type: mqtt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `mqtt://[USER:PASSWORD@]HOST[:PORT]` (port 1883), or `mqtts://...` for TLS (8883).
    pub url: SecretUrl,
    /// The protocol version: `"5"` (default) or `"3.1.1"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// User name and password (both or neither; instead of the URL's).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// CA, client certificate and key for `mqtts://`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The start of every client id this connection uses; the route name (sources) or
    /// `sink` and a random part follow. Default `bridge-HOSTNAME`, so that replicas on
    /// different hosts have sessions of their own.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Sinks publish with the retain flag (the broker keeps the last message of each topic
    /// for new subscribers).
    #[serde(default)]
    pub retain: bool,
    /// MQTT 3.1.1 only (its messages are a payload and nothing else): a message with
    /// headers, a key, ids or a content type is published as bridge's JSON message form,
    /// and sources read that form back. Without it such a message is refused.
    #[serde(default)]
    pub pack: bool,
    /// Seconds between keep-alive pings (at least 5). Default 30.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
}

fn default_keep_alive() -> u64 {
    30
}

/// The MQTT protocol version of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[serde(rename = "3.1.1")]
    V311,
    #[default]
    #[serde(rename = "5")]
    V5,
}

impl Config {
    /// A connection to `url` with every other field at its default.
    pub fn with_url(url: &str) -> Config {
        Config {
            url: SecretUrl::new(url),
            protocol: Protocol::default(),
            username: None,
            password: None,
            tls: None,
            client_id: None,
            retain: false,
            pack: false,
            keep_alive_s: default_keep_alive(),
        }
    }

    /// The start of this connection's client ids.
    pub fn client_id_prefix(&self) -> String {
        self.client_id.clone().unwrap_or_else(|| {
            let host = crate::adapter::host_name().unwrap_or_else(|| "host".into());
            format!("bridge-{host}")
        })
    }
}

/// Options of an MQTT source (`from.options`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// Subscribe as a member of this shared subscription (`$share/GROUP/FILTER`), so
    /// replicas split the messages.
    #[serde(default)]
    pub share_group: Option<String>,
    /// The session's client id. Default the connection's `client_id` (or
    /// `bridge-HOSTNAME`) and the route name: stable across restarts of one replica, its
    /// own for each host.
    #[serde(default)]
    pub client_id: Option<String>,
    /// How long the broker keeps the session while bridge is away (MQTT 5), in seconds.
    /// Default 604800 (a week); MQTT 3.1.1 sessions last until the broker drops them.
    #[serde(default)]
    pub session_expiry_s: Option<u32>,
}

/// Default of `session_expiry_s`.
pub const DEFAULT_SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// An MQTT endpoint path: `topic/NAME` (a topic filter with `+` and `#` for sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub topic: String,
}

impl Target {
    pub fn parse(path: &str, wildcards: bool) -> Result<Target, String> {
        let Some(topic) = path.strip_prefix("topic/") else {
            return Err(format!("`{path}` is not topic/NAME"));
        };
        check_topic(topic, wildcards)?;
        Ok(Target {
            topic: topic.to_owned(),
        })
    }
}

/// A topic name (`wildcards`: or filter): 1 to 65535 bytes, no NUL or control
/// characters, `+` only as a whole level, `#` only as the whole last level; a name
/// without wildcards, and never a `$share/` filter (see `share_group`).
pub fn check_topic(topic: &str, wildcards: bool) -> Result<(), String> {
    let shown = || crate::printable::escape(topic);
    if topic.is_empty() || topic.len() > 65_535 || topic.chars().any(char::is_control) {
        return Err(format!(
            "topic `{}` must be 1 to 65535 bytes without control characters",
            shown()
        ));
    }
    if topic.starts_with("$share/") {
        return Err(format!(
            "topic `{}`: give a shared subscription's group as the source option `share_group`",
            shown()
        ));
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (n, level) in levels.iter().enumerate() {
        let has_plus = level.contains('+');
        let has_hash = level.contains('#');
        if !wildcards && (has_plus || has_hash) {
            return Err(format!(
                "topic `{}` holds a wildcard (`+` or `#`), which only a source may use",
                shown()
            ));
        }
        if has_plus && *level != "+" {
            return Err(format!("topic `{}`: `+` must be a whole level", shown()));
        }
        if has_hash && (*level != "#" || n + 1 != levels.len()) {
            return Err(format!(
                "topic `{}`: `#` must be the whole last level",
                shown()
            ));
        }
    }
    Ok(())
}

/// Whether topic `name` matches topic filter `filter` (MQTT's rules: `+` one level, `#`
/// the rest; topics starting with `$` match no filter starting with a wildcard). Linear.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut names = name.split('/');
    for level in filter.split('/') {
        match (level, names.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (level, Some(name)) if level == name => {}
            _ => return false,
        }
    }
    names.next().is_none()
}

/// Client ids, share groups: 1 to 128 characters of letters, digits, `-`, `_` and `.`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(format!(
            "{what} `{}` must be 1 to 128 letters, digits, `-`, `_` or `.`",
            crate::printable::escape(name)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_filters() {
        assert_eq!(
            Target::parse("topic/a/+/c", true).unwrap().topic,
            "a/+/c".to_owned()
        );
        assert!(Target::parse("topic/a/#", true).is_ok());
        assert!(Target::parse("topic/a/+/c", false).is_err());
        assert!(Target::parse("topic/a/b#", true).is_err());
        assert!(Target::parse("topic/a/#/c", true).is_err());
        assert!(Target::parse("topic/a+/c", true).is_err());
        assert!(Target::parse("topic/$share/g/a", true).is_err());
        assert!(Target::parse("queue/a", true).is_err());
        assert!(Target::parse("topic/", true).is_err());
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a/b", "a/b"));
    }
}
