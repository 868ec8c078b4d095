//! Rate limits (`routes[].rate`, `routes[].to[].rate`): a GCRA limiter from `governor`,
//! read against tokio's clock so that tests drive it with a paused clock.
//!
//! A limited step waits for its turn, which holds the route back (backpressure); nothing is
//! ever dropped. Each wait is recorded in `bridge_throttle_wait_seconds`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use metrics::Histogram;

use crate::config::RatePlan;

/// How late a timer may wake: tokio's timers have millisecond ticks.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// tokio's clock, as time since the limiter was made.
#[derive(Debug, Clone)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// One rate limit, shared by everything it limits.
pub struct RateLimit {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
    waited: Histogram,
}

impl RateLimit {
    /// `waited` records each wait, in seconds.
    pub fn new(plan: &RatePlan, waited: Histogram) -> RateLimit {
        let period = (plan.per / plan.messages).max(Duration::from_nanos(1));
        // A wait ends on the timer's next millisecond tick, up to TIMER_SLACK late; a burst
        // smaller than what the rate lets through in that time would lose those slots for
        // good, and the rate would not be held.
        let slack =
            u32::try_from(TIMER_SLACK.as_nanos() / period.as_nanos().max(1)).unwrap_or(u32::MAX);
        let burst = NonZeroU32::new(plan.burst.max(slack)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .expect("a period of at least 1ns")
            .allow_burst(burst);
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        RateLimit {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            waited,
        }
    }

    /// Waits until one more message may pass.
    pub async fn until_ready(&self) {
        let mut total = Duration::ZERO;
        while let Err(not_until) = self.limiter.check() {
            let wait = not_until.wait_time_from(self.clock.now());
            total += wait;
            tokio::time::sleep(wait).await;
        }
        if !total.is_zero() {
            self.waited.record(total.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(messages: u32, per: Duration, burst: u32) -> RateLimit {
        RateLimit::new(
            &RatePlan {
                messages,
                per,
                burst,
            },
            Histogram::noop(),
        )
    }

    /// How many messages pass in `span` of (paused) time when asked as fast as possible.
    async fn passed_in(limit: &RateLimit, span: Duration) -> u64 {
        let start = tokio::time::Instant::now();
        let mut passed = 0;
        loop {
            limit.until_ready().await;
            if start.elapsed() > span {
                return passed;
            }
            passed += 1;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_a_second_holds_over_thirty_seconds() {
        let limit = limit(1_000, Duration::from_secs(1), 1);
        let passed = passed_in(&limit, Duration::from_secs(30)).await;
        assert!(
            (29_900..=30_100).contains(&passed),
            "{passed} messages in 30s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_at_once_then_the_rate_holds() {
        let limit = limit(10, Duration::from_secs(1), 10);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            limit.until_ready().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the burst waits for nothing"
        );
        limit.until_ready().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(99) && waited <= Duration::from_millis(101),
            "the eleventh waits one period: {waited:?}"
        );
    }
}
