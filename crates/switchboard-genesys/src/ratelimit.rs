//! Client-side request limiter: at most `requests` in any sliding window of `per`.
//!
//! A sliding log rather than a token bucket: Genesys counts per token per minute, and a bucket
//! that starts full can send its burst plus a minute of refill inside one window. The log costs
//! one `Instant` per allowed request in the window (300 by default).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

pub(crate) struct RateLimiter {
    requests: usize,
    per: Duration,
    /// Start times of the requests in the current window, oldest first.
    sent: Mutex<VecDeque<Instant>>,
    /// After a 429 nobody sends before this instant: the limit is per token, so one 429
    /// means every caller sharing the token would get one too.
    paused_until: std::sync::Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub fn new(requests: u32, per: Duration) -> Self {
        let requests = requests.max(1) as usize;
        RateLimiter {
            requests,
            per,
            sent: Mutex::new(VecDeque::with_capacity(requests.min(4096))),
            paused_until: std::sync::Mutex::new(None),
        }
    }

    /// Holds every caller back until `until` (called with a 429's `Retry-After`).
    pub fn pause_until(&self, until: Instant) {
        let mut p = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if p.is_none_or(|cur| cur < until) {
            *p = Some(until);
        }
    }

    /// Waits until one more request fits in the window, then counts it.
    pub async fn acquire(&self) {
        loop {
            let paused = *self
                .paused_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(until) = paused
                && until > Instant::now()
            {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let wait = {
                let mut sent = self.sent.lock().await;
                let now = Instant::now();
                while sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.per)
                {
                    sent.pop_front();
                }
                if sent.len() < self.requests {
                    sent.push_back(now);
                    return;
                }
                match sent.front() {
                    Some(oldest) => (*oldest + self.per).saturating_duration_since(now),
                    None => Duration::ZERO,
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_everyone_back() {
        let rl = RateLimiter::new(100, Duration::from_secs(60));
        let start = Instant::now();
        rl.pause_until(start + Duration::from_secs(5));
        rl.pause_until(start + Duration::from_secs(2)); // An earlier end never shortens it.
        rl.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        rl.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_per_window() {
        let rl = RateLimiter::new(3, Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            rl.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        rl.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_secs(60),
            "fourth request waited {:?}",
            start.elapsed()
        );
    }
}
