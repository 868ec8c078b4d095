//! Which topics the sources of one Kafka connection read in each consumer group, so that
//! routes sharing a group are pointed out.
//!
//! The members of a consumer group rebalance together: each route's consumer that joins or
//! leaves makes the group's other consumers stop until the group is balanced again, so
//! restarting one route pauses the others. At start-up the joins also come one after
//! another (on tansu, ten routes in one group needed 7 s until the last one consumed;
//! with a group each, 0.6 s). Sharing a group is legal Kafka, so it is only a warning,
//! given each time another topic joins a group.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// The topics read in each group, as sources open.
#[derive(Debug, Default)]
pub struct GroupMembers {
    topics: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl GroupMembers {
    /// Notes that a source reads `topic` in `group`. Returns the warning to log when this
    /// adds a topic to a group that already had another (a source opened again for the
    /// same topic adds nothing).
    pub fn join(&self, group: &str, topic: &str) -> Option<String> {
        let mut topics = self.topics.lock().expect("group members lock");
        let members = topics.entry(group.to_owned()).or_default();
        if !members.insert(topic.to_owned()) || members.len() < 2 {
            return None;
        }
        let listed = members
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "routes read topics {listed} in one Kafka consumer group `{group}`: a consumer that \
             joins or leaves the group makes the others stop until it is rebalanced; give each \
             route its own `options.group_id` (docs/adapters/kafka.md)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_topic_in_a_group_is_pointed_out_with_every_topic() {
        let members = GroupMembers::default();
        assert_eq!(members.join("g", "orders"), None);
        let warning = members.join("g", "payments").expect("a warning");
        assert!(warning.contains("`orders`, `payments`"), "{warning}");
        assert!(warning.contains("group `g`"), "{warning}");
    }

    #[test]
    fn reopening_a_source_or_another_group_is_not_sharing() {
        let members = GroupMembers::default();
        assert_eq!(members.join("g", "orders"), None);
        assert_eq!(members.join("g", "orders"), None, "the same topic again");
        assert_eq!(members.join("h", "payments"), None, "a group of its own");
    }
}
