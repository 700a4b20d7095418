//! Token-bucket rate limits keyed by principal and tenant, or by client address: the API
//! spends a principal's budget on every request with a valid token (refused ones
//! included), the address's on public routes and on every request that fails
//! authentication.
//!
//! The client address is the peer's, unless the peer is a configured proxy: then it is the
//! right-most address of `X-Forwarded-For` that is not itself a configured proxy. Headers
//! from anyone else are ignored, so a client cannot pick its own key.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// A set of token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    keys_max: usize,
}

impl RateLimiter {
    /// `rate_per_s` requests per second sustained, `burst` at once.
    pub fn new(rate_per_s: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate_per_s: rate_per_s.max(0.001),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            keys_max: 100_000,
        }
    }

    /// Takes one token for `key`; `Err(seconds)` says when to retry.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.keys_max && !buckets.contains_key(key) {
            // Forget full buckets first: they carry no state worth keeping.
            let (rate, burst) = (self.rate_per_s, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < burst);
        }
        // A known key (every request but a principal's first) allocates nothing.
        if !buckets.contains_key(key) {
            buckets.insert(key.to_owned(), (self.burst, now));
        }
        let Some((tokens, at)) = buckets.get_mut(key) else {
            return Ok(());
        };
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate_per_s).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate_per_s).ceil().max(1.0) as u64)
        }
    }
}

/// The client address of a request from `peer` with `forwarded_for` (the header's value).
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted_proxies: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let Some(header) = forwarded_for else {
        return Some(peer);
    };
    let mut chosen = peer;
    for part in header.split(',').rev() {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) if trusted_proxies.contains(&ip) => chosen = ip,
            Ok(ip) => return Some(ip),
            Err(_) => return Some(chosen),
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(peer: &str, header: Option<&str>, expected: &str) {
        let proxies: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let got = client_address(Some(peer.parse().unwrap()), header, &proxies);
        assert_eq!(got, Some(expected.parse().unwrap()), "{peer} {header:?}");
    }

    #[test]
    fn forwarded_headers_only_from_proxies() {
        check("203.0.113.9", Some("1.2.3.4"), "203.0.113.9");
        check("10.0.0.1", Some("1.2.3.4"), "1.2.3.4");
        check("10.0.0.1", Some("6.6.6.6, 1.2.3.4, 10.0.0.2"), "1.2.3.4");
        check("10.0.0.1", None, "10.0.0.1");
        check("10.0.0.1", Some("garbage"), "10.0.0.1");
    }

    #[test]
    fn buckets_refill() {
        let limiter = RateLimiter::new(1.0, 2);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert_eq!(limiter.check("a"), Err(1));
        assert!(limiter.check("b").is_ok());
    }
}
