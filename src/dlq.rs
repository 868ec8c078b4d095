//! Dead letters as the `bridge dlq` commands see them: grouped for `stats` by route,
//! failing sink, error class and error text (texts that differ only in numbers, ids and
//! quoted values form one group), chosen by a [`Selection`], and restored to the message
//! that was received ([`restore`]) for `redrive`.
//!
//! Everything here reads message contents, so it is linear in what it reads: one pass
//! over each error text, whose normal form is cut at [`MAX_ERROR_CHARS`], one map lookup
//! per dead letter, and a filter whose cost CEL's own limits bound.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::expr::Condition;
use crate::message::{Message, reserved};

/// Prefix of the headers that carry a dead letter's context.
pub const CONTEXT_PREFIX: &str = "bridge-dlq-";

/// The message as the failing route received it: the dead letter without its context
/// headers (`bridge-dlq-*`), its origin, or its hop count, so that the loop guard counts
/// a redriven message's hops afresh (a real loop still stops it after `max_hops`). Body,
/// key, headers, ids, content type and timestamp are kept as they were.
pub fn restore(letter: &Message) -> Message {
    let mut message = letter.without_origin();
    message
        .headers
        .retain_names(|name| !name.starts_with(CONTEXT_PREFIX) && name != reserved::HOPS);
    message
}

/// Which dead letters a command acts on; every given criterion must hold. Criteria on
/// the context (route, sink, class, failure times) never hold for a message without it.
#[derive(Default)]
pub struct Selection {
    pub route: Option<String>,
    pub sink: Option<String>,
    pub error_class: Option<String>,
    /// CEL over the dead letter: its context is in `headers["bridge-dlq-..."]`.
    pub filter: Option<Condition>,
    /// Only dead letters whose last failure was before this time.
    pub failed_before: Option<SystemTime>,
    /// Only dead letters whose last failure was after this time.
    pub failed_after: Option<SystemTime>,
}

impl Selection {
    pub fn matches(&self, letter: &Message) -> bool {
        let text = |name: &str| letter.headers.get_text(name);
        let equal = |wanted: &Option<String>, name: &str| match wanted {
            Some(wanted) => text(name) == Some(wanted.as_str()),
            None => true,
        };
        if !(equal(&self.route, reserved::DLQ_ROUTE)
            && equal(&self.sink, reserved::DLQ_SINK)
            && equal(&self.error_class, reserved::DLQ_ERROR_CLASS))
        {
            return false;
        }
        if self.failed_before.is_some() || self.failed_after.is_some() {
            let Some(last) = text(reserved::DLQ_LAST_FAILURE)
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim()).ok())
            else {
                return false;
            };
            if self.failed_before.is_some_and(|before| last >= before)
                || self.failed_after.is_some_and(|after| last <= after)
            {
                return false;
            }
        }
        match &self.filter {
            // A filter that cannot be evaluated on this message does not select it.
            Some(filter) => filter.matches(letter).unwrap_or(false),
            None => true,
        }
    }
}

/// Longest normalised error text kept as a group's key.
pub const MAX_ERROR_CHARS: usize = 200;

/// `error` with numbers, ids and quoted values replaced by placeholders (`<n>`, `<id>`,
/// `"…"`), so that "order 42 failed" and "order 43 failed" read the same.
pub fn normalise(error: &str) -> String {
    let mut out = String::with_capacity(error.len().min(MAX_ERROR_CHARS));
    let mut chars = error.chars().peekable();
    while let Some(c) = chars.next() {
        if out.chars().count() >= MAX_ERROR_CHARS {
            out.push('…');
            break;
        }
        if matches!(c, '\'' | '"' | '`') {
            // A quoted value: skip to its closing quote (or the end).
            for next in chars.by_ref() {
                if next == c {
                    break;
                }
            }
            out.push(c);
            out.push('…');
            out.push(c);
        } else if c.is_alphanumeric() || c == '_' {
            let mut token = String::from(c);
            while let Some(&next) = chars.peek() {
                if next.is_alphanumeric() || matches!(next, '_' | '-' | '.') {
                    token.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            let trailing_dot = token.ends_with('.');
            let word = token.trim_end_matches('.');
            if word.chars().all(|c| c.is_ascii_digit() || c == '.') {
                out.push_str("<n>");
            } else if word.chars().any(|c| c.is_ascii_digit()) {
                out.push_str("<id>");
            } else {
                out.push_str(word);
            }
            if trailing_dot {
                out.push('.');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The dead-letter context of one message, as its headers give it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub route: String,
    pub sink: String,
    pub class: String,
    /// The error text, normalised.
    pub error: String,
}

/// One group of dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub count: u64,
    /// RFC 3339 times of the earliest first failure and the latest last failure.
    pub first_failure: Option<String>,
    pub last_failure: Option<String>,
    /// The error text of the first dead letter of the group, as it was.
    pub sample: String,
}

/// Dead letters counted by group.
#[derive(Debug, Default)]
pub struct Stats {
    pub groups: BTreeMap<GroupKey, Group>,
    /// Messages without `bridge-dlq-*` headers: dead-lettered by a broker's own policy.
    pub without_context: u64,
}

impl Stats {
    pub fn total(&self) -> u64 {
        self.without_context + self.groups.values().map(|g| g.count).sum::<u64>()
    }

    /// Counts one dead letter.
    pub fn add(&mut self, message: &Message) {
        let text = |name: &str| message.headers.get_text(name).map(str::to_owned);
        let Some(route) = text(reserved::DLQ_ROUTE) else {
            self.without_context += 1;
            return;
        };
        let error = text(reserved::DLQ_ERROR).unwrap_or_default();
        let key = GroupKey {
            route,
            sink: text(reserved::DLQ_SINK).unwrap_or_default(),
            class: text(reserved::DLQ_ERROR_CLASS).unwrap_or_default(),
            error: normalise(&error),
        };
        let first = text(reserved::DLQ_FIRST_FAILURE);
        let last = text(reserved::DLQ_LAST_FAILURE);
        let group = self.groups.entry(key).or_insert_with(|| Group {
            count: 0,
            first_failure: first.clone(),
            last_failure: last.clone(),
            sample: error.chars().take(MAX_ERROR_CHARS).collect(),
        });
        group.count += 1;
        // RFC 3339 times in UTC compare as text.
        if (first.is_some() && first < group.first_failure) || group.first_failure.is_none() {
            group.first_failure = first;
        }
        if last > group.last_failure {
            group.last_failure = last;
        }
    }

    /// The groups, largest first.
    pub fn by_count(&self) -> Vec<(&GroupKey, &Group)> {
        let mut groups: Vec<_> = self.groups.iter().collect();
        groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restoring_removes_the_context_and_the_hop_count_and_keeps_the_rest() {
        let mut letter = letter(
            "r",
            "order 1 refused",
            "2026-12-07T10:00:00.000Z",
            "2026-12-07T10:00:01.000Z",
        );
        letter.headers.push(reserved::DLQ_SOURCE, "kafka:orders");
        letter.headers.push(reserved::HOPS, "10");
        letter.headers.push("app", "kept");
        letter.headers.push("bridge-key", "kept too");
        letter.key = Some("k".into());
        letter.message_id = Some("id-1".into());
        let restored = restore(&letter);
        let names: Vec<&str> = restored.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["app", "bridge-key"]);
        assert_eq!(restored.body, letter.body);
        assert_eq!(restored.key, letter.key);
        assert_eq!(restored.message_id.as_deref(), Some("id-1"));
    }

    #[test]
    fn a_selection_holds_only_when_every_criterion_does() {
        let old = letter(
            "orders",
            "e",
            "2026-12-07T10:00:00.000Z",
            "2026-12-07T10:00:00.000Z",
        );
        let new = letter(
            "orders",
            "e",
            "2026-12-07T12:00:00.000Z",
            "2026-12-07T12:00:00.000Z",
        );
        let foreign = Message::new("no context");
        let noon = humantime::parse_rfc3339("2026-12-07T11:00:00Z").unwrap();
        let all = Selection::default();
        assert!(all.matches(&old) && all.matches(&foreign));
        let route = Selection {
            route: Some("orders".into()),
            ..Selection::default()
        };
        assert!(route.matches(&old) && !route.matches(&foreign));
        let other = Selection {
            sink: Some("kafka:elsewhere".into()),
            ..Selection::default()
        };
        assert!(!other.matches(&old));
        let before = Selection {
            failed_before: Some(noon),
            ..Selection::default()
        };
        assert!(before.matches(&old) && !before.matches(&new) && !before.matches(&foreign));
        let after = Selection {
            failed_after: Some(noon),
            ..Selection::default()
        };
        assert!(!after.matches(&old) && after.matches(&new));
        let filter = Selection {
            filter: Some(
                Condition::compile(r#"headers["bridge-dlq-error-class"] == "permanent""#).unwrap(),
            ),
            ..Selection::default()
        };
        assert!(filter.matches(&old) && !filter.matches(&foreign));
    }

    #[test]
    fn numbers_ids_and_quoted_values_become_placeholders() {
        assert_eq!(
            normalise("order 42 failed: 'o-9' not found"),
            "order <n> failed: '…' not found"
        );
        assert_eq!(
            normalise(
                "message is 1100000 bytes with its attributes; aws:sqs/q-7 takes at most 1048576"
            ),
            "message is <n> bytes with its attributes; aws:sqs/<id> takes at most <n>"
        );
        assert_eq!(
            normalise("id 4bf92f35-77b3-4da6 timed out after 2.5s."),
            "id <id> timed out after <id>."
        );
        assert_eq!(
            normalise("the body is not JSON (expected value at line 1 column 1)"),
            "the body is not JSON (expected value at line <n> column <n>)"
        );
        let long = "x ".repeat(1_000);
        assert!(normalise(&long).chars().count() <= MAX_ERROR_CHARS + 1);
    }

    fn letter(route: &str, error: &str, first: &str, last: &str) -> Message {
        let mut message = Message::new("m");
        message.headers.push(reserved::DLQ_ROUTE, route);
        message.headers.push(reserved::DLQ_SINK, "kafka:out");
        message.headers.push(reserved::DLQ_ERROR_CLASS, "permanent");
        message.headers.push(reserved::DLQ_ERROR, error);
        message.headers.push(reserved::DLQ_FIRST_FAILURE, first);
        message.headers.push(reserved::DLQ_LAST_FAILURE, last);
        message
    }

    #[test]
    fn errors_differing_only_in_ids_form_one_group_with_its_times() {
        let mut stats = Stats::default();
        stats.add(&letter(
            "r",
            "order 1 refused",
            "2026-12-07T10:00:02.000Z",
            "2026-12-07T10:00:03.000Z",
        ));
        stats.add(&letter(
            "r",
            "order 2 refused",
            "2026-12-07T10:00:01.000Z",
            "2026-12-07T10:00:01.500Z",
        ));
        stats.add(&letter(
            "r",
            "not JSON",
            "2026-12-07T10:00:05.000Z",
            "2026-12-07T10:00:05.000Z",
        ));
        stats.add(&letter(
            "other",
            "order 3 refused",
            "2026-12-07T10:00:00.000Z",
            "2026-12-07T10:00:00.000Z",
        ));
        stats.add(&Message::new("a broker's own dead letter"));
        assert_eq!(stats.total(), 5);
        assert_eq!(stats.without_context, 1);
        let groups = stats.by_count();
        assert_eq!(groups.len(), 3);
        let (key, group) = groups[0];
        assert_eq!(
            (key.route.as_str(), key.error.as_str()),
            ("r", "order <n> refused")
        );
        assert_eq!(group.count, 2);
        assert_eq!(group.sample, "order 1 refused");
        assert_eq!(
            group.first_failure.as_deref(),
            Some("2026-12-07T10:00:01.000Z")
        );
        assert_eq!(
            group.last_failure.as_deref(),
            Some("2026-12-07T10:00:03.000Z")
        );
    }
}
