//! `bridge tail ENDPOINT`: prints arriving messages. Each adapter's tail reader leaves the
//! data undisturbed where its broker allows (docs/cli.md says how, per system); every
//! delivery is acknowledged to that reader only after it was printed.

use std::io::Write;

use anyhow::anyhow;

use super::connections::resolve;
use super::{CliError, TailArgs, output};
use crate::adapter::{ConnectContext, TailSettings};
use crate::expr::Condition;
use crate::message::json;

pub async fn tail(args: TailArgs) -> Result<(), CliError> {
    let (endpoint, spec) = resolve(&args.endpoint, &args.connection)?;
    let filter = match &args.filter {
        Some(source) => Some(
            Condition::compile(source).map_err(|e| CliError::Usage(anyhow!("--filter: {e}")))?,
        ),
        None => None,
    };
    let context = ConnectContext::default();
    let connector = spec
        .connect(&context)
        .await
        .map_err(|e| CliError::Runtime(anyhow!("cannot connect to {}: {e}", spec.describe())))?;
    let settings = TailSettings {
        from_beginning: args.from_beginning,
        disturb: args.disturb,
    };
    let mut reader = connector
        .open_tail(&endpoint, &settings)
        .await
        .map_err(|e| match e {
            crate::adapter::AdapterError::Invalid(m) => {
                CliError::Usage(anyhow!("cannot tail {endpoint}: {m}"))
            }
            other => CliError::Runtime(anyhow!("cannot tail {endpoint}: {other}")),
        })?;
    let shutdown = crate::shutdown::on_signals()
        .map_err(|e| CliError::Runtime(anyhow!("cannot install signal handlers: {e}")))?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let result = loop {
        if args.count.is_some_and(|count| printed >= count) {
            break Ok(());
        }
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = reader.recv() => next,
            _ = tokio::time::sleep(args.idle), if !args.follow => break Ok(()),
        };
        let delivery = match next {
            Ok(Some(delivery)) => delivery,
            Ok(None) => break Ok(()),
            Err(error) => {
                break Err(CliError::Runtime(anyhow!(
                    "reading {endpoint} failed: {error}"
                )));
            }
        };
        let shown = match &filter {
            Some(filter) => filter.matches(&delivery.message).unwrap_or(false),
            None => true,
        };
        if shown {
            let text = if args.json {
                json::encode(&delivery.message) + "\n"
            } else {
                output::readable(&delivery.message)
            };
            let mut out = stdout.lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                delivery.ack.retry("standard output closed");
                break Ok(());
            }
            printed += 1;
        }
        delivery.ack.ack();
    };
    reader.close().await;
    result
}
