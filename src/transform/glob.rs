//! Header-name patterns of `transform.headers.remove` and `keep`: a name, or a glob where
//! `*` stands for any run of characters (`x-internal-*`, `*-debug`). Matching is
//! case-sensitive, as header names are on Kafka, RabbitMQ, SQS and Pub/Sub, and takes time
//! linear in the name for a given pattern (no backtracking beyond the last `*`).

/// A compiled name pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    /// The literal pieces between `*`s.
    pieces: Vec<String>,
    starts_with_star: bool,
    ends_with_star: bool,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("a header name or pattern cannot be empty".into());
        }
        Ok(Glob {
            pieces: pattern
                .split('*')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            starts_with_star: pattern.starts_with('*'),
            ends_with_star: pattern.ends_with('*'),
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        let mut rest = name;
        let last = self.pieces.len();
        for (i, piece) in self.pieces.iter().enumerate() {
            let first = i == 0;
            if first && !self.starts_with_star {
                match rest.strip_prefix(piece.as_str()) {
                    Some(after) => rest = after,
                    None => return false,
                }
                if last == 1 && !self.ends_with_star {
                    return rest.is_empty();
                }
                continue;
            }
            if i + 1 == last && !self.ends_with_star {
                // The last piece must end the name; taking the rightmost occurrence is
                // what leaves the most room to the pieces before it.
                return rest.len() >= piece.len() && rest.ends_with(piece.as_str());
            }
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        // No pieces (`*`, `**`) matches anything; otherwise the pattern ended with `*`
        // or consumed the whole name.
        self.pieces.is_empty() || self.ends_with_star || rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn matches(pattern: &str, name: &str) -> bool {
        Glob::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn names_and_globs() {
        assert!(matches("debug", "debug"));
        assert!(!matches("debug", "debugger"));
        assert!(!matches("debug", "Debug"));
        assert!(matches("x-internal-*", "x-internal-trace"));
        assert!(matches("x-internal-*", "x-internal-"));
        assert!(!matches("x-internal-*", "x-intern"));
        assert!(matches("*-debug", "app-debug"));
        assert!(!matches("*-debug", "app-debug-2"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "a-b-c"));
        assert!(matches("a*b*c", "abbc"));
        assert!(!matches("a*b*c", "a-c-b"));
        assert!(matches("*mid*", "has-mid-dle"));
        assert!(!matches("*mid*", "nothing"));
        assert!(matches("a*a", "aa"));
        assert!(!matches("a*a", "a"));
        assert!(Glob::new("").is_err());
    }
}
