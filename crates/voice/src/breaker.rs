//! Circuit breakers with time as input: closed, open, half-open; and [`StageHealth`],
//! one breaker per pipeline stage shared by every call of the process.
//!
//! A breaker owns only counting and timing; what a failure is and what to do instead is
//! the caller's business. Sharing is the point: with a hung language model the first
//! calls pay its timeouts and trip the breaker, and every call after them falls back at
//! once instead of paying them again. No clock is read here: every method takes `now`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::conversation::Stage;

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before letting one trial through; also how
    /// long a trial may go without an outcome before another is let through (the call
    /// that made it may have ended without reporting).
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
    /// When the half-open trial in flight was let through.
    trial_started: Option<Instant>,
    /// Times the breaker opened (from closed, or again after a failed trial).
    trips: u64,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed { failures: 0 },
            trial_started: None,
            trips: 0,
        }
    }

    /// The state as of `now`: an open breaker whose cool-down has passed reads as
    /// half-open, and so does a trial that has gone a cool-down without an outcome.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen {
                trial_in_flight: false,
            },
            BreakerState::HalfOpen {
                trial_in_flight: true,
            } if self
                .trial_started
                .is_some_and(|t| now >= t + self.config.cool_down) =>
            {
                BreakerState::HalfOpen {
                    trial_in_flight: false,
                }
            }
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
                    self.trial_started = Some(now);
                    true
                }
            }
        }
    }

    pub fn record_success(&mut self, _now: Instant) {
        self.state = BreakerState::Closed { failures: 0 };
        self.trial_started = None;
    }

    pub fn record_failure(&mut self, now: Instant) {
        self.trial_started = None;
        self.state = match self.state(now) {
            BreakerState::Closed { failures } if failures + 1 < self.config.failure_threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            // Already open: a late failure of a call made before it opened says nothing
            // new and must not push the trial further out.
            open @ BreakerState::Open { .. } => open,
            // Threshold reached, or the half-open trial failed: open (again).
            _ => {
                self.trips += 1;
                BreakerState::Open {
                    until: now + self.config.cool_down,
                }
            }
        };
    }

    /// `true` while calls are refused.
    pub fn is_open(&self, now: Instant) -> bool {
        matches!(self.state(now), BreakerState::Open { .. })
    }

    /// Times the breaker has opened.
    pub fn trips(&self) -> u64 {
        self.trips
    }
}

/// The health of the speech-to-text, language-model and text-to-speech stages, shared
/// by every call (behind an `Arc`): one breaker per stage, each behind its own lock
/// (held for a few comparisons, never across work).
#[derive(Debug)]
pub struct StageHealth {
    stt: Mutex<CircuitBreaker>,
    llm: Mutex<CircuitBreaker>,
    tts: Mutex<CircuitBreaker>,
}

impl StageHealth {
    pub fn new(stt: BreakerConfig, llm: BreakerConfig, tts: BreakerConfig) -> Self {
        Self {
            stt: Mutex::new(CircuitBreaker::new(stt)),
            llm: Mutex::new(CircuitBreaker::new(llm)),
            tts: Mutex::new(CircuitBreaker::new(tts)),
        }
    }

    /// Runs `f` on `stage`'s breaker. A lock poisoned by a panic elsewhere still holds
    /// a consistent breaker (every update is a single assignment), so it is used as is.
    fn with<T>(&self, stage: Stage, f: impl FnOnce(&mut CircuitBreaker) -> T) -> T {
        let lock = match stage {
            Stage::Stt => &self.stt,
            Stage::Llm => &self.llm,
            Stage::Tts => &self.tts,
        };
        let mut breaker = lock.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut breaker)
    }

    pub fn state(&self, stage: Stage, now: Instant) -> BreakerState {
        self.with(stage, |b| b.state(now))
    }

    /// See [`CircuitBreaker::try_acquire`]: in half-open, exactly one caller across all
    /// calls gets `true`.
    pub fn try_acquire(&self, stage: Stage, now: Instant) -> bool {
        self.with(stage, |b| b.try_acquire(now))
    }

    pub fn is_open(&self, stage: Stage, now: Instant) -> bool {
        self.with(stage, |b| b.is_open(now))
    }

    /// Records an outcome; returns the new state when this outcome changed it (for the
    /// one call that saw the change to report it).
    pub fn record(&self, stage: Stage, now: Instant, ok: bool) -> Option<BreakerState> {
        self.with(stage, |b| {
            let before = b.state(now).name();
            if ok {
                b.record_success(now);
            } else {
                b.record_failure(now);
            }
            let after = b.state(now);
            (after.name() != before).then_some(after)
        })
    }

    /// Times `stage`'s breaker has opened since start.
    pub fn trips(&self, stage: Stage) -> u64 {
        self.with(stage, |b| b.trips())
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

    fn shared(threshold: u32) -> StageHealth {
        let config = BreakerConfig {
            failure_threshold: threshold,
            cool_down: Duration::from_secs(10),
        };
        StageHealth::new(config, config, config)
    }

    #[test]
    fn one_calls_failures_open_the_stage_for_every_call() {
        let t0 = origin();
        let health = std::sync::Arc::new(shared(2));
        let (call_a, call_b) = (health.clone(), health.clone());
        assert!(call_a.try_acquire(Stage::Llm, t0));
        assert_eq!(call_a.record(Stage::Llm, t0, false), None);
        assert!(call_b.try_acquire(Stage::Llm, t0));
        let opened = call_b.record(Stage::Llm, t0, false);
        assert!(
            matches!(opened, Some(BreakerState::Open { .. })),
            "{opened:?}"
        );
        // A third call is refused at once, and the other stages are untouched.
        let call_c = health.clone();
        assert!(!call_c.try_acquire(Stage::Llm, t0 + Duration::from_secs(1)));
        assert!(call_c.try_acquire(Stage::Stt, t0));
        assert!(call_c.try_acquire(Stage::Tts, t0));
        assert_eq!(health.trips(Stage::Llm), 1);
        assert_eq!(health.trips(Stage::Stt), 0);
    }

    #[test]
    fn half_open_lets_exactly_one_trial_through_across_calls() {
        let t0 = origin();
        let health = shared(1);
        health.record(Stage::Llm, t0, false);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            health.state(Stage::Llm, t1),
            BreakerState::HalfOpen {
                trial_in_flight: false
            }
        );
        assert!(health.try_acquire(Stage::Llm, t1), "the trial");
        for _ in 0..5 {
            assert!(!health.try_acquire(Stage::Llm, t1), "a second trial");
        }
        // The trial succeeds: closed for everybody.
        assert_eq!(
            health.record(Stage::Llm, t1, true),
            Some(BreakerState::Closed { failures: 0 })
        );
        assert!(health.try_acquire(Stage::Llm, t1));
        assert!(health.try_acquire(Stage::Llm, t1));
    }

    #[test]
    fn a_failed_trial_reopens_for_a_full_cool_down() {
        let t0 = origin();
        let health = shared(1);
        health.record(Stage::Llm, t0, false);
        let t1 = t0 + Duration::from_secs(10);
        assert!(health.try_acquire(Stage::Llm, t1));
        let reopened = health.record(Stage::Llm, t1 + Duration::from_secs(2), false);
        assert_eq!(
            reopened,
            Some(BreakerState::Open {
                until: t1 + Duration::from_secs(12)
            })
        );
        assert!(!health.try_acquire(Stage::Llm, t1 + Duration::from_secs(11)));
        assert!(health.try_acquire(Stage::Llm, t1 + Duration::from_secs(12)));
        assert_eq!(health.trips(Stage::Llm), 2);
    }

    #[test]
    fn a_trial_whose_call_never_reports_is_replaced_after_a_cool_down() {
        let t0 = origin();
        let health = shared(1);
        health.record(Stage::Tts, t0, false);
        let t1 = t0 + Duration::from_secs(10);
        assert!(health.try_acquire(Stage::Tts, t1));
        // Its call hung up mid-trial: nothing is reported.
        assert!(!health.try_acquire(Stage::Tts, t1 + Duration::from_secs(9)));
        assert!(health.try_acquire(Stage::Tts, t1 + Duration::from_secs(10)));
    }

    #[test]
    fn late_failures_of_calls_made_before_the_trip_do_not_extend_it() {
        let t0 = origin();
        let health = shared(1);
        assert!(health.try_acquire(Stage::Llm, t0));
        assert!(health.try_acquire(Stage::Llm, t0));
        health.record(Stage::Llm, t0, false);
        assert_eq!(
            health.record(Stage::Llm, t0 + Duration::from_secs(5), false),
            None
        );
        assert_eq!(
            health.state(Stage::Llm, t0 + Duration::from_secs(9)),
            BreakerState::Open {
                until: t0 + Duration::from_secs(10)
            }
        );
        assert_eq!(health.trips(Stage::Llm), 1);
    }
}
