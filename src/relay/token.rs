//! Correlation tokens: what bridge puts in the correlation id of a relayed request.
//!
//! A token carries everything needed to route the reply back: the requester's reply
//! address, its original correlation id and a deadline. It is signed with HMAC-SHA-256
//! (truncated to 128 bits) under a key from the routes file, so a replier that alters or
//! invents a correlation id cannot redirect a reply anywhere: the signature no longer
//! matches and the reply is refused. Because the token holds all the state, any bridge
//! replica can relay any reply, and a restart loses nothing.
//!
//! A token is bound to the route that made it: the route's name is signed with it, so a
//! token minted by one route is refused by every other (a requester cannot have route A's
//! token relayed by route B, whose reply address rules differ). Within its route a token
//! can be replayed until its deadline: a replier that answers twice is relayed twice,
//! unless the route deduplicates by token (`reply.dedup`).
//!
//! Format: `b2.` + base64url(payload) + `.` + base64url(first 16 bytes of the HMAC of the
//! route name's length (4 bytes, big endian), the route name, and `b2.` + payload).
//! Payload: deadline in milliseconds since the epoch (8 bytes, big endian), then the reply
//! address and the original correlation id, each as a 2-byte big-endian length and UTF-8
//! bytes (length 0xFFFF means "no correlation id"). Tokens of the earlier format `b1.`
//! (the same, without the route in the HMAC) are still accepted by any route of the key
//! until their deadline, so requests in flight across an upgrade get their replies.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "b2.";
/// Tokens made before routes were bound into the signature.
const UNBOUND_PREFIX: &str = "b1.";
const TAG_BYTES: usize = 16;
const NO_CORRELATION: u16 = u16::MAX;

/// What a token says about the request it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Where the requester wants the reply, in its own system's terms.
    pub reply_to: String,
    /// The requester's correlation id, restored on the reply.
    pub correlation_id: Option<String>,
    /// After this, the reply is late.
    pub deadline: SystemTime,
}

/// Why a correlation id was not accepted as a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the correlation id is not a bridge token")]
    NotAToken,
    #[error("the correlation id's signature does not match: forged or altered")]
    BadSignature,
    #[error("the token is malformed")]
    Malformed,
}

/// Signs and reads tokens with one key, for one route.
#[derive(Clone)]
pub struct Signer {
    key: Arc<[u8]>,
    route: Arc<str>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer with `key` for the route with no name; [`for_route`](Self::for_route)
    /// binds it to one.
    pub fn new(key: &[u8]) -> Signer {
        Signer {
            key: key.into(),
            route: "".into(),
        }
    }

    /// The same key, binding tokens to `route`.
    pub fn for_route(&self, route: &str) -> Signer {
        Signer {
            key: self.key.clone(),
            route: route.into(),
        }
    }

    /// The HMAC over what a token of this route signs: for `b2.` tokens the route name and
    /// the signed text, for `b1.` tokens the signed text alone.
    fn mac(&self, signed: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        if !signed.starts_with(UNBOUND_PREFIX) {
            let route = self.route.as_bytes();
            mac.update(&u32::try_from(route.len()).unwrap_or(u32::MAX).to_be_bytes());
            mac.update(route);
        }
        mac.update(signed.as_bytes());
        mac
    }

    fn tag(&self, signed: &str) -> Vec<u8> {
        self.mac(signed).finalize().into_bytes()[..TAG_BYTES].to_vec()
    }

    /// The token for a request whose reply goes to `claims.reply_to`.
    pub fn encode(&self, claims: &Claims) -> String {
        let millis = claims
            .deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut payload = millis.to_be_bytes().to_vec();
        let push = |payload: &mut Vec<u8>, text: &str| {
            // Longer texts are cut, on a character boundary so that they still decode.
            let mut end = text.len().min(usize::from(NO_CORRELATION) - 1);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let bytes = &text.as_bytes()[..end];
            payload.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            payload.extend_from_slice(bytes);
        };
        push(&mut payload, &claims.reply_to);
        match &claims.correlation_id {
            Some(id) => push(&mut payload, id),
            None => payload.extend_from_slice(&NO_CORRELATION.to_be_bytes()),
        }
        let signed = format!("{PREFIX}{}", B64.encode(&payload));
        let tag = B64.encode(self.tag(&signed));
        format!("{signed}.{tag}")
    }

    /// Verifies and reads a token of this route (or an earlier unbound one).
    pub fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        let prefix = [PREFIX, UNBOUND_PREFIX]
            .into_iter()
            .find(|prefix| token.starts_with(prefix))
            .ok_or(TokenError::NotAToken)?;
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        // A shorter tag would be easier to guess: only the full 16 bytes are accepted.
        if tag.len() != TAG_BYTES {
            return Err(TokenError::BadSignature);
        }
        self.mac(signed)
            .verify_truncated_left(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let encoded = signed.strip_prefix(prefix).ok_or(TokenError::Malformed)?;
        let payload = B64.decode(encoded).map_err(|_| TokenError::Malformed)?;
        let (millis, rest) = payload.split_at_checked(8).ok_or(TokenError::Malformed)?;
        let millis = u64::from_be_bytes(millis.try_into().map_err(|_| TokenError::Malformed)?);
        let (reply_to, rest) = read_text(rest)?.ok_or(TokenError::Malformed)?;
        let (correlation_id, rest) = match read_text(rest)? {
            Some((id, rest)) => (Some(id), rest),
            None => (None, &rest[2..]),
        };
        if !rest.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(Claims {
            reply_to,
            correlation_id,
            deadline: UNIX_EPOCH + Duration::from_millis(millis),
        })
    }
}

/// A length-prefixed text, or `None` for the "absent" length.
fn read_text(bytes: &[u8]) -> Result<Option<(String, &[u8])>, TokenError> {
    let (length, rest) = bytes.split_at_checked(2).ok_or(TokenError::Malformed)?;
    let length = u16::from_be_bytes([length[0], length[1]]);
    if length == NO_CORRELATION {
        return Ok(None);
    }
    let (text, rest) = rest
        .split_at_checked(usize::from(length))
        .ok_or(TokenError::Malformed)?;
    let text = String::from_utf8(text.to_vec()).map_err(|_| TokenError::Malformed)?;
    Ok(Some((text, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            reply_to: "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAyNzk2NjM4NQAAJ1cAAAAAZ3".into(),
            correlation_id: Some("3f2a9c1e-5d7b-4e0f-9a8b-1c2d3e4f5a6b".into()),
            deadline: UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
        }
    }

    #[test]
    fn a_token_reads_back_what_it_was_made_from() {
        let signer = Signer::new(b"secret");
        let token = signer.encode(&claims());
        assert_eq!(signer.decode(&token), Ok(claims()));
        let without = Claims {
            correlation_id: None,
            ..claims()
        };
        assert_eq!(signer.decode(&signer.encode(&without)), Ok(without));
    }

    #[test]
    fn tokens_fit_an_amqp_short_string_for_usual_addresses() {
        assert!(Signer::new(b"k").encode(&claims()).len() <= 255);
    }

    #[test]
    fn an_altered_token_or_another_key_is_refused() {
        let signer = Signer::new(b"secret");
        let token = signer.encode(&claims());
        let mut altered = token.clone().into_bytes();
        altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(signer.decode(&altered), Err(TokenError::BadSignature));
        assert_eq!(
            Signer::new(b"other").decode(&token),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            signer.decode("plain-correlation-id"),
            Err(TokenError::NotAToken)
        );
        assert!(signer.decode("b1.x.y").is_err());
        assert!(signer.decode("b2.x.y").is_err());
    }

    #[test]
    fn a_token_of_one_route_is_refused_by_another() {
        let key = Signer::new(b"secret");
        let token = key.for_route("orders").encode(&claims());
        assert_eq!(key.for_route("orders").decode(&token), Ok(claims()));
        assert_eq!(
            key.for_route("payments").decode(&token),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tokens_made_before_routes_were_bound_are_still_read() {
        // A `b1.` token as the earlier format made it: the HMAC of the signed text alone.
        let key = b"secret";
        let b2 = Signer::new(key).encode(&claims());
        let payload = b2.strip_prefix("b2.").unwrap().rsplit_once('.').unwrap().0;
        let signed = format!("b1.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(signed.as_bytes());
        let tag = B64.encode(&mac.finalize().into_bytes()[..TAG_BYTES]);
        let b1 = format!("{signed}.{tag}");
        assert_eq!(Signer::new(key).for_route("any").decode(&b1), Ok(claims()));
        assert_eq!(
            Signer::new(b"other").decode(&b1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn decoding_garbage_never_panics() {
        let signer = Signer::new(b"secret");
        for text in [
            "b1.",
            "b1..",
            "b1.AAAA.",
            "b1.AAAAAAAAAAAAAAAAAA.AAAA",
            "b1.////.////",
            "b2.",
            "b2.AAAA.",
        ] {
            let _ = signer.decode(text);
        }
    }
}
