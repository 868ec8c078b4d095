//! One route: its source and options, its condition, its sinks and dead letter, and the
//! checks that need the whole route.

use std::collections::HashMap;

use serde_json::Value;

use super::{Builder, RoutePlan, SinkPlan, SourcePlan};
use crate::adapter::{Role, SourceOptions};
use crate::address::Endpoint;
use crate::config::model::{Ordering, PathValues, RouteModel, Select, SinkRef};
use crate::config::yaml::{child, index};
use crate::expr::{Condition, Template};
use crate::message::HopCounting;

/// Replaces template expressions and blocks by a placeholder so an adapter can check the rest.
fn placeholder_path(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    loop {
        let next = [("{{", "}}"), ("{%", "%}")]
            .into_iter()
            .filter_map(|(open, close)| rest.find(open).map(|at| (at, close)))
            .min_by_key(|(at, _)| *at);
        let Some((start, close)) = next else { break };
        out.push_str(&rest[..start]);
        out.push_str("tmpl");
        match rest[start..].find(close) {
            Some(end) => rest = &rest[start + end + close.len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

impl Builder<'_> {
    pub(super) fn condition(&mut self, path: &str, source: Option<&String>) -> Option<Condition> {
        let source = source?;
        match Condition::compile(source) {
            Ok(condition) => Some(condition),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    pub(super) fn sink(&mut self, path: &str, sink: &SinkRef) -> Option<SinkPlan> {
        let endpoint_path = if sink.key.is_some()
            || sink.when.is_some()
            || sink.optional
            || sink.transform.is_some()
            || sink.rate.is_some()
            || sink.path_values != PathValues::Name
        {
            child(path, "endpoint")
        } else {
            path.to_owned()
        };
        let endpoint: Endpoint = match sink.endpoint.parse() {
            Ok(endpoint) => endpoint,
            Err(error) => {
                let message = if sink
                    .endpoint
                    .split(':')
                    .next()
                    .is_some_and(|c| c.contains("{{"))
                {
                    "the connection part of a sink address cannot be a template".to_owned()
                } else {
                    error.to_string()
                };
                self.error(&endpoint_path, message);
                return None;
            }
        };
        let spec = self.endpoint_connection(&endpoint_path, &endpoint);
        let one_name = sink.path_values == PathValues::Name;
        let template = match Template::compile_path(&endpoint.path, one_name) {
            Ok(template) => Some(template),
            Err(message) => {
                self.error(&endpoint_path, message);
                None
            }
        };
        if let Some(spec) = &spec
            && let Err(message) = spec.check_endpoint(&placeholder_path(&endpoint.path), Role::Sink)
        {
            self.error(&endpoint_path, message);
        }
        let key = match &sink.key {
            Some(source) => match Template::compile(source) {
                Ok(key) => Some(key),
                Err(message) => {
                    self.error(&child(path, "key"), message);
                    None
                }
            },
            None => None,
        };
        let when = self.condition(&child(path, "when"), sink.when.as_ref());
        let transform = self.transform(&child(path, "transform"), sink.transform.as_ref());
        let rate = self.rate(&child(path, "rate"), sink.rate.as_ref());
        if sink.key.is_some() && key.is_none() || sink.when.is_some() && when.is_none() {
            return None;
        }
        let (Ok(transform), Ok(rate)) = (transform, rate) else {
            return None;
        };
        Some(SinkPlan {
            connection: endpoint.connection,
            path: template?,
            key,
            when,
            optional: sink.optional,
            to_reply_address: false,
            transform,
            rate,
        })
        .filter(|_| spec.is_some())
    }

    pub(super) fn route(
        &mut self,
        path: &str,
        value: &Value,
        names: &mut HashMap<String, String>,
    ) -> Option<RoutePlan> {
        let model: RouteModel = self.parse(path, value)?;
        let mut ok = true;
        if model.name.trim().is_empty() {
            self.error(&child(path, "name"), "route names cannot be empty");
            ok = false;
        } else if let Some(first) = names.insert(model.name.clone(), path.to_owned()) {
            self.error(
                &child(path, "name"),
                format!("route name `{}` is already used by {first}", model.name),
            );
            ok = false;
        }
        let from_path = if model.from.options.is_null() {
            child(path, "from")
        } else {
            child(&child(path, "from"), "endpoint")
        };
        let mut source_spec = None;
        let source = match model.from.endpoint.parse::<Endpoint>() {
            Ok(endpoint) => {
                source_spec = self.endpoint_connection(&from_path, &endpoint);
                let options_path = child(&child(path, "from"), "options");
                let options = match &source_spec {
                    Some(spec) => {
                        let options = self.check_source(
                            spec.as_ref(),
                            &endpoint,
                            &model.from.options,
                            (&from_path, &options_path),
                        );
                        ok &= options.is_some();
                        options.unwrap_or_default()
                    }
                    None => SourceOptions::none(),
                };
                Some(SourcePlan { endpoint, options })
            }
            Err(error) => {
                self.error(&from_path, error.to_string());
                None
            }
        };
        let when = self.condition(&child(path, "when"), model.when.as_ref());
        ok &= model.when.is_none() || when.is_some();
        let to_path = child(path, "to");
        if model.to.0.is_empty() {
            self.error(&to_path, "a route needs at least one sink in `to`");
            ok = false;
        }
        let single = model.to.0.len() == 1 && !value.get("to").is_some_and(Value::is_array);
        let mut sinks = Vec::new();
        for (i, sink) in model.to.0.iter().enumerate() {
            let sink_path = if single {
                to_path.clone()
            } else {
                index(&to_path, i)
            };
            match self.sink(&sink_path, sink) {
                Some(sink) => sinks.push(sink),
                None => ok = false,
            }
        }
        if model.select == Select::First {
            // Under first match, a sink without `when` takes every message: any sink after
            // it could never receive one.
            if let Some(at) = model.to.0.iter().position(|s| s.when.is_none())
                && at + 1 < model.to.0.len()
            {
                self.error(
                    &index(&to_path, at + 1),
                    format!("with `select: first`, this sink is never reached: sink {at} has no `when` and takes every message"),
                );
                ok = false;
            }
        }
        if !sinks.is_empty() && sinks.iter().all(|s| s.optional) {
            self.error(
                &to_path,
                "every sink is optional; mark at least one as required",
            );
            ok = false;
        }
        let dead_letter = match &model.dead_letter {
            Some(address) => {
                let plan = self.sink(
                    &child(path, "dead_letter"),
                    &SinkRef {
                        endpoint: address.clone(),
                        ..SinkRef::default()
                    },
                );
                ok &= plan.is_some();
                plan
            }
            None => {
                if let (Some(spec), Some(source)) = (&source_spec, &source)
                    && let Err(reason) = spec
                        .check_reject_without_dead_letter(&source.endpoint.path, &source.options)
                {
                    self.error(
                        path,
                        format!("route `{}` needs a `dead_letter`: {reason}", model.name),
                    );
                    ok = false;
                }
                None
            }
        };
        ok &= self.retry(&child(path, "retry"), &model.retry);
        let ordering_key = match &model.ordering_key {
            Some(_) if model.ordering != Ordering::Key => {
                self.error(
                    &child(path, "ordering_key"),
                    "ordering_key needs `ordering: key`",
                );
                ok = false;
                None
            }
            Some(source) => match Template::compile(source) {
                Ok(template) => Some(template),
                Err(message) => {
                    self.error(&child(path, "ordering_key"), message);
                    ok = false;
                    None
                }
            },
            None => None,
        };
        if model.ordering == Ordering::Key
            && model.ordering_key.is_none()
            && let (Some(spec), Some(source)) = (&source_spec, &source)
            && !spec.source_has_keys(&source.endpoint.path)
        {
            self.warning(
                &child(path, "ordering"),
                format!(
                    "`ordering: key` on a {} source that delivers no keys of its own: only messages that carry one are ordered; set `ordering_key` (e.g. the template of the sink's key) to order the others",
                    spec.type_name()
                ),
            );
        }
        let transform = self.transform(&child(path, "transform"), model.transform.as_ref());
        let rate = self.rate(&child(path, "rate"), model.rate.as_ref());
        ok &= transform.is_ok() && rate.is_ok();
        if model.max_in_flight == 0 {
            self.error(
                &child(path, "max_in_flight"),
                "max_in_flight must be at least 1",
            );
            ok = false;
        }
        let dedup = match &model.dedup {
            Some(dedup) => {
                let plan = self.dedup(&child(path, "dedup"), dedup);
                ok &= plan.is_some();
                plan
            }
            None => None,
        };
        if let Some(limits) = &model.limits
            && limits.max_open_sinks.is_some()
        {
            self.error(
                &child(&child(path, "limits"), "max_open_sinks"),
                "max_open_sinks is a limit of the whole process: set it under settings.limits",
            );
            ok = false;
        }
        ok &= self.limits_at_least_one(&child(path, "limits"), model.limits.as_ref());
        let route_limits = model.limits.clone().unwrap_or_default();
        let limits = source_spec
            .as_ref()
            .map(|spec| self.resolve_limits(&route_limits, spec.as_ref()));
        let reply = match &model.reply {
            Some(reply) => {
                let plan = self.reply(
                    &child(path, "reply"),
                    reply,
                    source_spec.as_deref(),
                    dead_letter.is_some(),
                    &route_limits,
                );
                ok &= plan.is_some();
                plan
            }
            None => None,
        };
        if !ok {
            return None;
        }
        Some(RoutePlan {
            name: model.name,
            source: source?,
            when,
            sinks,
            dead_letter,
            retry: model.retry,
            ordering: model.ordering,
            max_in_flight: model.max_in_flight,
            count_hops: model.count_hops,
            // Resolved once every route is known (`loops::resolve`).
            hop_counting: HopCounting::Always,
            reply,
            dedup,
            limits: limits?,
            transform: transform.ok()?,
            rate: rate.ok()?,
            select: model.select,
            ordering_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn placeholder_replaces_each_template_expression() {
        assert_eq!(
            placeholder_path("exchange/{{ headers.x }}/k-{{key}}"),
            "exchange/tmpl/k-tmpl"
        );
        assert_eq!(
            placeholder_path("q-{% if key %}a{% endif %}"),
            "q-tmplatmpl"
        );
    }
}
