//! Which reply addresses a requester may name (`reply.allow`).
//!
//! A requester is not trusted: its reply-to is what it wrote, and bridge publishes the
//! reply there with its own credentials. Without a rule, a request could make bridge write
//! into any queue, exchange, partition or foreign account its credentials reach. A pattern
//! list says where replies may go:
//! - `default`: what the request connection's system calls a plain reply address, a queue
//!   or topic name (with RabbitMQ's direct reply-to, an SNS topic ARN of the connection's
//!   own account, a Pub/Sub topic of its own project); never an exchange with a routing
//!   key, a Kafka partition, a queue URL, or another account's or project's address.
//! - any other text: a pattern of the address as the requester wrote it, where `*` matches
//!   any run of characters without `/` or `:` and `**` any run at all.
//!
//! Matching costs the pattern's length times the address's (both bounded: the pattern by
//! the routes file, the address by the message limits), with no backtracking.

/// One entry of `reply.allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// The request system's own rule for plain addresses.
    Default,
    Glob(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(char),
    /// `*`: anything without `/` or `:`.
    Name,
    /// `**`: anything.
    Any,
}

/// The compiled `reply.allow` of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAllow(Vec<Pattern>);

impl Default for ReplyAllow {
    fn default() -> Self {
        ReplyAllow(vec![Pattern::Default])
    }
}

impl ReplyAllow {
    /// Compiles the patterns as written; an empty pattern is refused.
    pub fn compile(patterns: &[String]) -> Result<ReplyAllow, String> {
        patterns
            .iter()
            .map(|pattern| match pattern.as_str() {
                "" => Err("an empty pattern allows nothing; remove it".to_owned()),
                "default" => Ok(Pattern::Default),
                glob => Ok(Pattern::Glob(pieces(glob))),
            })
            .collect::<Result<_, _>>()
            .map(ReplyAllow)
    }

    /// Whether a reply may go to `address`; `plain` is the request system's rule for
    /// `default`.
    pub fn permits(&self, address: &str, plain: impl Fn(&str) -> bool) -> bool {
        self.0.iter().any(|pattern| match pattern {
            Pattern::Default => plain(address),
            Pattern::Glob(pieces) => matches(pieces, address),
        })
    }
}

fn pieces(glob: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Piece::Any
            }
            '*' => Piece::Name,
            c => Piece::Literal(c),
        });
    }
    out
}

/// Whether `text` matches `pieces`, by dynamic programming over the positions of the
/// pattern reachable after each character.
fn matches(pieces: &[Piece], text: &str) -> bool {
    // reachable[i]: the first i pieces can match the text read so far.
    let mut reachable = vec![false; pieces.len() + 1];
    reachable[0] = true;
    close_over_wildcards(pieces, &mut reachable);
    for c in text.chars() {
        let mut next = vec![false; pieces.len() + 1];
        for (i, piece) in pieces.iter().enumerate() {
            if !reachable[i] {
                continue;
            }
            match piece {
                Piece::Literal(l) if *l == c => next[i + 1] = true,
                Piece::Literal(_) => {}
                // A wildcard stays where it is, having eaten one more character.
                Piece::Name if c != '/' && c != ':' => next[i] = true,
                Piece::Name => {}
                Piece::Any => next[i] = true,
            }
        }
        close_over_wildcards(pieces, &mut next);
        if !next.iter().any(|r| *r) {
            return false;
        }
        reachable = next;
    }
    reachable[pieces.len()]
}

/// A wildcard may match nothing: whoever reaches it also reaches the piece after it.
fn close_over_wildcards(pieces: &[Piece], reachable: &mut [bool]) {
    for i in 0..pieces.len() {
        if reachable[i] && matches!(pieces[i], Piece::Name | Piece::Any) {
            reachable[i + 1] = true;
        }
    }
}

/// The plain-address rule most systems share: one name, without `/` or `:` (a Kafka topic
/// without a partition, an SQS queue name rather than a URL, a RabbitMQ queue rather than
/// an exchange with a routing key).
pub fn is_plain_name(address: &str) -> bool {
    !address.is_empty() && !address.contains(['/', ':'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(patterns: &[&str]) -> ReplyAllow {
        ReplyAllow::compile(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_default_is_the_systems_plain_rule() {
        let default = ReplyAllow::default();
        assert!(default.permits("replies", is_plain_name));
        for refused in [
            "events/rk",
            "orders/0",
            "https://sqs/123/q",
            "arn:aws:sns:x:1:t",
            "",
        ] {
            assert!(!default.permits(refused, is_plain_name), "{refused}");
        }
    }

    #[test]
    fn single_and_double_stars() {
        let allow = allow(&[
            "replies.*",
            "events/**",
            "arn:aws:sns:eu-west-1:123456789012:*",
        ]);
        let plain = |_: &str| false;
        assert!(allow.permits("replies.abc", plain));
        assert!(allow.permits("replies.", plain));
        assert!(!allow.permits("replies.a/b", plain));
        assert!(!allow.permits("other", plain));
        assert!(allow.permits("events/a/b:c", plain));
        assert!(allow.permits("arn:aws:sns:eu-west-1:123456789012:topic", plain));
        assert!(!allow.permits("arn:aws:sns:eu-west-1:999999999999:topic", plain));
    }

    #[test]
    fn default_can_be_listed_with_patterns() {
        let allow = allow(&["default", "events/*"]);
        assert!(allow.permits("q", is_plain_name));
        assert!(allow.permits("events/rk", is_plain_name));
        assert!(!allow.permits("other/rk", is_plain_name));
    }

    #[test]
    fn matching_a_long_hostile_address_is_quick_and_correct() {
        let allow = allow(&["a*a*a*a*a*b"]);
        let address = "a".repeat(100_000);
        assert!(!allow.permits(&address, |_| false));
        assert!(allow.permits(&(address + "b"), |_| false));
    }

    #[test]
    fn an_empty_pattern_is_refused() {
        assert!(ReplyAllow::compile(&["".to_owned()]).is_err());
    }
}
