//! A circuit breaker with time as input: closed, open, half-open.
//!
//! It owns only counting and timing; what a failure is and what to do instead is the
//! caller's business. No clock is read here: every method takes `now`.

use std::time::{Duration, Instant};

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before letting one trial through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// What a health check or metric shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; `failures` consecutive failures so far.
    Closed { failures: u32 },
    /// Calls are refused until `until`.
    Open { until: Instant },
    /// One trial call is allowed (or is in flight); its outcome closes or re-opens.
    HalfOpen { trial_in_flight: bool },
}

impl BreakerState {
    /// A short lower-case name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half-open",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    /// The state as of `now` (an open breaker whose cool-down has passed reads as
    /// half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen {
                trial_in_flight: false,
            },
            state => state,
        }
    }

    /// Asks to make a call. `true` means go ahead and report the outcome with
    /// [`record_success`](Self::record_success) or
    /// [`record_failure`](Self::record_failure); `false` means use the fallback.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        self.state = self.state(now);
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { trial_in_flight } => {
                if trial_in_flight {
                    false
                } else {
                    self.state = BreakerState::HalfOpen {
                        trial_in_flight: true,
                    };
                    true
                }
            }
        }
    }

    pub fn record_success(&mut self, _now: Instant) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    pub fn record_failure(&mut self, now: Instant) {
        self.state = match self.state(now) {
            BreakerState::Closed { failures } if failures + 1 < self.config.failure_threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            // Threshold reached, or the half-open trial failed: open again.
            _ => BreakerState::Open {
                until: now + self.config.cool_down,
            },
        };
    }

    /// `true` while calls are refused.
    pub fn is_open(&self, now: Instant) -> bool {
        matches!(self.state(now), BreakerState::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(
        clippy::disallowed_methods,
        reason = "a fixed origin for virtual time in tests"
    )]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn opens_after_threshold_then_half_opens_after_cool_down() {
        let t0 = origin();
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(10),
        });
        assert!(b.try_acquire(t0));
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed { failures: 1 });
        assert!(b.try_acquire(t0));
        b.record_failure(t0);
        assert!(b.is_open(t0));
        assert!(!b.try_acquire(t0 + Duration::from_secs(9)));
        // Cool-down over: exactly one trial.
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.try_acquire(t1));
        assert!(!b.try_acquire(t1));
        b.record_failure(t1);
        assert!(b.is_open(t1));
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.try_acquire(t2));
        b.record_success(t2);
        assert_eq!(b.state(t2), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn success_resets_the_failure_count() {
        let t0 = origin();
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        b.record_failure(t0);
        b.record_failure(t0);
        b.record_success(t0);
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed { failures: 1 });
    }
}
