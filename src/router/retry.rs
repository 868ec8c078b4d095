//! Retry schedules: exponential backoff with jitter, bounded in attempts and total time,
//! built from a route's [`RetryPolicy`] with the `backon` crate.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::RetryPolicy;

/// The waits between attempts while a sink's broker is unavailable: the same growth and
/// cap as [`schedule`], without an end (an outage is waited out, not dead-lettered).
pub fn unavailable_schedule(policy: &RetryPolicy) -> impl Iterator<Item = Duration> + Send + use<> {
    ExponentialBuilder::new()
        .with_min_delay(policy.initial_backoff)
        .with_max_delay(policy.max_backoff)
        .with_factor(policy.multiplier)
        .with_max_times(usize::MAX)
        .with_jitter()
        .build()
}

/// The waits before the second, third, ... attempt; ends when attempts or time run out.
pub fn schedule(policy: &RetryPolicy) -> impl Iterator<Item = Duration> + Send + use<> {
    let retries = policy.max_attempts.saturating_sub(1) as usize;
    ExponentialBuilder::new()
        .with_min_delay(policy.initial_backoff)
        .with_max_delay(policy.max_backoff)
        .with_factor(policy.multiplier)
        .with_max_times(retries)
        .with_total_delay(Some(policy.max_elapsed))
        .with_jitter()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, elapsed: Duration) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_elapsed: elapsed,
        }
    }

    #[test]
    fn gives_one_wait_per_retry() {
        assert_eq!(schedule(&policy(4, Duration::from_secs(60))).count(), 3);
        assert_eq!(schedule(&policy(1, Duration::from_secs(60))).count(), 0);
    }

    #[test]
    fn waits_grow_with_jitter_and_stay_under_the_cap() {
        let waits: Vec<_> = schedule(&policy(8, Duration::from_secs(600))).collect();
        assert!(waits[0] >= Duration::from_millis(100) && waits[0] < Duration::from_millis(200));
        assert!(waits.iter().all(|w| *w < Duration::from_secs(2)));
    }

    #[test]
    fn total_time_bounds_the_schedule() {
        let waits: Vec<_> = schedule(&policy(100, Duration::from_secs(3))).collect();
        assert!(waits.iter().sum::<Duration>() <= Duration::from_secs(3));
        assert!(waits.len() < 99);
    }
}
