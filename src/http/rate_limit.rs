//! Fixed-window attempt limiter for sign-in and sign-up, keyed by client and path (as
//! Better Auth does). In memory: limits reset on restart, which is acceptable for a single
//! self-hosted process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::mask;

pub struct RateLimiter {
    max: u32,
    window: Duration,
    buckets: Mutex<HashMap<(IpAddr, &'static str), Bucket>>,
}

struct Bucket {
    started: Instant,
    count: u32,
}

/// Refused: retry after this many whole seconds.
#[derive(Debug, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl RateLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, client: IpAddr, path: &'static str) -> Result<(), RetryAfter> {
        self.check_at(client, path, Instant::now())
    }

    /// Like `check`, without counting: is this client already over the limit?
    pub fn peek(&self, client: IpAddr, path: &'static str) -> Result<(), RetryAfter> {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get(&(client_key(client), path)) {
            Some(b) if now.duration_since(b.started) < self.window && b.count >= self.max => {
                let remaining = self.window.saturating_sub(now.duration_since(b.started));
                Err(RetryAfter(remaining.as_secs_f64().ceil().max(1.0) as u64))
            }
            _ => Ok(()),
        }
    }

    fn check_at(&self, client: IpAddr, path: &'static str, now: Instant) -> Result<(), RetryAfter> {
        let client = client_key(client);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory under a flood of distinct clients: drop finished windows.
        if buckets.len() > 50_000 {
            let window = self.window;
            buckets.retain(|_, b| now.duration_since(b.started) < window);
        }
        let bucket = buckets.entry((client, path)).or_insert(Bucket {
            started: now,
            count: 0,
        });
        if now.duration_since(bucket.started) >= self.window {
            bucket.started = now;
            bucket.count = 0;
        }
        if bucket.count >= self.max {
            let remaining = self
                .window
                .saturating_sub(now.duration_since(bucket.started));
            return Err(RetryAfter(remaining.as_secs_f64().ceil().max(1.0) as u64));
        }
        bucket.count += 1;
        Ok(())
    }
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64. One subscriber
/// gets a whole /64 and any host in it may use any address there, so counting single IPv6
/// addresses would give one attacker 2^64 buckets.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        v6 => mask(v6, 64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let limiter = RateLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:fffe".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check_at(a, "/sign-in/email", t0).is_ok());
        assert!(limiter.check_at(b, "/sign-in/email", t0).is_ok());
        // A third address in the same /64 is the same client.
        assert!(
            limiter
                .check_at("2001:db8:1:2::99".parse().unwrap(), "/sign-in/email", t0)
                .is_err()
        );
        // The next /64 is someone else.
        assert!(limiter.check_at(other, "/sign-in/email", t0).is_ok());
        // IPv4, and IPv4 written as IPv6, are single addresses and the same client.
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_key("192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_ne!(
            client_key("192.0.2.1".parse().unwrap()),
            client_key("192.0.2.2".parse().unwrap())
        );
    }

    #[test]
    fn fourth_attempt_in_window_is_refused() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(ip, "/sign-in/email", t0).is_ok());
        }
        let refused = limiter.check_at(ip, "/sign-in/email", t0 + Duration::from_secs(4));
        assert_eq!(refused, Err(RetryAfter(6)));
        // Other paths and other clients have their own buckets.
        assert!(limiter.check_at(ip, "/sign-up/email", t0).is_ok());
        assert!(
            limiter
                .check_at([10, 0, 0, 1].into(), "/sign-in/email", t0)
                .is_ok()
        );
        // The window ends.
        assert!(
            limiter
                .check_at(ip, "/sign-in/email", t0 + Duration::from_secs(10))
                .is_ok()
        );
    }
}
