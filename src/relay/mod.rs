//! Request-reply relay across brokers.
//!
//! A route with `reply:` forwards requests like any route, but a request that carries a
//! reply address leaves with two changes: its correlation id becomes a signed token
//! ([`token`]) holding the requester's reply address, its original correlation id and a
//! deadline; its reply-to becomes the route's reply address, which the route itself
//! consumes. When a reply comes back there, bridge checks the token's signature and
//! deadline, restores the original correlation id and publishes the reply to the
//! requester's reply address, on the connection the request came from.
//!
//! Because the token carries all the state, nothing is kept in memory: several bridge
//! replicas can share the reply queue or topic, and a reply is relayed after a restart.
//! A replier only has to echo the correlation id. A reply whose correlation id is not a
//! valid token (forged, altered, signed with another key) or whose deadline has passed
//! goes to the route's dead letter, or is dropped when `reply.unmatched: drop`.

pub mod allow;
pub mod token;

use std::time::{Duration, SystemTime};

pub use allow::ReplyAllow;
pub use token::{Claims, Signer, TokenError};

use crate::message::Message;

/// What becomes of a reply that cannot be relayed (bad token or late).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// To the route's dead letter, with the reason (default).
    #[default]
    DeadLetter,
    /// Logged and dropped.
    Drop,
}

/// Turns requests into relayed requests (the forward half of a reply route).
#[derive(Debug, Clone)]
pub struct RequestRelay {
    pub signer: Signer,
    /// The reply-to given to repliers.
    pub address: String,
    pub timeout: Duration,
}

/// The longest reply timeout a routes file may set: a deadline must stay a time the token
/// and the clock can hold.
pub const MAX_REPLY_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

impl RequestRelay {
    /// Replaces the correlation id and reply-to of a request; leaves other messages alone.
    pub fn apply(&self, message: &mut Message) {
        let Some(reply_to) = message.reply_to.take() else {
            return;
        };
        let claims = Claims {
            reply_to,
            correlation_id: message.correlation_id.take(),
            deadline: SystemTime::now() + self.timeout.min(MAX_REPLY_TIMEOUT),
        };
        message.correlation_id = Some(self.signer.encode(&claims));
        message.reply_to = Some(self.address.clone());
    }
}

/// Why a reply is not relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the reply has no correlation id, so it cannot be matched to a request")]
    NoCorrelation,
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("the reply came after its deadline ({0})")]
    Late(String),
}

/// Reads the replies of a reply route (the return half).
#[derive(Debug, Clone)]
pub struct ReplyRelay {
    /// Bound to the route, as the request half's.
    pub signer: Signer,
    pub unmatched: Unmatched,
    /// Where replies may go.
    pub allow: ReplyAllow,
}

impl ReplyRelay {
    /// Restores the requester's correlation id and puts the requester's reply address in
    /// the reply-to, where the reply sink reads its destination.
    pub fn restore(&self, message: &mut Message) -> Result<(), Refusal> {
        let token = message
            .correlation_id
            .as_deref()
            .ok_or(Refusal::NoCorrelation)?;
        let claims = self.signer.decode(token)?;
        if SystemTime::now() > claims.deadline {
            return Err(Refusal::Late(crate::message::json::format_time(
                claims.deadline,
            )));
        }
        message.correlation_id = claims.correlation_id;
        message.reply_to = Some(claims.reply_to);
        Ok(())
    }
}

/// A correlation id for `bridge request`: unique per process and call.
pub fn new_correlation_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "req-{nanos:x}-{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_relayed_and_its_reply_restored_carry_the_original_correlation() {
        let signer = Signer::new(b"a key of some length");
        let requests = RequestRelay {
            signer: signer.clone(),
            address: "replies".into(),
            timeout: Duration::from_secs(30),
        };
        let mut request = Message::new("q");
        request.correlation_id = Some("c-1".into());
        request.reply_to = Some("amq.rabbitmq.reply-to.abc".into());
        requests.apply(&mut request);
        assert_eq!(request.reply_to.as_deref(), Some("replies"));
        assert_ne!(request.correlation_id.as_deref(), Some("c-1"));
        let mut reply = Message::new("a");
        reply.correlation_id = request.correlation_id.clone();
        let replies = ReplyRelay {
            signer,
            unmatched: Unmatched::DeadLetter,
            allow: ReplyAllow::default(),
        };
        replies.restore(&mut reply).unwrap();
        assert_eq!(reply.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(reply.reply_to.as_deref(), Some("amq.rabbitmq.reply-to.abc"));
    }

    #[test]
    fn messages_without_a_reply_address_pass_unchanged() {
        let requests = RequestRelay {
            signer: Signer::new(b"k"),
            address: "replies".into(),
            timeout: Duration::from_secs(1),
        };
        let mut event = Message::new("e");
        event.correlation_id = Some("c".into());
        requests.apply(&mut event);
        assert_eq!(event.correlation_id.as_deref(), Some("c"));
        assert_eq!(event.reply_to, None);
    }

    #[test]
    fn late_and_forged_replies_are_refused() {
        let signer = Signer::new(b"k");
        let replies = ReplyRelay {
            signer: signer.clone(),
            unmatched: Unmatched::Drop,
            allow: ReplyAllow::default(),
        };
        let late = signer.encode(&Claims {
            reply_to: "r".into(),
            correlation_id: None,
            deadline: SystemTime::now() - Duration::from_secs(1),
        });
        let mut reply = Message::new("a");
        reply.correlation_id = Some(late);
        assert!(matches!(replies.restore(&mut reply), Err(Refusal::Late(_))));
        let mut forged = Message::new("a");
        forged.correlation_id = Some("b1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA".into());
        assert!(matches!(
            replies.restore(&mut forged),
            Err(Refusal::Token(_))
        ));
        assert_eq!(
            replies.restore(&mut Message::new("x")),
            Err(Refusal::NoCorrelation)
        );
    }
}
