//! `bridge explain FILE --route NAME MESSAGE.json` and `bridge test FILE CASES.yaml`: what a
//! route does with a message, without connecting to anything (docs/cli.md#explain).
//!
//! The message is the JSON form of `tail --json`; its `origin` is read too, each field
//! checked against those the route's source system sets, and defaults to the route's
//! source. Everything printed that came from the message is escaped (`output::readable`,
//! JSON).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, anyhow};
use serde::Deserialize;

use super::{CliError, ExplainArgs, TestArgs, output};
use crate::adapter::OriginField;
use crate::config::{self, Plan, ProcessEnvironment};
use crate::message::json::{self, JsonOrigin};
use crate::message::{Message, Origin, OriginValue};
use crate::printable::escape;
use crate::router::explain::{Explanation, SinkOutcome, Verdict, explain as explain_route};

pub fn explain(args: ExplainArgs) -> Result<(), CliError> {
    let plan = config::load_file(&args.file, &ProcessEnvironment).map_err(CliError::Config)?;
    let text = read_input(&args.message).map_err(CliError::Usage)?;
    let message = received(&plan, &args.route, &text).map_err(CliError::Usage)?;
    let explanation =
        explain_route(&plan, &args.route, &message).map_err(|e| CliError::Usage(anyhow!(e)))?;
    if args.json {
        println!("{}", as_json(&explanation));
    } else {
        print!("{}", readable(&args.route, &explanation));
    }
    Ok(())
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the message from standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The message as route `route` would receive it: `text` decoded, with its origin.
fn received(plan: &Plan, route: &str, text: &str) -> anyhow::Result<Message> {
    let (message, origin) = json::decode_received(text).context("the message")?;
    let Some(route_plan) = plan.routes.iter().find(|r| r.name == route) else {
        // `explain` names the routes there are.
        return Ok(message);
    };
    let source = &route_plan.source.endpoint;
    let declared = plan
        .connections
        .get(&source.connection)
        .map(|c| c.origin_fields())
        .unwrap_or_default();
    let origin = match origin {
        Some(origin) => origin_of(origin, declared)?,
        None => Origin {
            endpoint: source.to_string(),
            ..Origin::default()
        },
    };
    Ok(message.with_origin(origin))
}

/// `origin` as written, its system's own fields checked against those its source sets.
fn origin_of(origin: JsonOrigin, declared: &[OriginField]) -> anyhow::Result<Origin> {
    let mut fields = Vec::with_capacity(origin.fields.len());
    for (name, value) in origin.fields {
        let Some(OriginField::Named(known)) = declared
            .iter()
            .find(|f| matches!(f, OriginField::Named(n) if *n == name))
        else {
            let names: Vec<&str> = declared.iter().map(|f| f.name()).collect();
            return Err(anyhow!(
                "origin field `{}` is not one the route's source sets (it sets: {})",
                escape(&name),
                names.join(", ")
            ));
        };
        let value = match value {
            serde_json::Value::String(text) => OriginValue::text(&text),
            serde_json::Value::Bool(b) => OriginValue::Bool(b),
            serde_json::Value::Number(n) if n.is_i64() => {
                OriginValue::Int(n.as_i64().unwrap_or_default())
            }
            _ => {
                return Err(anyhow!(
                    "origin field `{name}` must be text, an integer or a boolean"
                ));
            }
        };
        fields.push((*known, value));
    }
    Ok(Origin {
        endpoint: origin.endpoint,
        partition: origin.partition,
        offset: origin.offset,
        receive_count: origin.receive_count,
        broker_message_id: origin.broker_message_id,
        fields,
    })
}

fn readable(route: &str, explanation: &Explanation) -> String {
    let dead_letter = explanation
        .dead_letter
        .as_deref()
        .map_or("the source's reject".to_owned(), |d| {
            format!("the dead letter {d}")
        });
    match &explanation.verdict {
        Verdict::Filtered => {
            format!("route `{route}`: filtered by its `when`; acknowledged, not forwarded\n")
        }
        Verdict::Refused { sink, reason } => format!(
            "route `{route}`: refused ({}): {}\n  goes to {dead_letter}, as received\n",
            escape(sink),
            escape(reason)
        ),
        Verdict::Sinks(sinks) => {
            let mut out = String::new();
            let sent = sinks
                .iter()
                .filter(|s| matches!(s.outcome, SinkOutcome::Sent { .. }))
                .count();
            out.push_str(&format!(
                "route `{route}`: {sent} of {} sinks receive the message\n",
                sinks.len()
            ));
            for sink in sinks {
                match &sink.outcome {
                    SinkOutcome::Skipped => {
                        out.push_str(&format!("\n{}: skipped\n", sink.sink));
                    }
                    SinkOutcome::Sent { endpoint, message } => {
                        out.push_str(&format!(
                            "\n{} -> {}\n",
                            sink.sink,
                            escape(&endpoint.to_string())
                        ));
                        out.push_str(&output::readable(message));
                    }
                    SinkOutcome::Failed(reason) if sink.optional => out.push_str(&format!(
                        "\n{}: fails: {} (optional: logged only)\n",
                        sink.sink,
                        escape(reason)
                    )),
                    SinkOutcome::Failed(reason) => out.push_str(&format!(
                        "\n{}: fails: {}\n  goes to {dead_letter}, as received\n",
                        sink.sink,
                        escape(reason)
                    )),
                }
            }
            out
        }
    }
}

fn as_json(explanation: &Explanation) -> serde_json::Value {
    use serde_json::json;
    let verdict = match &explanation.verdict {
        Verdict::Filtered => json!({"filtered": true}),
        Verdict::Refused { sink, reason } => json!({"refused": {"sink": sink, "reason": reason}}),
        Verdict::Sinks(sinks) => {
            let sinks: Vec<serde_json::Value> = sinks
                .iter()
                .map(|sink| match &sink.outcome {
                    SinkOutcome::Skipped => json!({"sink": sink.sink, "skipped": true}),
                    SinkOutcome::Sent { endpoint, message } => json!({
                        "sink": sink.sink,
                        "endpoint": endpoint.to_string(),
                        "message": serde_json::from_str::<serde_json::Value>(&json::encode(message))
                            .unwrap_or_default(),
                    }),
                    SinkOutcome::Failed(reason) => {
                        json!({"sink": sink.sink, "optional": sink.optional, "fails": reason})
                    }
                })
                .collect();
            json!({"sinks": sinks})
        }
    };
    json!({"verdict": verdict, "dead_letter": explanation.dead_letter})
}

/// One case of a `bridge test` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    route: String,
    /// The message, in the JSON form (as YAML).
    message: serde_json::Value,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Expect {
    /// The route's `when` is false.
    Filtered,
    /// The message (or one required sink's part) is dead-lettered; the reason contains
    /// this text.
    DeadLetter(String),
    /// Exactly these endpoints receive it, in the order of `to`.
    Sinks(Vec<ExpectedSink>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedSink {
    /// The rendered endpoint, e.g. `kafka:orders-eu`.
    endpoint: String,
    body: Option<String>,
    key: Option<String>,
    /// Headers that must be there with these values (others may be too).
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    message_id: Option<String>,
    content_type: Option<String>,
}

pub fn test(args: TestArgs) -> Result<(), CliError> {
    let plan = config::load_file(&args.file, &ProcessEnvironment).map_err(CliError::Config)?;
    let text = std::fs::read_to_string(&args.cases)
        .with_context(|| format!("reading {}", args.cases.display()))
        .map_err(CliError::Usage)?;
    let root = config::read_yaml(&text, &ProcessEnvironment)
        .map_err(|e| CliError::Usage(anyhow!("{}: {e}", args.cases.display())))?;
    let cases: Vec<Case> = crate::strict::parse_strict(root)
        .map_err(|e| CliError::Usage(anyhow!("{}: {e}", args.cases.display())))?;
    let mut failed = 0;
    for case in &cases {
        match run_case(&plan, case) {
            Ok(()) => println!("ok   {}", escape(&case.name)),
            Err(why) => {
                failed += 1;
                println!("FAIL {}: {}", escape(&case.name), escape(&why));
            }
        }
    }
    println!("{} cases, {failed} failed", cases.len());
    if failed > 0 {
        return Err(CliError::Runtime(anyhow!(
            "{failed} of {} cases failed",
            cases.len()
        )));
    }
    Ok(())
}

fn run_case(plan: &Plan, case: &Case) -> Result<(), String> {
    let message =
        received(plan, &case.route, &case.message.to_string()).map_err(|e| format!("{e:#}"))?;
    let explanation = explain_route(plan, &case.route, &message)?;
    match (&case.expect, &explanation.verdict) {
        (Expect::Filtered, Verdict::Filtered) => Ok(()),
        (Expect::DeadLetter(text), Verdict::Refused { reason, .. }) if reason.contains(text) => {
            Ok(())
        }
        (Expect::DeadLetter(text), Verdict::Sinks(sinks))
            if sinks.iter().any(|s| {
                !s.optional && matches!(&s.outcome, SinkOutcome::Failed(r) if r.contains(text))
            }) =>
        {
            Ok(())
        }
        (Expect::Sinks(expected), Verdict::Sinks(sinks)) => {
            let sent: Vec<(&crate::address::Endpoint, &Message)> = sinks
                .iter()
                .filter_map(|s| match &s.outcome {
                    SinkOutcome::Sent { endpoint, message } => Some((endpoint, &**message)),
                    _ => None,
                })
                .collect();
            if let Some(failure) = sinks.iter().find_map(|s| match &s.outcome {
                SinkOutcome::Failed(reason) if !s.optional => Some(reason),
                _ => None,
            }) {
                return Err(format!("a sink fails: {failure}"));
            }
            let got: Vec<String> = sent.iter().map(|(e, _)| e.to_string()).collect();
            let want: Vec<&str> = expected.iter().map(|e| e.endpoint.as_str()).collect();
            if got != want {
                return Err(format!("expected the sinks {want:?}, got {got:?}"));
            }
            for ((_, message), expected) in sent.iter().zip(expected) {
                check_sink(message, expected)?;
            }
            Ok(())
        }
        (_, verdict) => Err(format!(
            "expected {:?}, got {}",
            case.expect,
            summary(verdict)
        )),
    }
}

fn summary(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Filtered => "filtered".into(),
        Verdict::Refused { reason, .. } => format!("refused: {reason}"),
        Verdict::Sinks(sinks) => {
            let parts: Vec<String> = sinks
                .iter()
                .map(|s| match &s.outcome {
                    SinkOutcome::Skipped => format!("{} skipped", s.sink),
                    SinkOutcome::Sent { endpoint, .. } => format!("{endpoint} receives it"),
                    SinkOutcome::Failed(reason) => format!("{} fails: {reason}", s.sink),
                })
                .collect();
            parts.join("; ")
        }
    }
}

fn check_sink(message: &Message, expected: &ExpectedSink) -> Result<(), String> {
    let at = &expected.endpoint;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    if let Some(body) = &expected.body
        && text(&message.body) != *body
    {
        return Err(format!(
            "{at}: body is {:?}, expected {body:?}",
            text(&message.body)
        ));
    }
    if let Some(key) = &expected.key
        && message.key.as_deref().map(text).as_deref() != Some(key.as_str())
    {
        return Err(format!(
            "{at}: key is {:?}, expected {key:?}",
            message.key.as_deref().map(text)
        ));
    }
    let fields = [
        (
            "correlation_id",
            &expected.correlation_id,
            &message.correlation_id,
        ),
        ("reply_to", &expected.reply_to, &message.reply_to),
        ("message_id", &expected.message_id, &message.message_id),
        (
            "content_type",
            &expected.content_type,
            &message.content_type,
        ),
    ];
    for (name, want, got) in fields {
        if want.is_some() && want != got {
            return Err(format!("{at}: {name} is {got:?}, expected {want:?}"));
        }
    }
    for (name, value) in &expected.headers {
        let got = message.headers.get_text(name);
        if got != Some(value.as_str()) {
            return Err(format!(
                "{at}: header `{name}` is {got:?}, expected {value:?}"
            ));
        }
    }
    Ok(())
}
