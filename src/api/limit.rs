//! How many builds a client may start: a fixed daily allowance per client — an anonymous
//! client's address, or a library user's name for remote builds — in memory (a restart forgives
//! everyone, which is fine for abuse control).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window an allowance covers.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Counts builds per client: by address (the default) or by any other key.
#[derive(Debug)]
pub struct RateLimiter<K = Option<IpAddr>> {
    per_day: u32,
    clients: Mutex<HashMap<K, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u32,
}

impl<K: Eq + std::hash::Hash> RateLimiter<K> {
    /// A limiter allowing `per_day` builds per client and day; `0` allows any number.
    pub fn new(per_day: u32) -> Self {
        RateLimiter {
            per_day,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one build from `client`'s allowance, or says how long until it renews.
    pub fn take(&self, client: K) -> Result<(), Duration> {
        self.take_at(client, Instant::now())
    }

    fn take_at(&self, client: K, now: Instant) -> Result<(), Duration> {
        if self.per_day == 0 {
            return Ok(());
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|_, window| now.duration_since(window.started) < DAY);
        let window = clients.entry(client).or_insert(Window {
            started: now,
            used: 0,
        });
        if window.used >= self.per_day {
            return Err(DAY.saturating_sub(now.duration_since(window.started)));
        }
        window.used += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_allowance_per_day() {
        let limiter: RateLimiter = RateLimiter::new(2);
        let start = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(limiter.take_at(a, start).is_ok());
        assert!(limiter.take_at(a, start).is_ok());
        let wait = limiter
            .take_at(a, start + Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(wait, DAY - Duration::from_secs(60));
        assert!(
            limiter.take_at(b, start).is_ok(),
            "another address has its own"
        );
        assert!(
            limiter.take_at(a, start + DAY).is_ok(),
            "a new day, a new allowance"
        );
        assert!(RateLimiter::new(0).take_at(a, start).is_ok());
    }
}
