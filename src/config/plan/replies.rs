//! A route's `reply` (the reply half of request-reply) and `dedup` sections.

use super::{Builder, DedupPlan, ReplyPlan, SourcePlan};
use crate::adapter::Connection;
use crate::address::Endpoint;
use crate::config::model::{DedupModel, LimitsModel, ReplyModel};
use crate::config::yaml::child;
use crate::expr::Template;
use crate::message::HopCounting;

/// Whether `url` is a Redis URL this build can use. The error never shows its password.
fn check_redis_url(url: &str) -> Result<(), String> {
    #[cfg(feature = "redis")]
    return redis::Client::open(url).map(drop).map_err(|e| {
        crate::secret::hide_url_secrets(&format!("not a usable Redis URL: {e}"), url)
    });
    #[cfg(not(feature = "redis"))]
    return Err(format!(
        "this build of bridge has no Redis support (cargo feature `redis`) for `{}`",
        crate::secret::redact_url(url)
    ));
}

impl Builder<'_> {
    /// Checks a route's `dedup`.
    pub(super) fn dedup(&mut self, path: &str, model: &DedupModel) -> Option<DedupPlan> {
        let mut ok = true;
        let key = match &model.key {
            None => None,
            Some(source) => match Template::compile(source) {
                Ok(template) => Some(template),
                Err(message) => {
                    self.error(&child(path, "key"), message);
                    ok = false;
                    None
                }
            },
        };
        if model.window.is_zero() {
            self.error(
                &child(path, "window"),
                "the dedup window must be longer than zero",
            );
            ok = false;
        }
        if model.capacity == 0 {
            self.error(&child(path, "capacity"), "capacity must be at least 1");
            ok = false;
        }
        let redis = match model.store.expose() {
            "memory" => None,
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                if let Err(problem) = check_redis_url(url) {
                    self.error(&child(path, "store"), problem);
                    ok = false;
                }
                Some(model.store.clone())
            }
            _ => {
                self.error(
                    &child(path, "store"),
                    format!(
                        "unknown store `{}`: write `memory` or a `redis://HOST:PORT/DB` URL",
                        model.store.redacted()
                    ),
                );
                ok = false;
                None
            }
        };
        ok.then(|| DedupPlan {
            key,
            window: model.window,
            redis,
            capacity: model.capacity,
        })
    }

    /// Checks the reply half of a request-reply route.
    pub(super) fn reply(
        &mut self,
        path: &str,
        reply: &ReplyModel,
        requests_from: Option<&dyn Connection>,
        has_dead_letter: bool,
        route_limits: &LimitsModel,
    ) -> Option<ReplyPlan> {
        let from_path = if reply.from.options.is_null() {
            child(path, "from")
        } else {
            child(&child(path, "from"), "endpoint")
        };
        let endpoint: Endpoint = match reply.from.endpoint.parse() {
            Ok(endpoint) => endpoint,
            Err(error) => {
                self.error(&from_path, error.to_string());
                return None;
            }
        };
        let spec = self.endpoint_connection(&from_path, &endpoint)?;
        let options_path = child(&child(path, "from"), "options");
        let options = self.check_source(
            spec.as_ref(),
            &endpoint,
            &reply.from.options,
            (&from_path, &options_path),
        );
        let mut ok = options.is_some();
        let options = options.unwrap_or_default();
        if !has_dead_letter
            && let Err(reason) = spec.check_reject_without_dead_letter(&endpoint.path, &options)
        {
            self.error(
                path,
                format!(
                    "a reply route needs a `dead_letter` for replies it cannot relay: {reason}"
                ),
            );
            ok = false;
        }
        if let Some(requests) = requests_from
            && !requests.accepts_replies()
        {
            self.error(
                path,
                format!("{} cannot receive relayed replies", requests.type_name()),
            );
            ok = false;
        }
        let address = match (&reply.address, spec.reply_address(&endpoint.path)) {
            (Some(address), _) => Some(address.clone()),
            (None, Some(address)) => Some(address),
            (None, None) => {
                self.error(path, format!("give `reply.address`: the reply-to repliers answer to (for `{endpoint}`, the topic it subscribes to)"));
                None
            }
        };
        if reply.timeout.is_zero() {
            self.error(
                &child(path, "timeout"),
                "the reply timeout must be longer than zero",
            );
            ok = false;
        } else if reply.timeout > crate::relay::MAX_REPLY_TIMEOUT {
            self.error(
                &child(path, "timeout"),
                "the reply timeout is at most 30 days (720h)",
            );
            ok = false;
        }
        let allow = match &reply.allow {
            None => Some(crate::relay::ReplyAllow::default()),
            Some(patterns) if patterns.is_empty() => {
                self.error(
                    &child(path, "allow"),
                    "an empty list allows no reply at all; list `default` or patterns",
                );
                None
            }
            Some(patterns) => match crate::relay::ReplyAllow::compile(patterns) {
                Ok(allow) => Some(allow),
                Err(message) => {
                    self.error(&child(path, "allow"), message);
                    None
                }
            },
        };
        let dedup = match &reply.dedup {
            None => Some(None),
            Some(model) => self
                .dedup(
                    &child(path, "dedup"),
                    &DedupModel {
                        key: None,
                        window: reply.timeout,
                        store: model.store.clone(),
                        capacity: model.capacity,
                    },
                )
                .map(Some),
        };
        let limits = self.resolve_limits(route_limits, spec.as_ref());
        (ok && address.is_some()).then_some(())?;
        Some(ReplyPlan {
            source: SourcePlan { endpoint, options },
            address: address.unwrap_or_default(),
            timeout: reply.timeout,
            unmatched: reply.unmatched,
            hop_counting: HopCounting::Always,
            allow: allow?,
            dedup: dedup?,
            limits,
        })
    }
}
