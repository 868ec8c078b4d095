//! Limits on one message, checked before a route does any work with it.
//!
//! A message over a limit is refused as a permanent error (dead-lettered with the reason,
//! or rejected at its source), never truncated and never retried. The check itself reads
//! each header once, so a message with a hundred thousand headers is refused in linear
//! time. Defaults are no lower than what the brokers deliver by default: the largest
//! message a source's system allows ([`crate::adapter::Connection::max_message_bytes`]),
//! a thousand headers, 1 KiB names and 1 MiB values. `settings.limits` and
//! `routes[].limits` change them (docs/security.md).

/// The limits a route applies to each message it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Body, key, envelope fields and headers (names and values) together, in bytes.
    pub max_message_bytes: usize,
    pub max_headers: usize,
    pub max_header_name_bytes: usize,
    pub max_header_value_bytes: usize,
}

pub const DEFAULT_MAX_HEADERS: usize = 1_000;
pub const DEFAULT_MAX_HEADER_NAME_BYTES: usize = 1_024;
pub const DEFAULT_MAX_HEADER_VALUE_BYTES: usize = 1 << 20;

impl Limits {
    /// The defaults, with the largest message of the source's system.
    pub fn with_max_message_bytes(max_message_bytes: usize) -> Limits {
        Limits {
            max_message_bytes,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_name_bytes: DEFAULT_MAX_HEADER_NAME_BYTES,
            max_header_value_bytes: DEFAULT_MAX_HEADER_VALUE_BYTES,
        }
    }

    /// Why `message` is over a limit, if it is.
    pub fn check(&self, message: &super::Message) -> Result<(), String> {
        if message.headers.len() > self.max_headers {
            return Err(format!(
                "the message has {} headers; the limit is {} (limits.max_headers)",
                message.headers.len(),
                self.max_headers
            ));
        }
        let text_len = |field: &Option<String>| field.as_ref().map_or(0, String::len);
        let mut size = message.body.len()
            + message.key.as_ref().map_or(0, |key| key.len())
            + text_len(&message.correlation_id)
            + text_len(&message.reply_to)
            + text_len(&message.message_id)
            + text_len(&message.content_type);
        for (name, value) in message.headers.iter() {
            if name.len() > self.max_header_name_bytes {
                return Err(format!(
                    "a header name is {} bytes; the limit is {} (limits.max_header_name_bytes)",
                    name.len(),
                    self.max_header_name_bytes
                ));
            }
            let value_len = value.as_bytes().len();
            if value_len > self.max_header_value_bytes {
                return Err(format!(
                    "a header value is {value_len} bytes; the limit is {} (limits.max_header_value_bytes)",
                    self.max_header_value_bytes
                ));
            }
            size += name.len() + value_len;
        }
        if size > self.max_message_bytes {
            return Err(format!(
                "the message is {size} bytes; the limit is {} (limits.max_message_bytes)",
                self.max_message_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    #[test]
    fn each_limit_refuses_with_its_setting_named() {
        let limits = Limits {
            max_message_bytes: 20,
            max_headers: 2,
            max_header_name_bytes: 4,
            max_header_value_bytes: 5,
        };
        let mut message = Message::new("0123456789");
        message.headers.push("ab", "cd");
        assert_eq!(limits.check(&message), Ok(()));
        let mut big = message.clone();
        big.key = Some("0123456789".into());
        assert!(
            limits
                .check(&big)
                .unwrap_err()
                .contains("max_message_bytes")
        );
        let mut many = message.clone();
        many.headers.push("c", "d");
        many.headers.push("e", "f");
        assert!(limits.check(&many).unwrap_err().contains("max_headers"));
        let mut long_name = message.clone();
        long_name.headers.push("abcde", "x");
        assert!(
            limits
                .check(&long_name)
                .unwrap_err()
                .contains("max_header_name_bytes")
        );
        let mut long_value = message;
        long_value.headers.push("a", "abcdef");
        assert!(
            limits
                .check(&long_value)
                .unwrap_err()
                .contains("max_header_value_bytes")
        );
    }

    #[test]
    fn too_many_headers_are_refused_before_any_is_read() {
        let limits = Limits::with_max_message_bytes(1 << 20);
        let mut message = Message::new("x");
        for i in 0..100_000 {
            message.headers.push(format!("h{i}"), "v");
        }
        let before = crate::message::comparisons();
        assert!(
            limits
                .check(&message)
                .unwrap_err()
                .contains("100000 headers")
        );
        assert_eq!(
            crate::message::comparisons(),
            before,
            "no header was walked"
        );
    }

    #[test]
    fn the_check_is_linear() {
        crate::message::assert_linear("Limits::check", |n| {
            let mut message = Message::new("x");
            for i in 0..n {
                message.headers.push(format!("h{i}"), "v");
            }
            let limits = Limits {
                max_headers: n,
                ..Limits::with_max_message_bytes(usize::MAX)
            };
            assert_eq!(limits.check(&message), Ok(()));
        });
    }
}
