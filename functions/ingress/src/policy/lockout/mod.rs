//! The AUTH lockout (`INGRESS_AUTH_LOCKOUT=N/duration`, default `10/15m`): an address that got
//! N wrong passwords within the window gets `454 4.7.0` for every AUTH after that — the right
//! password included — until the window that began with its first failure has passed. Other
//! addresses are unaffected.
//!
//! * **What counts** is each failed AUTH, not sessions: a client that guesses over many short
//!   sessions (or many ingress tasks) is counted all the same. An AUTH refused by the lockout is
//!   not checked and not counted. A cancelled AUTH or bad base64 is not a password tried.
//! * **Whose** failures: the client's address — IPv4-mapped IPv6 as IPv4, other IPv6 by its /64,
//!   as the rate limit counts them (`policy::rate`).
//! * **Where** they are counted: with `STATE_TABLE`, in the state table (item
//!   `authfail#<address>`: `failures`, `since`, `ttl`), so every ingress task shares the count;
//!   without it, in the task ([`memory`]). A table that cannot be reached falls back to the
//!   task's own count for that attempt, with a warning.
//! * The decisions ([`locked`], [`count`]) are pure functions of the tally and the clock.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub mod dynamo;
pub mod memory;

pub use dynamo::DynamoFailures;
pub use memory::MemoryFailures;

/// `N/duration` as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutSpec {
    pub failures: NonZeroU32,
    pub window: Duration,
}

impl LockoutSpec {
    /// The contract's default, `10/15m`.
    pub const DEFAULT: Self =
        Self { failures: NonZeroU32::new(10).expect("non-zero"), window: Duration::from_secs(15 * 60) };

    /// `10/15m`, `5/1h`; `off` turns the lockout off (`None`).
    pub fn parse(v: &str) -> Result<Option<Self>, String> {
        if v.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let usage = "expected N/duration (e.g. 10/15m) or off";
        let (n, window) = v.split_once('/').ok_or_else(|| format!("{v:?}: {usage}"))?;
        let failures = n.trim().parse().map_err(|_| format!("{v:?}: {n:?} is not a whole number ≥ 1 ({usage})"))?;
        let window = shared::config::parse_duration(window.trim())?;
        if window < Duration::from_secs(1) {
            return Err(format!("{v:?}: the window must be at least 1s"));
        }
        Ok(Some(Self { failures, window }))
    }
}

impl fmt::Display for LockoutSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.failures, humantime::format_duration(self.window))
    }
}

/// One address's failed AUTHs in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub failures: u32,
    /// When the window began: its first failure (Unix seconds).
    pub since: i64,
}

/// Until when (Unix seconds) an address with `tally` is locked out at `now`, if it is.
pub fn locked(tally: Option<Tally>, spec: &LockoutSpec, now: i64) -> Option<i64> {
    let t = tally?;
    let until = t.since + spec.window.as_secs() as i64;
    (t.failures >= spec.failures.get() && now < until).then_some(until)
}

/// The tally after one more failure at `now`: counted in the window, or the first of a new one.
pub fn count(tally: Option<Tally>, spec: &LockoutSpec, now: i64) -> Tally {
    match tally {
        Some(t) if now < t.since + spec.window.as_secs() as i64 => Tally { failures: t.failures + 1, ..t },
        _ => Tally { failures: 1, since: now },
    }
}

/// The key an address is counted under.
pub fn client_key(ip: IpAddr) -> String {
    match super::canonical(ip) {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
        v4 => v4.to_string(),
    }
}

/// Where failures are counted.
#[async_trait]
pub trait Failures: Send + Sync {
    /// The tally of `key`, if it has one.
    async fn get(&self, key: &str) -> Result<Option<Tally>, String>;
    /// Count one failure of `key` at `now` ([`count`], atomically); the tally after it.
    async fn add(&self, key: &str, spec: &LockoutSpec, now: i64) -> Result<Tally, String>;
}

/// What the lockout says about an AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check the password.
    Open,
    /// Refuse it unchecked: locked out until then (Unix seconds).
    Locked(i64),
}

/// The lockout in force: its limits and where it counts.
pub struct Lockout {
    spec: Option<LockoutSpec>,
    shared: Option<Arc<dyn Failures>>,
    local: MemoryFailures,
}

impl fmt::Debug for Lockout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.spec {
            Some(s) => write!(f, "Lockout({s}, {})", if self.shared.is_some() { "shared" } else { "per task" }),
            None => f.write_str("Lockout(off)"),
        }
    }
}

impl Lockout {
    /// `spec` (`None`: off), counted in `shared` when the state table is set, else in this task.
    pub fn new(spec: Option<LockoutSpec>, shared: Option<Arc<dyn Failures>>) -> Self {
        Self { spec, shared, local: MemoryFailures::default() }
    }

    /// Whether an AUTH from `ip` may check its password at `now`.
    pub async fn check(&self, ip: IpAddr, now: i64) -> Verdict {
        let Some(spec) = &self.spec else { return Verdict::Open };
        let key = client_key(ip);
        let tally = match &self.shared {
            Some(shared) => match shared.get(&key).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(event = "auth_lockout", client = %key, error = %e,
                        "state table unreachable: this task's own count applies");
                    self.local.get(&key).await.unwrap_or_default()
                }
            },
            None => self.local.get(&key).await.unwrap_or_default(),
        };
        locked(tally, spec, now).map_or(Verdict::Open, Verdict::Locked)
    }

    /// A wrong password from `ip` at `now`: count it; `Some(until)` when this failure locks the
    /// address out (the N-th of its window; exactly one counter sees it).
    pub async fn failed(&self, ip: IpAddr, now: i64) -> Option<i64> {
        let spec = self.spec.as_ref()?;
        let key = client_key(ip);
        let tally = match &self.shared {
            Some(shared) => match shared.add(&key, spec, now).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(event = "auth_lockout", client = %key, error = %e,
                        "state table unreachable: failure counted in this task only");
                    self.local.add(&key, spec, now).await.ok()?
                }
            },
            None => self.local.add(&key, spec, now).await.ok()?,
        };
        (tally.failures == spec.failures.get()).then(|| tally.since + spec.window.as_secs() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: &str) -> LockoutSpec {
        LockoutSpec::parse(v).unwrap().unwrap()
    }

    #[test]
    fn parses_the_setting() {
        assert_eq!(spec("10/15m"), LockoutSpec::DEFAULT);
        assert_eq!(spec(" 3 / 1h ").to_string(), "3/1h");
        assert_eq!(LockoutSpec::parse("off"), Ok(None));
        for bad in ["10", "0/15m", "x/15m", "10/soon", "10/500ms", "-1/1m"] {
            assert!(LockoutSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counting_and_locking() {
        let s = spec("3/60s");
        let t = |failures, since| Some(Tally { failures, since });
        // (tally, now, locked until, tally after one more failure)
        let cases = [
            (None, 100, None, Tally { failures: 1, since: 100 }),
            (t(1, 100), 110, None, Tally { failures: 2, since: 100 }),
            (t(2, 100), 159, None, Tally { failures: 3, since: 100 }),
            (t(3, 100), 159, Some(160), Tally { failures: 4, since: 100 }),
            (t(9, 100), 160, None, Tally { failures: 1, since: 160 }), // the window has passed
            (t(2, 100), 160, None, Tally { failures: 1, since: 160 }),
        ];
        for (tally, now, lock, next) in cases {
            assert_eq!(locked(tally, &s, now), lock, "{tally:?} at {now}");
            assert_eq!(count(tally, &s, now), next, "{tally:?} at {now}");
        }
    }

    #[test]
    fn addresses_are_counted_like_the_rate_limit() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), key("2001:db8:1:2:aaaa::1"));
    }

    #[tokio::test]
    async fn the_nth_failure_locks_one_address_out_until_its_window_ends() {
        let lockout = Lockout::new(Some(spec("3/60s")), None);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert_eq!(lockout.failed(a, 100).await, None);
        assert_eq!(lockout.failed(a, 101).await, None);
        assert_eq!(lockout.check(a, 102).await, Verdict::Open);
        assert_eq!(lockout.failed(a, 102).await, Some(160), "the third failure locks");
        assert_eq!(lockout.check(a, 103).await, Verdict::Locked(160));
        assert_eq!(lockout.check(b, 103).await, Verdict::Open, "another address is not affected");
        assert_eq!(lockout.check(a, 160).await, Verdict::Open, "the window has passed");
        let off = Lockout::new(None, None);
        assert_eq!(off.failed(a, 100).await, None);
        assert_eq!(off.check(a, 100).await, Verdict::Open);
    }

    struct Down;

    #[async_trait]
    impl Failures for Down {
        async fn get(&self, _: &str) -> Result<Option<Tally>, String> {
            Err("unreachable".into())
        }
        async fn add(&self, _: &str, _: &LockoutSpec, _: i64) -> Result<Tally, String> {
            Err("unreachable".into())
        }
    }

    #[tokio::test]
    async fn an_unreachable_table_falls_back_to_the_tasks_count() {
        let lockout = Lockout::new(Some(spec("2/60s")), Some(Arc::new(Down)));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(lockout.failed(a, 100).await, None);
        assert_eq!(lockout.failed(a, 101).await, Some(160));
        assert_eq!(lockout.check(a, 102).await, Verdict::Locked(160));
    }
}
