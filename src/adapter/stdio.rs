//! Standard input and output (`type: stdio`), for demos, scripts and tests.
//!
//! Endpoints: `NAME:stdin` as a source, `NAME:stdout` and `NAME:stderr` as sinks.
//! The source reads one message per line: the line's bytes without its newline
//! (`format: lines`, the default), or a JSON envelope as written by the sinks
//! (`format: json`). It ends at end of input once every delivery is settled. Ack forgets a
//! line; retry hands the same message out again (in-process: standard input cannot be
//! re-read); reject writes the message and the reason as one JSON line on standard error.
//! Sinks write one JSON envelope per line ([`crate::message::json`]) and confirm once the
//! line is flushed.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader, Lines, Stdin};
use tokio::sync::{Mutex, mpsc};

use super::{
    AdapterError, Confirmation, Connector, Delivery, Receipt, Role, SendError, Sink, Source,
    SourceSettings, TailSettings,
};
use crate::ack::{AckHandle, Outcome};
use crate::address::Endpoint;
use crate::message::{Message, Origin, json};

/// `type: stdio` takes no options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// Options of a `stdin` source (`from.options`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinOptions {
    /// `lines` (default): each line is a body. `json`: each line is a JSON envelope.
    #[serde(default)]
    pub format: LineFormat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    #[default]
    Lines,
    Json,
}

pub(super) fn check_endpoint(
    path: &str,
    role: Role,
    options: &serde_json::Value,
) -> Result<(), String> {
    match (path, role) {
        ("stdin", Role::Source) => {
            if !options.is_null() {
                super::spec::parse_strict::<StdinOptions>(options.clone())
                    .map_err(|e| format!("stdin options: {e}"))?;
            }
            Ok(())
        }
        ("stdout" | "stderr", Role::Sink) => {
            if options.is_null() {
                Ok(())
            } else {
                Err(format!("`{path}` takes no options"))
            }
        }
        ("stdin", Role::Sink) => {
            Err("`stdin` can only be read; write to `stdout` or `stderr`".into())
        }
        ("stdout" | "stderr", Role::Source) => {
            Err(format!("`{path}` can only be written; read from `stdin`"))
        }
        (other, _) => Err(format!(
            "unknown stdio endpoint `{other}`; use stdin, stdout or stderr"
        )),
    }
}

pub(super) fn connect(_config: &Config) -> Arc<dyn Connector> {
    Arc::new(StdioConnector)
}

struct StdioConnector;

fn stdin_source(
    endpoint: &Endpoint,
    options: &serde_json::Value,
) -> Result<Box<dyn Source>, AdapterError> {
    let options: StdinOptions = if options.is_null() {
        StdinOptions::default()
    } else {
        super::spec::parse_strict(options.clone())
            .map_err(|e| AdapterError::Invalid(e.to_string()))?
    };
    let (settled_tx, settled_rx) = mpsc::unbounded_channel();
    Ok(Box::new(StdinSource {
        lines: BufReader::new(tokio::io::stdin()).lines(),
        format: options.format,
        endpoint: endpoint.to_string(),
        settled_tx,
        settled_rx,
        in_flight: 0,
        line_number: 0,
        at_end: false,
    }))
}

#[async_trait]
impl Connector for StdioConnector {
    async fn open_source(
        &self,
        endpoint: &Endpoint,
        settings: &SourceSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        if endpoint.path != "stdin" {
            return Err(AdapterError::Invalid(format!(
                "`{endpoint}` cannot be read; use stdin"
            )));
        }
        stdin_source(endpoint, &settings.options)
    }

    async fn open_sink(&self, endpoint: &Endpoint) -> Result<Arc<dyn Sink>, AdapterError> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match endpoint.path.as_str() {
            "stdout" => Box::new(tokio::io::stdout()),
            "stderr" => Box::new(tokio::io::stderr()),
            _ => {
                return Err(AdapterError::Invalid(format!(
                    "`{endpoint}` cannot be written; use stdout or stderr"
                )));
            }
        };
        Ok(Arc::new(LineSink {
            out: Mutex::new(out),
        }))
    }

    async fn open_tail(
        &self,
        endpoint: &Endpoint,
        _settings: &TailSettings,
    ) -> Result<Box<dyn Source>, AdapterError> {
        if endpoint.path != "stdin" {
            return Err(AdapterError::Invalid(format!(
                "`{endpoint}` cannot be read; use stdin"
            )));
        }
        stdin_source(endpoint, &serde_json::Value::Null)
    }
}

enum Settled {
    Done,
    Again(Box<Message>, u32),
}

struct StdinSource {
    lines: Lines<BufReader<Stdin>>,
    format: LineFormat,
    endpoint: String,
    settled_tx: mpsc::UnboundedSender<Settled>,
    settled_rx: mpsc::UnboundedReceiver<Settled>,
    in_flight: usize,
    line_number: i64,
    at_end: bool,
}

impl StdinSource {
    fn deliver(&mut self, message: Message, receive_count: u32, line: i64) -> Delivery {
        self.in_flight += 1;
        let origin = Origin {
            endpoint: self.endpoint.clone(),
            offset: Some(line),
            receive_count: Some(receive_count),
            ..Origin::default()
        };
        let kept = message.clone();
        let settled = self.settled_tx.clone();
        let ack = AckHandle::new(move |outcome| {
            let event = match outcome {
                Outcome::Ack => Settled::Done,
                Outcome::Retry(_) => Settled::Again(Box::new(kept), receive_count + 1),
                Outcome::Reject(reason) => {
                    eprintln!(
                        "{}",
                        serde_json::json!({"rejected": reason, "message": json::encode(&kept)})
                    );
                    Settled::Done
                }
            };
            let _ = settled.send(event);
        });
        Delivery {
            message: message.with_origin(origin),
            ack,
        }
    }

    fn parse(&self, line: String) -> Result<Message, String> {
        match self.format {
            LineFormat::Lines => Ok(Message::new(line)),
            LineFormat::Json => json::decode(&line).map_err(|e| e.to_string()),
        }
    }
}

#[async_trait]
impl Source for StdinSource {
    async fn recv(&mut self) -> Result<Option<Delivery>, AdapterError> {
        loop {
            if self.at_end && self.in_flight == 0 {
                return Ok(None);
            }
            tokio::select! {
                biased;
                Some(settled) = self.settled_rx.recv() => {
                    self.in_flight -= 1;
                    if let Settled::Again(message, count) = settled {
                        let line = self.line_number;
                        return Ok(Some(self.deliver(*message, count, line)));
                    }
                }
                line = self.lines.next_line(), if !self.at_end => match line {
                    Ok(Some(line)) => {
                        self.line_number += 1;
                        match self.parse(line) {
                            Ok(message) => {
                                let number = self.line_number;
                                return Ok(Some(self.deliver(message, 1, number)));
                            }
                            Err(error) => tracing::error!(
                                line = self.line_number,
                                %error,
                                "standard input line is not a message; skipped"
                            ),
                        }
                    }
                    Ok(None) => self.at_end = true,
                    Err(error) => {
                        return Err(AdapterError::Invalid(format!("cannot read standard input: {error}")));
                    }
                },
            }
        }
    }

    async fn close(self: Box<Self>) {}
}

struct LineSink {
    out: Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
}

#[async_trait]
impl Sink for LineSink {
    async fn send(&self, message: &Message) -> Result<Confirmation, SendError> {
        let mut line = json::encode(message).into_bytes();
        line.push(b'\n');
        let mut out = self.out.lock().await;
        let written = async {
            out.write_all(&line).await?;
            out.flush().await
        }
        .await;
        let result = written
            .map(|()| Receipt::default())
            .map_err(|e| SendError::transient(format!("cannot write: {e}")));
        Ok(Box::pin(std::future::ready(result)))
    }

    async fn flush(&self) {
        let _ = self.out.lock().await.flush().await;
    }
}
