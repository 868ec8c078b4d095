//! `bridge send ENDPOINT [BODY|-]`: publishes messages through the endpoint's sink and
//! prints the broker's receipt for each. Messages are enqueued ahead of their
//! confirmations (a window of 512), and receipts are printed in order.

use std::collections::VecDeque;
use std::io::Read;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use bytes::Bytes;

use super::connections::resolve;
use super::{CliError, SendArgs, output};
use crate::adapter::{Confirmation, ConnectContext};
use crate::message::{HeaderValue, Message};

const WINDOW: usize = 512;

fn body(args: &SendArgs) -> Result<Vec<u8>, CliError> {
    if let Some(file) = &args.file {
        return std::fs::read(file)
            .with_context(|| format!("cannot read {}", file.display()))
            .map_err(CliError::Usage);
    }
    body_argument(args.body.as_deref())
}

/// The body given on the command line: the text itself, `-` for standard input, or empty.
pub(super) fn body_argument(body: Option<&str>) -> Result<Vec<u8>, CliError> {
    match body {
        Some("-") => {
            let mut buffer = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buffer)
                .context("cannot read standard input")
                .map_err(CliError::Runtime)?;
            Ok(buffer)
        }
        Some(text) => Ok(text.as_bytes().to_vec()),
        None => Ok(Vec::new()),
    }
}

/// A message with `body` and the `--header NAME=VALUE` arguments as text headers, in order.
pub(super) fn with_headers(body: Vec<u8>, headers: &[String]) -> Result<Message, CliError> {
    let mut message = Message::new(body);
    for header in headers {
        let (name, value) = header
            .split_once('=')
            .ok_or_else(|| CliError::Usage(anyhow!("--header `{header}` is not NAME=VALUE")))?;
        message
            .headers
            .push(name, HeaderValue::Text(value.to_owned()));
    }
    Ok(message)
}

fn template(args: &SendArgs, body: Vec<u8>) -> Result<Message, CliError> {
    let mut message = with_headers(body, &args.headers)?;
    message.key = args.key.clone().map(Bytes::from);
    message.correlation_id = args.correlation_id.clone();
    message.reply_to = args.reply_to.clone();
    message.message_id = args.message_id.clone();
    message.content_type = args.content_type.clone();
    message.timestamp = Some(SystemTime::now());
    Ok(message)
}

fn numbered(template: &Message, number: u64, count: u64) -> Message {
    let mut message = template.clone();
    if count > 1
        && let Ok(text) = std::str::from_utf8(&template.body)
        && text.contains("{n}")
    {
        message.body = Bytes::from(text.replace("{n}", &number.to_string()));
    }
    message
}

pub async fn send(args: SendArgs) -> Result<(), CliError> {
    let (endpoint, spec) = resolve(&args.endpoint, &args.connection)?;
    let template = template(&args, body(&args)?)?;
    let context = ConnectContext::default();
    let connector = spec
        .connect(&context)
        .await
        .map_err(|e| CliError::Runtime(anyhow!("cannot connect to {}: {e}", spec.describe())))?;
    let sink = connector.open_sink(&endpoint).await.map_err(|e| match e {
        crate::adapter::AdapterError::Invalid(m) => {
            CliError::Usage(anyhow!("cannot send to {endpoint}: {m}"))
        }
        other => CliError::Runtime(anyhow!("cannot send to {endpoint}: {other}")),
    })?;
    let label = endpoint.to_string();
    let mut pending: VecDeque<(u64, Confirmation)> = VecDeque::new();
    let settle =
        |number: u64, result: Result<crate::adapter::Receipt, crate::adapter::SendError>| {
            match result {
                Ok(receipt) => {
                    println!("{}", output::receipt(&label, number, &receipt, args.json));
                    Ok(())
                }
                Err(error) => Err(CliError::Runtime(anyhow!(
                    "message #{number} to {label} failed ({}): {}",
                    error.class,
                    error.message
                ))),
            }
        };
    for number in 1..=args.count {
        let message = numbered(&template, number, args.count);
        let confirmation = sink.send(&message).await.map_err(|e| {
            CliError::Runtime(anyhow!(
                "message #{number} to {label} failed ({}): {}",
                e.class,
                e.message
            ))
        })?;
        pending.push_back((number, confirmation));
        if pending.len() >= WINDOW {
            let (number, confirmation) = pending.pop_front().expect("window is not empty");
            settle(number, confirmation.await)?;
        }
    }
    while let Some((number, confirmation)) = pending.pop_front() {
        settle(number, confirmation.await)?;
    }
    sink.flush().await;
    Ok(())
}
