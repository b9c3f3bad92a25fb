//! The message rate limit (`INGRESS_RATE_LIMIT=N/duration`): per authenticated user, or per
//! client address for clients that did not authenticate.
//!
//! * **What counts**: every `MAIL FROM` that passed every other check (Postfix's
//!   `smtpd_client_message_rate_limit` counts the same way: delivery requests, whether or not
//!   the message is then accepted). It is checked at `MAIL`, the earliest command that starts a
//!   message, so a client over its limit learns before it sends recipients or data; the reply
//!   is `451 4.7.1` and says when to try again.
//! * **The rate** is governor's GCRA (the field's rate-limiting library, rather than a
//!   hand-written counter): a sustained `N` messages per `duration`, of which a client that
//!   was quiet may send all `N` at once; after that one more every `duration / N`.
//! * **Keys**: `user <name>` once authenticated; else the client's IP address — IPv4-mapped
//!   IPv6 as IPv4, and other IPv6 addresses by their /64, since one host commonly holds a whole
//!   /64 and could otherwise rotate through it.
//! * **Memory is bounded**: the per-key state lives in an LRU map of at most [`MAX_KEYS`] keys
//!   (one key costs about a hundred bytes, so ~10 MB at most). When it is full, the key used
//!   least recently is forgotten — a key that is still sending is by definition recent, so a
//!   flood of new addresses cannot reset a busy client's count; it can only forget clients that
//!   went quiet, which is what a fresh state would allow them anyway after `duration`.
//! * **Scope**: one ingress process (one Fargate task). With `k` tasks behind the load balancer a
//!   client may get up to `k × N` through; docs/outbound.md says so.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use lru::LruCache;

/// Keys whose state is kept; the least recently used beyond this is forgotten.
pub const MAX_KEYS: usize = 100_000;

/// `N/duration` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSpec {
    pub messages: NonZeroU32,
    pub per: Duration,
}

impl RateSpec {
    /// `200/1m`, `10/1h`, `1000/1d` (a humantime duration after the slash).
    pub fn parse(v: &str) -> Result<Self, String> {
        let usage = "expected N/duration, e.g. 200/1m";
        let (n, per) = v.split_once('/').ok_or_else(|| format!("{v:?}: {usage}"))?;
        let messages: NonZeroU32 =
            n.trim().parse().map_err(|_| format!("{v:?}: {n:?} is not a whole number of messages ≥ 1 ({usage})"))?;
        let per = shared::config::parse_duration(per.trim())?;
        if per.is_zero() {
            return Err(format!("{v:?}: the duration must be greater than zero"));
        }
        if (per / messages.get()).is_zero() {
            return Err(format!("{v:?}: more than one message per nanosecond"));
        }
        Ok(Self { messages, per })
    }

    fn quota(&self) -> Quota {
        Quota::with_period(self.per / self.messages.get())
            .expect("parse refuses a zero period")
            .allow_burst(self.messages)
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.messages, humantime::format_duration(self.per))
    }
}

/// Whose messages are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    User(String),
    Client(IpAddr),
    /// An IPv6 client's /64 (the network address).
    Client64(IpAddr),
}

impl RateKey {
    /// The key of a session: its user once authenticated, else its client's address.
    pub fn of(user: Option<&str>, ip: IpAddr) -> Self {
        if let Some(u) = user {
            return Self::User(u.to_string());
        }
        match super::canonical(ip) {
            IpAddr::V6(v6) => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                Self::Client64(IpAddr::V6(net.into()))
            }
            v4 => Self::Client(v4),
        }
    }
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(u) => write!(f, "user {u}"),
            Self::Client(ip) => write!(f, "client {ip}"),
            Self::Client64(ip) => write!(f, "client {ip}/64"),
        }
    }
}

/// governor's per-key state (the GCRA's theoretical arrival time) in a bounded LRU map. The
/// mutex makes each read-decide-write atomic, which is all governor asks of a store. Clones
/// share the map (the limiter owns one, [`RateLimit`] keeps another to report its size).
#[derive(Clone)]
pub struct LruStore(Arc<Mutex<LruCache<RateKey, Nanos>>>);

impl LruStore {
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self(Arc::new(Mutex::new(LruCache::new(capacity))))
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.0.lock().expect("rate store lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StateStore for LruStore {
    type Key = RateKey;

    fn measure_and_replace<T, F, E>(&self, key: &RateKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.0.lock().expect("rate store lock");
        let (t, next) = f(map.get(key).copied())?;
        map.put(key.clone(), next);
        Ok(t)
    }
}

/// The configured limit and its state.
pub struct RateLimit<C: Clock = DefaultClock> {
    spec: RateSpec,
    limiter: RateLimiter<RateKey, LruStore, C, NoOpMiddleware<C::Instant>>,
    store: LruStore,
}

impl<C: Clock> fmt::Debug for RateLimit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RateLimit({})", self.spec)
    }
}

impl RateLimit {
    /// A limit on the system's monotonic clock, keeping at most [`MAX_KEYS`] keys.
    pub fn new(spec: RateSpec) -> Self {
        Self::with_clock(spec, DefaultClock::default(), NonZeroUsize::new(MAX_KEYS).expect("non-zero"))
    }
}

impl<C: Clock> RateLimit<C> {
    /// A limit on any clock (tests inject governor's `FakeRelativeClock`).
    pub fn with_clock(spec: RateSpec, clock: C, max_keys: NonZeroUsize) -> Self {
        let store = LruStore::new(max_keys);
        let limiter = RateLimiter::new(spec.quota(), store.clone(), clock);
        Self { spec, limiter, store }
    }

    pub fn spec(&self) -> &RateSpec {
        &self.spec
    }

    /// Count one message for `key`: `Ok` when it is within the limit, else how long until the
    /// next one would be (a refused message is not counted).
    pub fn check(&self, key: &RateKey) -> Result<(), Duration> {
        self.limiter.check_key(key).map(|_| ()).map_err(|not_until| {
            let now = self.limiter.clock().now();
            not_until.wait_time_from(now)
        })
    }

    /// Keys whose state is kept.
    pub fn keys(&self) -> usize {
        self.store.len()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limit(spec: &str, max_keys: usize) -> (RateLimit<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let l =
            RateLimit::with_clock(RateSpec::parse(spec).unwrap(), clock.clone(), NonZeroUsize::new(max_keys).unwrap());
        (l, clock)
    }

    fn user(u: &str) -> RateKey {
        RateKey::User(u.into())
    }

    #[test]
    fn spec_parsing() {
        let s = RateSpec::parse("200/1m").unwrap();
        assert_eq!((s.messages.get(), s.per), (200, Duration::from_secs(60)));
        assert_eq!(s.to_string(), "200/1m");
        assert_eq!(RateSpec::parse(" 5 / 2h ").unwrap().per, Duration::from_secs(7200));
        for (bad, why) in [
            ("200", "expected N/duration"),
            ("0/1m", "not a whole number"),
            ("-1/1m", "not a whole number"),
            ("x/1m", "not a whole number"),
            ("10/soon", "not a duration"),
            ("10/0", "greater than zero"),
            ("5000000000/1s", "not a whole number"),
            ("4000000000/1s", "more than one message per nanosecond"),
        ] {
            let e = RateSpec::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn n_pass_then_refused_until_the_clock_moves() {
        let (l, clock) = limit("3/1h", 100);
        let alice = user("alice");
        for i in 0..3 {
            assert_eq!(l.check(&alice), Ok(()), "message {i}");
        }
        // One more every 20 minutes: the refusal says how long to wait.
        assert_eq!(l.check(&alice), Err(Duration::from_secs(1200)));
        clock.advance(Duration::from_secs(600));
        assert_eq!(l.check(&alice), Err(Duration::from_secs(600)), "refusals are not counted");
        clock.advance(Duration::from_secs(600));
        assert_eq!(l.check(&alice), Ok(()));
        assert!(l.check(&alice).is_err());
        // A full period of silence gives the whole burst back, and no more.
        clock.advance(Duration::from_secs(3600 * 5));
        for _ in 0..3 {
            assert_eq!(l.check(&alice), Ok(()));
        }
        assert!(l.check(&alice).is_err());
    }

    #[test]
    fn keys_are_independent() {
        let (l, _clock) = limit("1/1d", 100);
        let ip: RateKey = RateKey::of(None, "192.0.2.1".parse().unwrap());
        assert_eq!(l.check(&user("alice")), Ok(()));
        assert!(l.check(&user("alice")).is_err());
        assert_eq!(l.check(&user("bob")), Ok(()));
        assert_eq!(l.check(&ip), Ok(()));
        assert!(l.check(&ip).is_err());
        assert_eq!(l.check(&RateKey::of(None, "192.0.2.2".parse().unwrap())), Ok(()));
        assert_eq!(l.keys(), 4);
    }

    #[test]
    fn client_keys() {
        let k = |s: &str| RateKey::of(None, s.parse().unwrap());
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"), "one /64");
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("2001:db8:1:2::1").to_string(), "client 2001:db8:1:2::/64");
        assert_eq!(k("192.0.2.7").to_string(), "client 192.0.2.7");
        assert_eq!(RateKey::of(Some("alice"), "192.0.2.7".parse().unwrap()).to_string(), "user alice");
    }

    #[test]
    fn memory_is_bounded_and_busy_keys_survive_a_flood() {
        let (l, _clock) = limit("2/1h", 1000);
        let busy = user("busy");
        assert_eq!(l.check(&busy), Ok(()));
        assert_eq!(l.check(&busy), Ok(()));
        for i in 0..10_000u32 {
            l.check(&RateKey::Client(IpAddr::from(i.to_be_bytes()))).unwrap();
            if i % 100 == 0 {
                // Still sending, so still recent: its count is never forgotten.
                assert!(l.check(&busy).is_err(), "after {i} other keys");
            }
        }
        assert_eq!(l.keys(), 1000);
    }
}
