//! `bridge request ENDPOINT [BODY|-] --reply-from ENDPOINT`: sends one request with a
//! correlation id and a reply-to, waits for the reply carrying the same correlation id and
//! prints it. The reply endpoint is read without a consumer group on Kafka (from the end),
//! and consumed elsewhere; replies meant for others are handed back untouched (retried).

use std::time::SystemTime;

use anyhow::anyhow;
use bytes::Bytes;

use super::connections::resolve;
use super::{CliError, RequestArgs, output};
use crate::adapter::{AdapterError, ConnectContext};
use crate::message::json;

fn usage_or_runtime(what: String, error: AdapterError) -> CliError {
    match error {
        AdapterError::Invalid(m) => CliError::Usage(anyhow!("{what}: {m}")),
        other => CliError::Runtime(anyhow!("{what}: {other}")),
    }
}

pub async fn request(args: RequestArgs) -> Result<(), CliError> {
    let (endpoint, spec) = resolve(&args.endpoint, &args.connection)?;
    let (reply_endpoint, reply_spec) = resolve(&args.reply_from, &args.connection)?;
    let reply_to = match args
        .reply_to
        .clone()
        .or_else(|| reply_spec.reply_address(&reply_endpoint.path))
    {
        Some(address) => address,
        None => {
            return Err(CliError::Usage(anyhow!(
                "cannot tell the reply-to of {reply_endpoint}; give it with --reply-to"
            )));
        }
    };
    let body = super::send::body_argument(args.body.as_deref())?;
    let mut message = super::send::with_headers(body, &args.headers)?;
    let correlation_id = args
        .correlation_id
        .clone()
        .unwrap_or_else(crate::relay::new_correlation_id);
    message.key = args.key.clone().map(Bytes::from);
    message.correlation_id = Some(correlation_id.clone());
    message.reply_to = Some(reply_to);
    message.content_type = args.content_type.clone();
    message.timestamp = Some(SystemTime::now());

    let context = ConnectContext::default();
    let connector = spec
        .connect(&context)
        .await
        .map_err(|e| CliError::Runtime(anyhow!("cannot connect to {}: {e}", spec.describe())))?;
    let reply_connector =
        if reply_endpoint.connection == endpoint.connection && args.connection.url.is_none() {
            connector.clone()
        } else {
            reply_spec.connect(&context).await.map_err(|e| {
                CliError::Runtime(anyhow!("cannot connect to {}: {e}", reply_spec.describe()))
            })?
        };
    // Listen before sending, so a fast reply is not missed.
    let mut replies = reply_connector
        .open_reply_reader(&reply_endpoint)
        .await
        .map_err(|e| usage_or_runtime(format!("cannot read replies from {reply_endpoint}"), e))?;
    let sink = connector
        .open_sink(&endpoint)
        .await
        .map_err(|e| usage_or_runtime(format!("cannot send to {endpoint}"), e))?;
    let receipt = sink
        .send(&message)
        .await
        .map_err(|e| CliError::Runtime(anyhow!("request to {endpoint} failed: {}", e.message)))?
        .await
        .map_err(|e| CliError::Runtime(anyhow!("request to {endpoint} failed: {}", e.message)))?;
    tracing::info!(%receipt, %correlation_id, "request sent");

    let deadline = tokio::time::Instant::now() + args.timeout;
    let result = loop {
        let next = match tokio::time::timeout_at(deadline, replies.recv()).await {
            Ok(next) => next,
            Err(_) => {
                break Err(CliError::Runtime(anyhow!(
                    "no reply with correlation id `{correlation_id}` on {reply_endpoint} within {:?}",
                    args.timeout
                )));
            }
        };
        match next {
            Ok(Some(delivery))
                if delivery.message.correlation_id.as_deref() == Some(correlation_id.as_str()) =>
            {
                let text = if args.json {
                    json::encode(&delivery.message) + "\n"
                } else {
                    output::readable(&delivery.message)
                };
                print!("{text}");
                delivery.ack.ack();
                break Ok(());
            }
            // Someone else's reply: back to the broker, untouched.
            Ok(Some(delivery)) => delivery.ack.retry("not the awaited reply"),
            Ok(None) => {
                break Err(CliError::Runtime(anyhow!(
                    "{reply_endpoint} ended before the reply came"
                )));
            }
            Err(error) => {
                break Err(CliError::Runtime(anyhow!(
                    "reading {reply_endpoint} failed: {error}"
                )));
            }
        }
    };
    replies.close().await;
    result
}
