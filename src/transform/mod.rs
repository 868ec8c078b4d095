//! Transforms: the reshaping of a message on its way to the sinks (`routes[].transform`
//! and `routes[].to[].transform`).
//!
//! Every expression of one transform reads the message as it was before that transform
//! (one [`Scope`]), so the parts cannot see each other's results and the result does not
//! depend on the order they are written in. They apply in a fixed order: header
//! operations (`rename`, `remove`, `keep`, `copy_origin`, `set`), then the envelope fields
//! (`key`, `correlation_id`, `reply_to`, `message_id`, `content_type`), then the body. A
//! failure on one message (a template reading a missing field, a body that is not JSON) is
//! an [`EvalError`] the router dead-letters, with the message as it was received.
//!
//! `bridge-*` headers are bookkeeping (the hop count the loop guard reads, dead-letter
//! context): a transform never removes or renames them and cannot set them.

mod glob;
mod jq;

use bytes::Bytes;

use crate::config::model::TransformModel;
use crate::expr::{EvalError, Scope, Template};
use crate::message::{HeaderValue, Message, reserved};

pub use glob::Glob;
pub use jq::{ALLOWED as JQ_BUILTINS, JqProgram};

/// The envelope fields a transform can set from a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Key,
    CorrelationId,
    ReplyTo,
    MessageId,
    ContentType,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Key => "key",
            Field::CorrelationId => "correlation_id",
            Field::ReplyTo => "reply_to",
            Field::MessageId => "message_id",
            Field::ContentType => "content_type",
        }
    }
}

/// A new body.
#[derive(Debug, Clone)]
pub enum Body {
    Jq(JqProgram),
    Template(Template),
}

/// A checked transform, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    rename: Vec<(String, String)>,
    remove: Vec<Glob>,
    keep: Option<Vec<Glob>>,
    copy_origin: bool,
    set: Vec<(String, Template)>,
    fields: Vec<(Field, Template)>,
    body: Option<Body>,
}

impl Transform {
    /// Checks and compiles `model`; every error comes with the path of its field below
    /// the transform (e.g. `headers.set.tenant`).
    pub fn compile(model: &TransformModel) -> Result<Transform, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut transform = Transform {
            copy_origin: model.headers.copy_origin,
            ..Transform::default()
        };
        let reserved_name = |name: &str| {
            format!(
                "`{name}` is a bridge header (the `bridge-` prefix is reserved for bookkeeping)"
            )
        };
        for (from, to) in &model.headers.rename {
            for name in [from, to] {
                if reserved::is_reserved(name) {
                    errors.push((format!("headers.rename.{from}"), reserved_name(name)));
                } else if name.is_empty() {
                    errors.push((
                        "headers.rename".into(),
                        "a header name cannot be empty".into(),
                    ));
                }
            }
            transform.rename.push((from.clone(), to.clone()));
        }
        transform.remove = globs("remove", &model.headers.remove, &mut errors);
        transform.keep = model
            .headers
            .keep
            .as_ref()
            .map(|patterns| globs("keep", patterns, &mut errors));
        for (name, source) in &model.headers.set {
            let path = format!("headers.set.{name}");
            if reserved::is_reserved(name) {
                errors.push((path, reserved_name(name)));
                continue;
            }
            if name.is_empty() {
                errors.push((path, "a header name cannot be empty".into()));
                continue;
            }
            match Template::compile(source) {
                Ok(template) => transform.set.push((name.clone(), template)),
                Err(message) => errors.push((path, message)),
            }
        }
        for (field, source) in [
            (Field::Key, &model.key),
            (Field::CorrelationId, &model.correlation_id),
            (Field::ReplyTo, &model.reply_to),
            (Field::MessageId, &model.message_id),
            (Field::ContentType, &model.content_type),
        ] {
            let Some(source) = source else { continue };
            match Template::compile(source) {
                Ok(template) => transform.fields.push((field, template)),
                Err(message) => errors.push((field.name().into(), message)),
            }
        }
        if let Some(body) = &model.body {
            match (&body.jq, &body.template) {
                (Some(program), None) => match JqProgram::compile(program) {
                    Ok(program) => transform.body = Some(Body::Jq(program)),
                    Err(message) => errors.push(("body.jq".into(), message)),
                },
                (None, Some(source)) => match Template::compile(source) {
                    Ok(template) => transform.body = Some(Body::Template(template)),
                    Err(message) => errors.push(("body.template".into(), message)),
                },
                _ => errors.push((
                    "body".into(),
                    "give exactly one of `jq` or `template`".into(),
                )),
            }
        }
        if errors.is_empty() {
            Ok(transform)
        } else {
            Err(errors)
        }
    }

    /// Whether the transform changes the body.
    pub fn sets_body(&self) -> bool {
        self.body.is_some()
    }

    /// The message of `scope` reshaped. `max_bytes` bounds a body made by jq.
    pub fn apply(&self, scope: &Scope<'_>, max_bytes: usize) -> Result<Message, EvalError> {
        let received = scope.message();
        // Every expression first, against the message as it came in.
        let mut set = Vec::with_capacity(self.set.len());
        for (name, template) in &self.set {
            set.push((name, template.render_in(scope)?));
        }
        let mut fields = Vec::with_capacity(self.fields.len());
        for (field, template) in &self.fields {
            fields.push((*field, template.render_in(scope)?));
        }
        let body = match &self.body {
            None => None,
            Some(Body::Jq(program)) => Some(Bytes::from(
                program
                    .run(&received.body, max_bytes)
                    .map_err(EvalError::Failed)?,
            )),
            Some(Body::Template(template)) => Some(Bytes::from(template.render_in(scope)?)),
        };
        let mut message = received.clone();
        let headers = &mut message.headers;
        for (from, to) in &self.rename {
            if headers.get(from).is_some() {
                headers.remove(to);
                headers.rename(from, to);
            }
        }
        if !self.remove.is_empty() {
            headers.retain_names(|name| {
                reserved::is_reserved(name) || !self.remove.iter().any(|g| g.matches(name))
            });
        }
        if let Some(keep) = &self.keep {
            headers.retain_names(|name| {
                reserved::is_reserved(name) || keep.iter().any(|g| g.matches(name))
            });
        }
        if self.copy_origin
            && let Some(origin) = received.origin()
        {
            for (name, value) in origin.variables() {
                headers.set(
                    &format!("origin-{name}"),
                    HeaderValue::Text(value.to_text()),
                );
            }
        }
        for (name, value) in set {
            if value.is_empty() {
                headers.remove(name);
            } else {
                headers.set(name, HeaderValue::Text(value));
            }
        }
        for (field, value) in fields {
            let value = (!value.is_empty()).then_some(value);
            match field {
                Field::Key => message.key = value.map(Bytes::from),
                Field::CorrelationId => message.correlation_id = value,
                Field::ReplyTo => message.reply_to = value,
                Field::MessageId => message.message_id = value,
                Field::ContentType => message.content_type = value,
            }
        }
        if let Some(body) = body {
            if matches!(self.body, Some(Body::Jq(_)))
                && !self.fields.iter().any(|(f, _)| *f == Field::ContentType)
            {
                message.content_type = Some("application/json".to_owned());
            }
            message.body = body;
        }
        Ok(message)
    }
}

/// The globs of `headers.WHICH`, with an error for each bad one.
fn globs(which: &str, patterns: &[String], errors: &mut Vec<(String, String)>) -> Vec<Glob> {
    let mut globs = Vec::with_capacity(patterns.len());
    for (i, pattern) in patterns.iter().enumerate() {
        match Glob::new(pattern) {
            Ok(glob) => globs.push(glob),
            Err(message) => errors.push((format!("headers.{which}[{i}]"), message)),
        }
    }
    globs
}

#[cfg(test)]
mod tests;
