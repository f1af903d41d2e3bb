//! The replica's budget of Stripe requests: every HTTP request to Stripe (each page, each
//! retry) waits here first. One limiter holds all of them to `stripe.requests_per_second`;
//! background work (the webhook inbox, the remedies queue, reconciliation) also passes a second
//! limiter at `background_share` of that rate, so what a user waits for (verify after checkout,
//! a subscription change) always finds room, and reconciliation passes a third at
//! `reconcile_share`, so a full re-read never takes the inbox's whole share. A 429 from Stripe
//! pauses the background work of the replica for a while (doubling while 429s continue).
//!
//! Which class a request belongs to is the calling task's: workers run their work inside
//! [`Priority::scope`]; anything outside one (a request handler) is interactive.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Whose request it is, as far as the budget cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Someone is waiting for the answer (verify, checkout, a subscription change).
    Interactive,
    /// The webhook inbox and the remedies queue.
    Webhooks,
    /// Reconciliation's re-reads.
    Reconcile,
}

tokio::task_local! {
    static PRIORITY: Priority;
}

impl Priority {
    /// Runs `work` with its Stripe requests counted as `self`'s.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        PRIORITY.scope(self, work).await
    }

    /// The calling task's class (interactive outside any scope).
    pub fn current() -> Priority {
        PRIORITY.try_with(|p| *p).unwrap_or(Priority::Interactive)
    }

    pub fn label(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Webhooks => "webhooks",
            Priority::Reconcile => "reconcile",
        }
    }
}

/// The longest a run of 429s pauses background work.
const MAX_PAUSE: Duration = Duration::from_secs(30);
const FIRST_PAUSE: Duration = Duration::from_secs(1);

pub struct StripeBudget {
    all: DefaultDirectRateLimiter,
    background: DefaultDirectRateLimiter,
    reconcile: DefaultDirectRateLimiter,
    pause: Mutex<Pause>,
}

#[derive(Default)]
struct Pause {
    until: Option<Instant>,
    /// 429s since the last request Stripe accepted.
    streak: u32,
}

/// A quota of `per_second` requests (fractions allowed), with a burst of one second's worth.
fn quota(per_second: f64) -> Quota {
    let per_second = per_second.max(0.1);
    let burst = NonZeroU32::new(per_second.ceil() as u32).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(Duration::from_secs_f64(1.0 / per_second))
        .expect("a positive period")
        .allow_burst(burst)
}

impl StripeBudget {
    pub fn new(requests_per_second: f64, background_share: f64, reconcile_share: f64) -> Self {
        StripeBudget {
            all: RateLimiter::direct(quota(requests_per_second)),
            background: RateLimiter::direct(quota(requests_per_second * background_share)),
            reconcile: RateLimiter::direct(quota(requests_per_second * reconcile_share)),
            pause: Mutex::new(Pause::default()),
        }
    }

    /// Waits until the calling task's class may send one request to Stripe.
    pub async fn acquire(&self) {
        let priority = Priority::current();
        let started = Instant::now();
        if priority != Priority::Interactive {
            while let Some(until) = self.paused_until() {
                tokio::time::sleep_until(until.into()).await;
            }
            if priority == Priority::Reconcile {
                self.reconcile.until_ready().await;
            }
            self.background.until_ready().await;
        }
        self.all.until_ready().await;
        metrics::histogram!("tollgate_stripe_budget_wait_seconds", "priority" => priority.label())
            .record(started.elapsed().as_secs_f64());
    }

    pub(super) fn paused_until(&self) -> Option<Instant> {
        let pause = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        pause.until.filter(|until| *until > Instant::now())
    }

    /// Stripe answered 429: background work pauses, longer while 429s continue. Answers how
    /// long the pause lasts from now, which is also how long the caller waits before its own
    /// retry.
    pub fn rate_limited(&self) -> Duration {
        self.rate_limited_at(Instant::now())
    }

    fn rate_limited_at(&self, now: Instant) -> Duration {
        let mut pause = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        // Requests sent together before the pause began are refused together: one pause.
        if let Some(until) = pause.until.filter(|until| *until > now) {
            return until - now;
        }
        let length = (FIRST_PAUSE * 2u32.saturating_pow(pause.streak.min(5))).min(MAX_PAUSE);
        pause.streak += 1;
        pause.until = Some(now + length);
        length
    }

    /// Stripe accepted a request: a run of 429s is over.
    pub fn accepted(&self) {
        let mut pause = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        pause.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outside_a_scope_work_is_interactive_and_inside_it_is_the_scope_s() {
        assert_eq!(Priority::current(), Priority::Interactive);
        let inside = Priority::Webhooks
            .scope(async { Priority::current() })
            .await;
        assert_eq!(inside, Priority::Webhooks);
    }

    #[test]
    fn consecutive_429s_pause_longer_up_to_the_cap_and_an_accepted_request_resets_them() {
        let budget = StripeBudget::new(10.0, 0.8, 0.4);
        let mut now = Instant::now();
        let mut pauses = Vec::new();
        for _ in 0..8 {
            let pause = budget.rate_limited_at(now);
            pauses.push(pause.as_secs());
            // The retry, once the pause is over, is refused again.
            now += pause;
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30, 30]);
        budget.accepted();
        assert_eq!(budget.rate_limited_at(now), FIRST_PAUSE);
    }

    #[test]
    fn requests_refused_together_make_one_pause() {
        let budget = StripeBudget::new(10.0, 0.8, 0.4);
        let now = Instant::now();
        assert_eq!(budget.rate_limited_at(now), FIRST_PAUSE);
        let later = now + Duration::from_millis(300);
        assert_eq!(budget.rate_limited_at(later), Duration::from_millis(700));
        assert_eq!(budget.paused_until(), Some(now + FIRST_PAUSE));
        // Once it is over, the next 429 doubles it.
        assert_eq!(budget.rate_limited_at(now + FIRST_PAUSE), 2 * FIRST_PAUSE);
    }

    #[tokio::test]
    async fn background_work_is_held_to_its_share_and_interactive_work_is_not() {
        // 10 requests/s with a burst of 10; background gets 2/s with a burst of 2.
        let budget = StripeBudget::new(10.0, 0.2, 0.1);
        Priority::Webhooks
            .scope(async {
                budget.acquire().await;
                budget.acquire().await;
            })
            .await;
        // The background share is spent (it refills one request per half second) ...
        assert!(budget.background.check().is_err());
        // ... while the replica's budget still has room for what a user waits for.
        for _ in 0..5 {
            assert!(budget.all.check().is_ok());
        }
    }
}
