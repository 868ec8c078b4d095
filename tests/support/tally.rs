//! Numbered test messages and a checker that counts their arrivals and verifies them.

use std::collections::HashMap;

use bridge::message::{Message, reserved};

/// Message number `n`: binary body, key, text and binary headers, correlation id.
/// Every hundredth message carries 15 headers (more than SQS/SNS hold as attributes).
pub fn numbered(n: u32) -> Message {
    let mut body = format!("payload-{n}-").into_bytes();
    body.extend_from_slice(&[0, 0xff, 0x80]);
    let mut message = Message::new(body);
    message.key = Some(format!("k{}", n % 8).into());
    message.headers.push("seq", n.to_string());
    message.headers.push("kind", "order");
    message
        .headers
        .push("raw", vec![0u8, (n % 251) as u8, 0xfe]);
    if n.is_multiple_of(100) {
        for extra in 0..12 {
            message
                .headers
                .push(format!("extra-{extra:02}"), format!("value {extra} of {n}"));
        }
    }
    message.correlation_id = Some(format!("corr-{n}"));
    message
}

/// Arrivals per message number, and every message that arrived changed.
#[derive(Default)]
pub struct Tally {
    pub seen: HashMap<u32, u32>,
    pub broken: Vec<String>,
}

impl Tally {
    /// Checks `message` against what was sent and counts it.
    pub fn record(&mut self, message: &Message) {
        let Some(n) = message
            .headers
            .get_text("seq")
            .and_then(|s| s.parse::<u32>().ok())
        else {
            self.broken.push(format!("no seq header: {message:?}"));
            return;
        };
        let want = numbered(n);
        let sorted = |m: &Message| {
            let mut all: Vec<_> = m
                .headers
                .iter()
                .filter(|(k, _)| !reserved::is_reserved(k))
                .map(|(k, v)| (k.to_owned(), v.clone()))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        if message.body != want.body
            || message.key != want.key
            || message.correlation_id != want.correlation_id
            || sorted(message) != sorted(&want)
        {
            self.broken
                .push(format!("message {n} changed: {message:?}"));
        }
        *self.seen.entry(n).or_default() += 1;
    }

    pub fn distinct(&self) -> usize {
        self.seen.len()
    }

    pub fn duplicates(&self) -> u32 {
        self.seen.values().map(|c| c - 1).sum()
    }

    /// Fails the test with the first changed messages, if any.
    pub fn assert_intact(&self) {
        assert!(
            self.broken.is_empty(),
            "{} changed, e.g. {:?}",
            self.broken.len(),
            &self.broken[..self.broken.len().min(2)]
        );
    }
}
