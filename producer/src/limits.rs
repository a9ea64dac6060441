//! Message rates per user and per client address: token buckets, so a burst is taken and a
//! steady flood is refused with RATE_LIMITED before it reaches the queue.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

/// How often buckets that have refilled are forgotten, so memory follows active senders.
const SWEEP: Duration = Duration::from_secs(60);

/// Which limit a message ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The user's rate.
    User(u32),
    /// The client address's rate.
    Ip(u32),
}

impl Exceeded {
    /// The reason in the ERROR frame.
    pub fn reason(self) -> String {
        match self {
            Exceeded::User(r) => {
                format!("more than {r} messages per second from this user, retry later")
            }
            Exceeded::Ip(r) => {
                format!("more than {r} messages per second from this address, retry later")
            }
        }
    }
}

/// The producer's message rate limits.
pub struct MessageRates {
    per_user: Option<(DefaultKeyedRateLimiter<u32>, u32)>,
    per_ip: Option<(DefaultKeyedRateLimiter<IpAddr>, u32)>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(
    rate: u32,
    burst: u32,
) -> Option<(DefaultKeyedRateLimiter<K>, u32)> {
    let per_second = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(rate)).unwrap_or(per_second);
    Some((
        RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        rate,
    ))
}

impl MessageRates {
    /// Limits of `user_rate` and `ip_rate` messages per second (0: none), each with its burst.
    pub fn new(user_rate: u32, user_burst: u32, ip_rate: u32, ip_burst: u32) -> Arc<Self> {
        Arc::new(MessageRates {
            per_user: limiter(user_rate, user_burst),
            per_ip: limiter(ip_rate, ip_burst),
        })
    }

    /// Takes one message from `user` at `ip`, or says which limit it is over and how long until
    /// that limit takes one again. The address is asked first, so a flood from one address
    /// cannot spend its users' budgets.
    pub fn take(&self, user: u32, ip: IpAddr) -> Result<(), (Exceeded, Duration)> {
        if let Some((l, rate)) = &self.per_ip
            && let Err(not_until) = l.check_key(&ip)
        {
            let wait = not_until.wait_time_from(l.clock().now());
            return Err((Exceeded::Ip(*rate), wait));
        }
        if let Some((l, rate)) = &self.per_user
            && let Err(not_until) = l.check_key(&user)
        {
            let wait = not_until.wait_time_from(l.clock().now());
            return Err((Exceeded::User(*rate), wait));
        }
        Ok(())
    }

    /// Forgets full buckets every minute until `stop`.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Some((l, _)) = &self.per_user {
                l.retain_recent();
                l.shrink_to_fit();
            }
            if let Some((l, _)) = &self.per_ip {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_its_burst_is_refused_while_others_pass() {
        let rates = MessageRates::new(5, 10, 0, 0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10 {
            rates.take(1, ip).unwrap();
        }
        let (over, wait) = rates.take(1, ip).unwrap_err();
        assert_eq!(over, Exceeded::User(5));
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(rates.take(2, ip).is_ok(), "another user has its own bucket");
    }

    #[test]
    fn an_address_is_limited_across_its_users() {
        let rates = MessageRates::new(0, 0, 3, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for user in 1..=3 {
            rates.take(user, ip).unwrap();
        }
        assert_eq!(rates.take(4, ip).map_err(|(e, _)| e), Err(Exceeded::Ip(3)));
        assert!(rates.take(4, "10.0.0.2".parse().unwrap()).is_ok());
        let none = MessageRates::new(0, 0, 0, 0);
        assert!(
            (0..10_000).all(|_| none.take(1, ip).is_ok()),
            "0 means no limit"
        );
    }
}
