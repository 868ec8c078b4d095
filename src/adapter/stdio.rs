//! Standard input and output (`type: stdio`), for demos, scripts and tests.
//!
//! Endpoints: `NAME:stdin` as a source, `NAME:stdout` and `NAME:stderr` as sinks.
//! The source reads one message per line: the line's bytes without its newline, any bytes
//! (`format: lines`, the default), or a JSON envelope as written by the sinks
//! (`format: json`); a line that is not valid JSON there is written to standard error
//! as rejected, with its bytes. It ends at end of input once every delivery is settled. Ack forgets a
//! line; retry hands the same message out again (in-process: standard input cannot be
//! re-read); reject writes the message and the reason as one JSON line on standard error.
//! Sinks write one JSON envelope per line ([`crate::message::json`]) and confirm once the
//! line is flushed.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader, Stdin};
use tokio::sync::{Mutex, mpsc};

use super::{
    Adapter, AdapterError, Confirmation, ConnectContext, Connection, Connector, Delivery,
    OriginField, Receipt, Role, SendError, Sink, Source, SourceOptions, SourceSettings,
    TailSettings,
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

/// The `stdio` system (`type: stdio`, `--url stdio:`).
pub struct Stdio;

impl Adapter for Stdio {
    fn type_name(&self) -> &'static str {
        "stdio"
    }

    fn url_schemes(&self) -> &'static [&'static str] {
        &["stdio"]
    }

    fn parse(&self, fields: serde_json::Value) -> super::contract::Parsed {
        super::contract::parse_connection::<Config>(fields)
    }

    fn parse_url(&self, _url: &str) -> Result<Arc<dyn Connection>, String> {
        Ok(Arc::new(Config::default()))
    }
}

#[async_trait]
impl Connection for Config {
    fn type_name(&self) -> &'static str {
        "stdio"
    }

    fn check_endpoint(&self, path: &str, role: Role) -> Result<(), String> {
        match (path, role) {
            ("stdin", Role::Source) | ("stdout" | "stderr", Role::Sink) => Ok(()),
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

    fn source_options(
        &self,
        path: &str,
        options: &serde_json::Value,
    ) -> Result<SourceOptions, String> {
        self.check_endpoint(path, Role::Source)?;
        if options.is_null() {
            return Ok(SourceOptions::none());
        }
        crate::strict::parse_strict::<StdinOptions>(options.clone())
            .map(SourceOptions::new)
            .map_err(|e| format!("stdin options: {e}"))
    }

    /// Standard error takes what a route rejects, as a JSON line.
    fn check_reject_without_dead_letter(&self, _: &str, _: &SourceOptions) -> Result<(), String> {
        Ok(())
    }

    fn reply_address(&self, _path: &str) -> Option<String> {
        None
    }

    /// What goes to stdout is not read back by this process.
    fn may_feed(&self, _sink: Option<&str>, _source: &str) -> bool {
        false
    }

    fn accepts_replies(&self) -> bool {
        false
    }

    /// The line number, and 1.
    fn origin_fields(&self) -> &'static [OriginField] {
        &[OriginField::Offset, OriginField::ReceiveCount]
    }

    fn max_message_bytes(&self) -> usize {
        16 << 20
    }

    fn describe(&self) -> String {
        "standard input and output".to_owned()
    }

    async fn connect(&self, _context: &ConnectContext) -> Result<Arc<dyn Connector>, AdapterError> {
        Ok(Arc::new(StdioConnector))
    }
}

struct StdioConnector;

fn stdin_source(
    endpoint: &Endpoint,
    options: &SourceOptions,
) -> Result<Box<dyn Source>, AdapterError> {
    let options: StdinOptions = options.get()?;
    let (settled_tx, settled_rx) = mpsc::unbounded_channel();
    Ok(Box::new(StdinSource {
        input: BufReader::new(tokio::io::stdin()),
        buffer: Vec::new(),
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
        stdin_source(endpoint, &SourceOptions::none())
    }
}

enum Settled {
    Done,
    Again(Box<Message>, u32, i64),
}

struct StdinSource {
    input: BufReader<Stdin>,
    /// The line being read; kept across calls so a cancelled read loses nothing.
    buffer: Vec<u8>,
    format: LineFormat,
    endpoint: String,
    settled_tx: mpsc::UnboundedSender<Settled>,
    settled_rx: mpsc::UnboundedReceiver<Settled>,
    in_flight: usize,
    line_number: i64,
    at_end: bool,
}

/// One JSON line on standard error for something standard input could not deliver.
fn report_rejected(reason: &str, message: &Message) {
    let reason = serde_json::to_string(reason).expect("a string serializes");
    eprintln!(
        "{{\"rejected\":{reason},\"message\":{}}}",
        json::encode(message)
    );
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
                Outcome::Retry(_) => Settled::Again(Box::new(kept), receive_count + 1, line),
                Outcome::Reject(reason) => {
                    report_rejected(&reason, &kept);
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

    /// The message of one input line (without its line ending).
    fn parse(&self, mut line: Vec<u8>) -> Result<Message, Box<(String, Message)>> {
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        match self.format {
            LineFormat::Lines => Ok(Message::new(line)),
            LineFormat::Json => {
                let decoded = std::str::from_utf8(&line)
                    .map_err(|e| {
                        json::DecodeError::Json(serde::de::Error::custom(format!("not UTF-8: {e}")))
                    })
                    .and_then(json::decode);
                decoded.map_err(|e| {
                    let reason = format!("line {} is not a JSON message: {e}", self.line_number);
                    Box::new((reason, Message::new(line.clone())))
                })
            }
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
                    if let Settled::Again(message, count, line) = settled {
                        return Ok(Some(self.deliver(*message, count, line)));
                    }
                }
                read = self.input.read_until(b'\n', &mut self.buffer), if !self.at_end => match read {
                    Ok(0) => self.at_end = true,
                    Ok(_) => {
                        self.line_number += 1;
                        let line = std::mem::take(&mut self.buffer);
                        match self.parse(line) {
                            Ok(message) => {
                                let number = self.line_number;
                                return Ok(Some(self.deliver(message, 1, number)));
                            }
                            // Not a message: reported on standard error with its bytes.
                            Err(rejected) => report_rejected(&rejected.0, &rejected.1),
                        }
                    }
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
