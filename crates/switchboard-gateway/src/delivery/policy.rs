//! The delivery policy: what happens after an attempt. One module, so retry classification,
//! backoff, `Retry-After` handling and dead-lettering are decided in exactly one place.
//!
//! Semantics follow EventBridge's `RetryPolicy`: `MaximumRetryAttempts` counts retries after the
//! first attempt; `MaximumEventAgeInSeconds` counts from when the event was enqueued; whichever
//! limit is hit first ends delivery and the event goes to the target's dead-letter queue with
//! `EXHAUSTED_RETRY_CONDITION` naming that limit. Errors that cannot succeed on retry (a 4xx other
//! than 408/429) go to the dead-letter queue at once, without a condition, as EventBridge does for
//! missing permissions.

use std::time::Duration;

use rand::Rng;

use crate::config::{BackoffKind, RetryPolicyConfig};

/// The result of one attempt at one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The target took it.
    Delivered,
    /// Worth retrying (429, 5xx, timeouts, connection errors, I/O errors).
    Retryable {
        /// Bounded error code (`HTTP_503`, `TIMEOUT`, …).
        code: String,
        /// Human-readable detail.
        message: String,
        /// The target's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Will never succeed as is.
    Fatal {
        /// Bounded error code.
        code: String,
        /// Human-readable detail.
        message: String,
    },
}

/// What to do with the delivery next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Remove it from the queue.
    Complete,
    /// Try again at this time (unix ms).
    Retry {
        /// When.
        at_ms: i64,
        /// Error to remember.
        error: String,
    },
    /// Move it to the dead-letter queue.
    DeadLetter {
        /// `ERROR_CODE`.
        code: String,
        /// `ERROR_MESSAGE`.
        message: String,
        /// `EXHAUSTED_RETRY_CONDITION`.
        exhausted: Option<&'static str>,
        /// `RETRY_ATTEMPTS`: retries made before giving up.
        retry_attempts: u32,
    },
}

/// `Retry-After` values above this are clamped: a target cannot park our queue for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Decides after an attempt. `attempts_before` is how many attempts were made before this one.
pub fn decide(
    policy: &RetryPolicyConfig,
    attempt: Attempt,
    attempts_before: u32,
    enqueued_at_ms: i64,
    now_ms: i64,
    rng: &mut impl Rng,
) -> Decision {
    let (code, message, retry_after) = match attempt {
        Attempt::Delivered => return Decision::Complete,
        Attempt::Fatal { code, message } => {
            return Decision::DeadLetter {
                code,
                message,
                exhausted: None,
                retry_attempts: attempts_before,
            };
        }
        Attempt::Retryable {
            code,
            message,
            retry_after,
        } => (code, message, retry_after),
    };
    // This attempt was retry number `attempts_before` (the first attempt is not a retry).
    let retries_made = attempts_before;
    if retries_made >= policy.maximum_retry_attempts {
        return Decision::DeadLetter {
            code,
            message,
            exhausted: Some("MaximumRetryAttempts"),
            retry_attempts: retries_made,
        };
    }
    let mut delay = backoff(policy, attempts_before + 1, rng);
    if let Some(ra) = retry_after {
        delay = delay.max(ra.min(MAX_RETRY_AFTER));
    }
    let at_ms = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let deadline =
        enqueued_at_ms.saturating_add(i64::from(policy.maximum_event_age_in_seconds) * 1000);
    if at_ms > deadline {
        return Decision::DeadLetter {
            code,
            message,
            exhausted: Some("MaximumEventAgeInSeconds"),
            retry_attempts: retries_made,
        };
    }
    Decision::Retry {
        at_ms,
        error: format!("{code}: {message}"),
    }
}

/// True when the event is too old to be attempted at all.
pub fn expired(policy: &RetryPolicyConfig, enqueued_at_ms: i64, now_ms: i64) -> bool {
    now_ms > enqueued_at_ms.saturating_add(i64::from(policy.maximum_event_age_in_seconds) * 1000)
}

/// Delay before retry number `retry` (1-based).
pub fn backoff(policy: &RetryPolicyConfig, retry: u32, rng: &mut impl Rng) -> Duration {
    let base = policy.base_delay_ms;
    let cap = policy.max_delay_ms;
    let ms = match policy.backoff {
        BackoffKind::Exponential => {
            // Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): spreads the
            // retries of many events failing together instead of sending them in waves.
            let exp = base
                .saturating_mul(1u64 << retry.saturating_sub(1).min(32))
                .min(cap);
            rng.random_range(base.min(exp)..=exp)
        }
        BackoffKind::Linear => {
            let lin = base.saturating_mul(u64::from(retry)).min(cap);
            let jitter = lin / 5;
            rng.random_range(
                lin.saturating_sub(jitter)..=lin.saturating_add(jitter).min(cap.max(lin)),
            )
        }
    };
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy(retries: u32, age: u32) -> RetryPolicyConfig {
        RetryPolicyConfig {
            maximum_retry_attempts: retries,
            maximum_event_age_in_seconds: age,
            base_delay_ms: 100,
            max_delay_ms: 10_000,
            ..RetryPolicyConfig::default()
        }
    }

    fn retryable(ra: Option<u64>) -> Attempt {
        Attempt::Retryable {
            code: "HTTP_503".into(),
            message: "unavailable".into(),
            retry_after: ra.map(Duration::from_secs),
        }
    }

    #[test]
    fn decisions() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let p = policy(2, 3600);
        assert_eq!(
            decide(&p, Attempt::Delivered, 0, 0, 0, &mut rng),
            Decision::Complete
        );
        assert!(matches!(
            decide(&p, retryable(None), 0, 0, 0, &mut rng),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            decide(&p, retryable(None), 1, 0, 0, &mut rng),
            Decision::Retry { .. }
        ));
        assert_eq!(
            decide(&p, retryable(None), 2, 0, 0, &mut rng),
            Decision::DeadLetter {
                code: "HTTP_503".into(),
                message: "unavailable".into(),
                exhausted: Some("MaximumRetryAttempts"),
                retry_attempts: 2
            }
        );
        // Zero retries: the first failure is final.
        assert!(matches!(
            decide(&policy(0, 3600), retryable(None), 0, 0, 0, &mut rng),
            Decision::DeadLetter {
                exhausted: Some("MaximumRetryAttempts"),
                retry_attempts: 0,
                ..
            }
        ));
        // Fatal errors skip retries and carry no exhausted condition.
        assert!(matches!(
            decide(
                &p,
                Attempt::Fatal {
                    code: "HTTP_400".into(),
                    message: "bad".into()
                },
                0,
                0,
                0,
                &mut rng
            ),
            Decision::DeadLetter {
                exhausted: None,
                retry_attempts: 0,
                ..
            }
        ));
        // The next try would land past the age limit.
        assert!(matches!(
            decide(&policy(185, 60), retryable(Some(120)), 0, 0, 0, &mut rng),
            Decision::DeadLetter {
                exhausted: Some("MaximumEventAgeInSeconds"),
                ..
            }
        ));
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = policy(185, 86_400);
        match decide(&p, retryable(Some(30)), 0, 0, 1_000, &mut rng) {
            Decision::Retry { at_ms, .. } => assert_eq!(at_ms, 31_000),
            d => panic!("{d:?}"),
        }
        match decide(&p, retryable(Some(100_000)), 0, 0, 0, &mut rng) {
            Decision::Retry { at_ms, .. } => assert_eq!(at_ms, 600_000),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn backoff_stays_within_bounds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let p = policy(185, 86_400);
        for retry in 1..200 {
            let d = backoff(&p, retry, &mut rng).as_millis() as u64;
            assert!((100..=10_000).contains(&d), "retry {retry}: {d}");
        }
        let lin = RetryPolicyConfig {
            backoff: BackoffKind::Linear,
            ..p
        };
        let d = backoff(&lin, 3, &mut rng).as_millis() as u64;
        assert!((240..=360).contains(&d), "{d}");
    }
}
