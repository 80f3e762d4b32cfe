//! Client-side request limiter: at most `requests` in any sliding window of `per`.
//!
//! A sliding log rather than a token bucket: Genesys counts per token per minute, and a bucket
//! that starts full can send its burst plus a minute of refill inside one window. The log costs
//! one `Instant` per allowed request in the window (300 by default).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;

pub(crate) struct RateLimiter {
    requests: usize,
    per: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(requests: u32, per: Duration) -> Self {
        let requests = requests.max(1) as usize;
        RateLimiter {
            requests,
            per,
            sent: Mutex::new(VecDeque::with_capacity(requests.min(4096))),
        }
    }

    /// Waits until one more request fits in the window, then counts it.
    pub async fn acquire(&self) {
        loop {
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
