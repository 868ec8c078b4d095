//! Which offsets a Kafka source may commit.
//!
//! Offsets are delivered in order per partition and settled in any order. The commit point
//! of a partition is the lowest offset still unsettled (everything below it is done), or
//! one past the highest delivered offset when nothing is pending; it never moves back.
//! Each assignment of a partition gets a new generation, so settlements of messages from
//! an earlier assignment (before a rebalance took the partition away) are ignored.
//!
//! It also counts the records a crash would make a sink receive twice: every record
//! handed to the router at or past the partition's last commit point the broker confirmed
//! (or, before the first commit, the offset the assignment resumed from). Records read
//! ahead but not handed out yet are read again after a crash but reach no sink twice, so
//! they do not count. The source hands out nothing more while that count is at its limit,
//! which is what bounds duplicates.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// A topic and partition. The topic is shared so that keying a record costs no allocation.
pub type TopicPartition = (Arc<str>, i32);

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    pending: BTreeSet<i64>,
    next_after_delivered: Option<i64>,
    /// The last commit point the broker confirmed, or where the assignment resumed.
    confirmed: Option<i64>,
    /// Offsets handed to the router at or past `confirmed`, in order: delivered again
    /// after a crash.
    unconfirmed: VecDeque<i64>,
}

/// Delivered and settled offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionState>,
    generations: u64,
    /// Whether the reader has its partitions paused now: a partition assigned meanwhile
    /// must be paused too.
    pub paused: bool,
    /// Whether the reader has ever paused its partitions: librdkafka keeps a partition
    /// paused across a rebalance, so one taken away while paused must be resumed when it
    /// comes back.
    pub ever_paused: bool,
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

    /// Records that `offset` was read: it holds the commit point back until it is settled.
    pub fn read(&mut self, partition: &TopicPartition, offset: i64) {
        if let Some(state) = self.partitions.get_mut(partition) {
            state.pending.insert(offset);
            state.confirmed.get_or_insert(offset);
            state.next_after_delivered = Some(
                state
                    .next_after_delivered
                    .map_or(offset + 1, |n| n.max(offset + 1)),
            );
        }
    }

    /// Records that `offset`, read before, was handed to the router; ignored when the
    /// partition was reassigned since (the new owner reads it again).
    pub fn handed_out(&mut self, partition: &TopicPartition, generation: u64, offset: i64) {
        if let Some(state) = self.partitions.get_mut(partition)
            && state.generation == generation
        {
            state.unconfirmed.push_back(offset);
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

    /// Commit points (next offset to read per partition) past what the broker confirmed.
    /// A commit that failed is simply offered again.
    pub fn take_commits(&self) -> Vec<(TopicPartition, i64)> {
        self.commits_where(|_| true, false)
    }

    /// Every partition's commit point, moved or not (the last commit before closing).
    pub fn all_commits(&self) -> Vec<(TopicPartition, i64)> {
        self.commits_where(|_| true, true)
    }

    /// Commit points of some partitions only (before they are revoked), moved or not.
    pub fn commits_for(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        self.commits_where(|partition| partitions.contains(partition), true)
    }

    /// Records that the broker accepted `commits`: the records before each point will not
    /// be read again after a crash.
    pub fn confirm(&mut self, commits: &[(TopicPartition, i64)]) {
        for (partition, point) in commits {
            if let Some(state) = self.partitions.get_mut(partition) {
                state.confirmed = Some(state.confirmed.map_or(*point, |c| c.max(*point)));
                while state
                    .unconfirmed
                    .front()
                    .is_some_and(|offset| offset < point)
                {
                    state.unconfirmed.pop_front();
                }
            }
        }
    }

    /// Records handed out that a crash now would deliver again.
    pub fn unconfirmed(&self) -> usize {
        self.partitions.values().map(|s| s.unconfirmed.len()).sum()
    }

    fn commits_where(
        &self,
        wanted: impl Fn(&TopicPartition) -> bool,
        unchanged_too: bool,
    ) -> Vec<(TopicPartition, i64)> {
        let mut commits = Vec::new();
        for (partition, state) in &self.partitions {
            if !wanted(partition) {
                continue;
            }
            let point = match state.pending.first() {
                Some(lowest) => Some(*lowest),
                None => state.next_after_delivered,
            };
            if let Some(point) = point
                && (unchanged_too || state.confirmed.is_none_or(|c| point > c))
            {
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

    /// Reads `offset` and hands it out at once.
    fn deliver(tracker: &mut OffsetTracker, partition: &TopicPartition, offset: i64) {
        let generation = tracker.generation(partition);
        tracker.read(partition, offset);
        tracker.handed_out(partition, generation, offset);
    }

    /// Takes the commits and confirms them, as a successful commit does.
    fn commit(tracker: &mut OffsetTracker) -> Vec<(TopicPartition, i64)> {
        let commits = tracker.take_commits();
        tracker.confirm(&commits);
        commits
    }

    #[test]
    fn commits_only_the_contiguous_settled_prefix() {
        let mut tracker = OffsetTracker::default();
        let generation = tracker.assign(p());
        for offset in 10..15 {
            deliver(&mut tracker, &p(), offset);
        }
        tracker.settled(&p(), generation, 10);
        tracker.settled(&p(), generation, 12);
        assert_eq!(commit(&mut tracker), vec![(p(), 11)]);
        tracker.settled(&p(), generation, 11);
        tracker.settled(&p(), generation, 13);
        tracker.settled(&p(), generation, 14);
        assert_eq!(commit(&mut tracker), vec![(p(), 15)]);
        assert!(tracker.take_commits().is_empty(), "nothing new to commit");
    }

    #[test]
    fn a_commit_not_confirmed_is_offered_again() {
        let mut tracker = OffsetTracker::default();
        let generation = tracker.assign(p());
        deliver(&mut tracker, &p(), 0);
        tracker.settled(&p(), generation, 0);
        assert_eq!(tracker.take_commits(), vec![(p(), 1)]);
        assert_eq!(
            tracker.take_commits(),
            vec![(p(), 1)],
            "the first one failed"
        );
        tracker.confirm(&[(p(), 1)]);
        assert!(tracker.take_commits().is_empty());
    }

    #[test]
    fn committing_some_partitions_leaves_the_others_to_commit_later() {
        let mut tracker = OffsetTracker::default();
        let q: TopicPartition = ("t".into(), 1);
        let (gp, gq) = (tracker.assign(p()), tracker.assign(q.clone()));
        deliver(&mut tracker, &p(), 0);
        deliver(&mut tracker, &q, 0);
        tracker.settled(&p(), gp, 0);
        tracker.settled(&q, gq, 0);
        let before_revoke = tracker.commits_for(&[p()]);
        assert_eq!(before_revoke, vec![(p(), 1)]);
        tracker.confirm(&before_revoke);
        assert_eq!(tracker.take_commits(), vec![(q, 1)]);
    }

    #[test]
    fn settlements_from_an_earlier_assignment_are_ignored() {
        let mut tracker = OffsetTracker::default();
        let old = tracker.assign(p());
        deliver(&mut tracker, &p(), 5);
        tracker.revoke(&p());
        let new = tracker.assign(p());
        deliver(&mut tracker, &p(), 5);
        tracker.settled(&p(), old, 5);
        assert_eq!(tracker.pending(), 1);
        tracker.settled(&p(), new, 5);
        assert_eq!(tracker.take_commits(), vec![(p(), 6)]);
    }

    #[test]
    fn nothing_to_commit_while_the_resume_point_is_unsettled() {
        let mut tracker = OffsetTracker::default();
        tracker.assign(p());
        deliver(&mut tracker, &p(), 0);
        assert!(tracker.take_commits().is_empty());
        assert_eq!(tracker.all_commits(), vec![(p(), 0)]);
    }

    #[test]
    fn unconfirmed_counts_what_a_crash_would_read_again() {
        let mut tracker = OffsetTracker::default();
        let q: TopicPartition = ("t".into(), 1);
        let (gp, gq) = (tracker.assign(p()), tracker.assign(q.clone()));
        // Offsets may have gaps (compaction, transaction markers): records are counted.
        for offset in [100, 101, 105, 110] {
            deliver(&mut tracker, &p(), offset);
        }
        deliver(&mut tracker, &q, 7);
        assert_eq!(tracker.unconfirmed(), 5);
        tracker.settled(&p(), gp, 100);
        tracker.settled(&p(), gp, 105);
        assert_eq!(tracker.unconfirmed(), 5, "settled is not yet committed");
        assert_eq!(commit(&mut tracker), vec![(p(), 101)]);
        assert_eq!(tracker.unconfirmed(), 4);
        tracker.settled(&p(), gp, 101);
        tracker.settled(&p(), gp, 110);
        tracker.settled(&q, gq, 7);
        commit(&mut tracker);
        assert_eq!(tracker.unconfirmed(), 0);
        tracker.revoke(&q);
        deliver(&mut tracker, &p(), 111);
        assert_eq!(tracker.unconfirmed(), 1);
    }
}
