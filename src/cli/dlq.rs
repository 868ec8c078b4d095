//! `bridge dlq stats ENDPOINT` and `bridge dlq show ENDPOINT`: what the dead letters at an
//! endpoint hold, read as `tail --from-beginning` reads (undisturbed where the system
//! allows, `--disturb` where it cannot peek), until `--idle` passes without a message.
//! `bridge dlq redrive` is in [`super::redrive`].

use std::io::Write;

use anyhow::anyhow;

use super::connections::resolve;
use super::{CliError, DlqArgs, DlqCommand, DlqReadArgs, DlqSelectionArgs, output};
use crate::adapter::{ConnectContext, Connector, DeadLetterRead, Delivery, Source};
use crate::address::Endpoint;
use crate::dlq::{Selection, Stats};
use crate::expr::Condition;
use crate::message::{json, reserved};
use crate::printable::escape;

pub async fn dlq(args: DlqArgs) -> Result<(), CliError> {
    match args.command {
        DlqCommand::Stats(read) => stats(read).await,
        DlqCommand::Show(read) => show(read).await,
        DlqCommand::Redrive(args) => super::redrive::redrive(args).await,
    }
}

/// The selection the flags describe; times are counted back from now.
pub(super) fn selection(args: &DlqSelectionArgs) -> Result<Selection, CliError> {
    let filter = match &args.filter {
        Some(source) => Some(
            Condition::compile(source).map_err(|e| CliError::Usage(anyhow!("--filter: {e}")))?,
        ),
        None => None,
    };
    let now = std::time::SystemTime::now();
    let ago = |age: Option<std::time::Duration>| age.and_then(|age| now.checked_sub(age));
    Ok(Selection {
        route: args.route.clone(),
        sink: args.sink.clone(),
        error_class: args.error_class.clone(),
        filter,
        failed_before: ago(args.older_than),
        failed_after: ago(args.newer_than),
    })
}

/// The dead-letter endpoint of `read` and a connector of its connection.
pub(super) async fn connect(
    read: &DlqReadArgs,
) -> Result<(Endpoint, std::sync::Arc<dyn Connector>), CliError> {
    let (endpoint, spec) = resolve(&read.endpoint, &read.connection)?;
    let connector = spec
        .connect(&ConnectContext::default())
        .await
        .map_err(|e| CliError::Runtime(anyhow!("cannot connect to {}: {e}", spec.describe())))?;
    Ok((endpoint, connector))
}

/// Opens a reader of the dead letters at `endpoint`.
pub(super) async fn open(
    connector: &dyn Connector,
    endpoint: &Endpoint,
    read: DeadLetterRead<'_>,
) -> Result<Box<dyn Source>, CliError> {
    connector
        .open_dead_letters(endpoint, read)
        .await
        .map_err(|e| match e {
            crate::adapter::AdapterError::Invalid(m) => {
                CliError::Usage(anyhow!("cannot read {endpoint}: {m}"))
            }
            other => CliError::Runtime(anyhow!("cannot read {endpoint}: {other}")),
        })
}

/// Hands each selected dead letter to `each` until `--idle` passes without one, `--count`
/// were selected or a signal arrives; each is acknowledged to the reader (a peek) after
/// `each` saw it.
async fn read_all(
    read: &DlqReadArgs,
    mut each: impl FnMut(&Delivery) -> bool,
) -> Result<(), CliError> {
    let selection = selection(&read.selection)?;
    let (endpoint, connector) = connect(read).await?;
    let peek = DeadLetterRead::Peek {
        disturb: read.disturb,
    };
    let mut reader = open(connector.as_ref(), &endpoint, peek).await?;
    let shutdown = crate::shutdown::on_signals()
        .map_err(|e| CliError::Runtime(anyhow!("cannot install signal handlers: {e}")))?;
    let mut seen = 0u64;
    let result = loop {
        if read.count.is_some_and(|count| seen >= count) {
            break Ok(());
        }
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            next = reader.recv() => next,
            _ = tokio::time::sleep(read.idle) => break Ok(()),
        };
        match next {
            Ok(Some(delivery)) => {
                if !selection.matches(&delivery.message) {
                    delivery.ack.ack();
                    continue;
                }
                seen += 1;
                let go_on = each(&delivery);
                delivery.ack.ack();
                if !go_on {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(error) => {
                break Err(CliError::Runtime(anyhow!(
                    "reading {} failed: {error}",
                    read.endpoint
                )));
            }
        }
    };
    reader.close().await;
    result
}

async fn stats(read: DlqReadArgs) -> Result<(), CliError> {
    let mut stats = Stats::default();
    read_all(&read, |delivery| {
        stats.add(&delivery.message);
        true
    })
    .await?;
    if read.json {
        let groups: Vec<serde_json::Value> = stats
            .by_count()
            .into_iter()
            .map(|(key, group)| {
                serde_json::json!({
                    "route": key.route, "sink": key.sink, "class": key.class,
                    "error": key.error, "sample": group.sample, "count": group.count,
                    "first_failure": group.first_failure, "last_failure": group.last_failure,
                })
            })
            .collect();
        let summary = serde_json::json!({
            "endpoint": read.endpoint,
            "total": stats.total(),
            "without_context": stats.without_context,
            "groups": groups,
        });
        println!("{summary}");
        return Ok(());
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{}: {} dead letters, {} in {} groups, {} without bridge's context (a broker's own dead-lettering)\n",
        escape(&read.endpoint),
        stats.total(),
        stats.total() - stats.without_context,
        stats.groups.len(),
        stats.without_context
    ));
    for (key, group) in stats.by_count() {
        out.push_str(&format!(
            "\n{:>7}  route {} · sink {} · {}\n         first {} · last {}\n         {}\n         e.g. {}\n",
            group.count,
            escape(&key.route),
            escape(&key.sink),
            escape(&key.class),
            group.first_failure.as_deref().map(escape).unwrap_or_default(),
            group.last_failure.as_deref().map(escape).unwrap_or_default(),
            escape(&key.error),
            escape(&group.sample),
        ));
    }
    print!("{out}");
    Ok(())
}

async fn show(read: DlqReadArgs) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut broken = false;
    read_all(&read, |delivery| {
        let message = &delivery.message;
        let text = if read.json {
            json::encode(message) + "\n"
        } else {
            let context = |name: &str| message.headers.get_text(name).map(escape);
            let mut text = match context(reserved::DLQ_ROUTE) {
                Some(route) => format!(
                    "── dead letter of route {route} · sink {} · {} after {} attempt(s), last {}\nerror: {}\n",
                    context(reserved::DLQ_SINK).unwrap_or_default(),
                    context(reserved::DLQ_ERROR_CLASS).unwrap_or_default(),
                    context(reserved::DLQ_ATTEMPTS).unwrap_or_default(),
                    context(reserved::DLQ_LAST_FAILURE).unwrap_or_default(),
                    context(reserved::DLQ_ERROR).unwrap_or_default(),
                ),
                None => "── without bridge's dead-letter context\n".to_owned(),
            };
            text.push_str(&output::readable(message));
            text
        };
        let mut out = stdout.lock();
        if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
            broken = true;
            return false;
        }
        true
    })
    .await?;
    if broken {
        return Err(CliError::Runtime(anyhow!("standard output closed")));
    }
    Ok(())
}
