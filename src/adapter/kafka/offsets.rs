//! Which offsets a Kafka source may commit.
//!
//! Offsets are delivered in order per partition and settled in any order. The commit point
//! of a partition is the lowest offset still unsettled (everything below it is done), or
//! one past the highest delivered offset when nothing is pending; it never moves back.
//! Each assignment of a partition gets a new generation, so settlements of messages from
//! an earlier assignment (before a rebalance took the partition away) are ignored.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A topic and partition. The topic is shared so that keying a record costs no allocation.
pub type TopicPartition = (Arc<str>, i32);

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    pending: BTreeSet<i64>,
    next_after_delivered: Option<i64>,
    committed: Option<i64>,
}

/// Delivered and settled offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionState>,
    generations: u64,
}

impl OffsetTracker {
    /// Starts tracking a newly assigned partition; returns its generation.
    pub fn assign(&mut self, partition: TopicPartition) -> u64 {
        self.generations += 1;
        let generation = self.generations;
        self.partitions.insert(
            partition,
            PartitionState {
                generation,
                ..PartitionState::default()
            },
        );
        generation
    }

    /// Stops tracking a partition that was revoked.
    pub fn revoke(&mut self, partition: &TopicPartition) {
        self.partitions.remove(partition);
    }

    /// The current generation of a partition, assigning it if it is new.
    pub fn generation(&mut self, partition: &TopicPartition) -> u64 {
        match self.partitions.get(partition) {
            Some(state) => state.generation,
            None => self.assign(partition.clone()),
        }
    }

    /// Whether `generation` is the current assignment of `partition`.
    pub fn is_current(&self, partition: &TopicPartition, generation: u64) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|s| s.generation == generation)
    }

    /// Records that `offset` was handed to the router.
    pub fn delivered(&mut self, partition: &TopicPartition, offset: i64) {
        if let Some(state) = self.partitions.get_mut(partition) {
            state.pending.insert(offset);
            state.next_after_delivered = Some(
                state
                    .next_after_delivered
                    .map_or(offset + 1, |n| n.max(offset + 1)),
            );
        }
    }

    /// Records that `offset` is done; ignored when the partition was reassigned since.
    pub fn settled(&mut self, partition: &TopicPartition, generation: u64, offset: i64) {
        if let Some(state) = self.partitions.get_mut(partition)
            && state.generation == generation
        {
            state.pending.remove(&offset);
        }
    }

    /// Offsets to commit now (next offset to read per partition) that moved since the last
    /// call, marked as committed.
    pub fn take_commits(&mut self) -> Vec<(TopicPartition, i64)> {
        self.commits_where(|_| true, false)
    }

    /// Every partition's commit point, moved or not: committing them again repairs a
    /// commit that failed on the way.
    pub fn all_commits(&mut self) -> Vec<(TopicPartition, i64)> {
        self.commits_where(|_| true, true)
    }

    /// Offsets to commit for some partitions only (before they are revoked).
    pub fn take_commits_for(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Vec<(TopicPartition, i64)> {
        self.commits_where(|partition| partitions.contains(partition), true)
    }

    fn commits_where(
        &mut self,
        wanted: impl Fn(&TopicPartition) -> bool,
        unchanged_too: bool,
    ) -> Vec<(TopicPartition, i64)> {
        let mut commits = Vec::new();
        for (partition, state) in &mut self.partitions {
            if !wanted(partition) {
                continue;
            }
            let point = match state.pending.first() {
                Some(lowest) => Some(*lowest),
                None => state.next_after_delivered,
            };
            if let Some(point) = point
                && (unchanged_too || state.committed.is_none_or(|c| point > c))
            {
                state.committed = Some(point);
                commits.push((partition.clone(), point));
            }
        }
        commits
    }

    /// Deliveries not settled yet, in all partitions.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.partitions.values().map(|s| s.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> TopicPartition {
        ("t".into(), 0)
    }

    #[test]
    fn commits_only_the_contiguous_settled_prefix() {
        let mut tracker = OffsetTracker::default();
        let generation = tracker.assign(p());
        for offset in 10..15 {
            tracker.delivered(&p(), offset);
        }
        tracker.settled(&p(), generation, 10);
        tracker.settled(&p(), generation, 12);
        assert_eq!(tracker.take_commits(), vec![(p(), 11)]);
        tracker.settled(&p(), generation, 11);
        tracker.settled(&p(), generation, 13);
        tracker.settled(&p(), generation, 14);
        assert_eq!(tracker.take_commits(), vec![(p(), 15)]);
        assert!(tracker.take_commits().is_empty(), "nothing new to commit");
    }

    #[test]
    fn committing_some_partitions_leaves_the_others_to_commit_later() {
        let mut tracker = OffsetTracker::default();
        let q: TopicPartition = ("t".into(), 1);
        let (gp, gq) = (tracker.assign(p()), tracker.assign(q.clone()));
        tracker.delivered(&p(), 0);
        tracker.delivered(&q, 0);
        tracker.settled(&p(), gp, 0);
        tracker.settled(&q, gq, 0);
        assert_eq!(tracker.take_commits_for(&[p()]), vec![(p(), 1)]);
        assert_eq!(tracker.take_commits(), vec![(q, 1)]);
    }

    #[test]
    fn settlements_from_an_earlier_assignment_are_ignored() {
        let mut tracker = OffsetTracker::default();
        let old = tracker.assign(p());
        tracker.delivered(&p(), 5);
        tracker.revoke(&p());
        let new = tracker.assign(p());
        tracker.delivered(&p(), 5);
        tracker.settled(&p(), old, 5);
        assert_eq!(tracker.pending(), 1);
        tracker.settled(&p(), new, 5);
        assert_eq!(tracker.take_commits(), vec![(p(), 6)]);
    }

    #[test]
    fn commit_point_stays_at_the_first_unsettled_offset() {
        let mut tracker = OffsetTracker::default();
        tracker.assign(p());
        tracker.delivered(&p(), 0);
        assert_eq!(tracker.take_commits(), vec![(p(), 0)]);
        assert!(tracker.take_commits().is_empty());
    }
}
