//! The `settings` section, and the checks of values that several sections share (limits,
//! retry policies).

use serde_json::Value;

use super::Builder;
use crate::adapter::Connection;
use crate::config::model::{LimitsModel, RetryPolicy, Settings};
use crate::config::yaml::child;
use crate::message::limits::Limits;

/// `off`, or an address `bridge run` can bind.
pub fn check_listen(listen: &str) -> Result<(), String> {
    if listen == "off" || listen.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    // A host name is resolved only when binding; insist on HOST:PORT with a numeric port
    // and a host that can be a name (not `http://HOST`).
    let is_host_name = |host: &str| {
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    match listen.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && is_host_name(host) && port.parse::<u16>().is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{listen}` is not `HOST:PORT` or `off`; write e.g. `127.0.0.1:9464` or `0.0.0.0:9464`"
        )),
    }
}

impl Builder<'_> {
    pub(super) fn settings(&mut self, value: Option<&Value>) -> Settings {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Settings::default();
        };
        let settings = self
            .parse::<Settings>("settings", value)
            .unwrap_or_default();
        if settings.max_hops == 0 {
            self.error("settings.max_hops", "max_hops must be at least 1");
        }
        if let Err(message) = check_listen(&settings.http.listen) {
            self.error("settings.http.listen", message);
        }
        self.limits_at_least_one("settings.limits", Some(&settings.limits));
        if settings.http.backlog_interval.is_zero() {
            self.error(
                "settings.http.backlog_interval",
                "backlog_interval must be longer than zero",
            );
        }
        settings
    }

    /// Refuses a limit of 0 (it would refuse every message).
    pub(super) fn limits_at_least_one(&mut self, path: &str, limits: Option<&LimitsModel>) -> bool {
        let Some(limits) = limits else {
            return true;
        };
        let fields = [
            ("max_message_bytes", limits.max_message_bytes),
            ("max_headers", limits.max_headers),
            ("max_header_name_bytes", limits.max_header_name_bytes),
            ("max_header_value_bytes", limits.max_header_value_bytes),
            ("max_open_sinks", limits.max_open_sinks),
        ];
        let mut ok = true;
        for (field, value) in fields {
            if value == Some(0) {
                self.error(&child(path, field), format!("{field} must be at least 1"));
                ok = false;
            }
        }
        ok
    }

    /// A route's limits: its own, else the file's settings, else the defaults (the largest
    /// message of the source's system).
    pub(super) fn resolve_limits(&self, route: &LimitsModel, source: &dyn Connection) -> Limits {
        let settings = &self.limits;
        let defaults = Limits::with_max_message_bytes(source.max_message_bytes());
        Limits {
            max_message_bytes: route
                .max_message_bytes
                .or(settings.max_message_bytes)
                .unwrap_or(defaults.max_message_bytes),
            max_headers: route
                .max_headers
                .or(settings.max_headers)
                .unwrap_or(defaults.max_headers),
            max_header_name_bytes: route
                .max_header_name_bytes
                .or(settings.max_header_name_bytes)
                .unwrap_or(defaults.max_header_name_bytes),
            max_header_value_bytes: route
                .max_header_value_bytes
                .or(settings.max_header_value_bytes)
                .unwrap_or(defaults.max_header_value_bytes),
        }
    }

    pub(super) fn retry(&mut self, path: &str, retry: &RetryPolicy) -> bool {
        let mut ok = true;
        if retry.max_attempts == 0 {
            self.error(
                &child(path, "max_attempts"),
                "max_attempts must be at least 1",
            );
            ok = false;
        }
        if retry.initial_backoff > retry.max_backoff {
            self.error(
                &child(path, "initial_backoff"),
                "initial_backoff is longer than max_backoff",
            );
            ok = false;
        }
        if retry.multiplier.is_nan() || retry.multiplier < 1.0 {
            self.error(
                &child(path, "multiplier"),
                "multiplier must be at least 1.0",
            );
            ok = false;
        }
        ok
    }
}
