//! The `connections` section: each connection read strictly by its system's adapter, and
//! the lookups and source checks that routes make against them.

use std::sync::Arc;

use serde_json::Value;

use super::Builder;
use crate::adapter::{Connection, SourceOptions};
use crate::address::Endpoint;
use crate::config::yaml::child;

impl Builder<'_> {
    pub(super) fn connections(&mut self, value: Option<&Value>) {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return;
        };
        let Some(map) = value.as_object() else {
            self.error(
                "connections",
                "`connections` must be a mapping of names to connections",
            );
            return;
        };
        for (name, spec) in map {
            let path = child("connections", name);
            if !crate::address::is_connection_name(name) {
                self.error(
                    &path,
                    "connection names may only hold letters, digits, `_` and `-`",
                );
                self.broken_connections.insert(name.clone());
                continue;
            }
            match self.connection(&path, spec) {
                Some(spec) => {
                    self.connections.insert(name.clone(), spec);
                }
                None => {
                    self.broken_connections.insert(name.clone());
                }
            }
        }
    }

    pub(super) fn connection(&mut self, path: &str, value: &Value) -> Option<Arc<dyn Connection>> {
        let Some(fields) = value.as_object() else {
            self.error(path, "a connection must be a mapping with a `type`");
            return None;
        };
        let known: Vec<&str> = crate::adapter::systems()
            .iter()
            .map(|s| s.type_name)
            .collect();
        let type_path = child(path, "type");
        let Some(type_value) = fields.get("type") else {
            self.error(path, format!("missing `type`; one of {}", known.join(", ")));
            return None;
        };
        let Some(type_name) = type_value.as_str() else {
            self.error(
                &type_path,
                format!("`type` is one word, one of {}", known.join(", ")),
            );
            return None;
        };
        let Some(system) = crate::adapter::system(type_name) else {
            self.error(
                &type_path,
                format!(
                    "unknown connection type `{type_name}`; one of {}",
                    known.join(", ")
                ),
            );
            return None;
        };
        let Some(adapter) = system.adapter else {
            let feature = system.feature.unwrap_or_default();
            self.error(
                &type_path,
                format!(
                    "this bridge was built without the `{feature}` feature; rebuild with `--features {feature}`"
                ),
            );
            return None;
        };
        let mut rest = fields.clone();
        rest.remove("type");
        let connection = self.parse_with(path, &Value::Object(rest), |v| adapter.parse(v))?;
        if let Err(problem) = connection.check() {
            let at = problem
                .field
                .map_or(path.to_owned(), |field| child(path, field));
            self.error(&at, problem.message);
            return None;
        }
        Some(connection)
    }

    /// Checks a source's address and parses its options. A mistake that goes away without
    /// the options is theirs, so it points at `options`; any other at the address.
    pub(super) fn check_source(
        &mut self,
        connection: &dyn Connection,
        endpoint: &Endpoint,
        options: &Value,
        (endpoint_path, options_path): (&str, &str),
    ) -> Option<SourceOptions> {
        let message = match connection.source_options(&endpoint.path, options) {
            Ok(parsed) => return Some(parsed),
            Err(message) => message,
        };
        let options_at_fault = !options.is_null()
            && connection
                .source_options(&endpoint.path, &Value::Null)
                .is_ok();
        self.error(
            if options_at_fault {
                options_path
            } else {
                endpoint_path
            },
            crate::config::wording::in_yaml_terms(&message),
        );
        None
    }

    /// Resolves an address's connection, or records why it cannot.
    pub(super) fn endpoint_connection(
        &mut self,
        path: &str,
        endpoint: &Endpoint,
    ) -> Option<Arc<dyn Connection>> {
        if let Some(spec) = self.connections.get(&endpoint.connection) {
            return Some(spec.clone());
        }
        if !self.broken_connections.contains(&endpoint.connection) {
            let mut known: Vec<&str> = self.connections.keys().map(String::as_str).collect();
            known.sort_unstable();
            let hint = if known.is_empty() {
                "no connections are defined".to_owned()
            } else {
                format!("defined: {}", known.join(", "))
            };
            self.error(
                path,
                format!("unknown connection `{}` ({hint})", endpoint.connection),
            );
        }
        None
    }
}
