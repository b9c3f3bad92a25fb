//! When to use a cached MTA-STS policy, fetch a new one, or apply none (RFC 8461 §3.3, §5.1) —
//! pure: what the cache holds, what the `_mta-sts` TXT record says now, and the time in; a
//! [`Decision`] out. Also the form a cached policy is stored in (`mta-sts/<domain>.json`).
//!
//! The rules: a cached policy is usable until `max_age` after it was fetched. While the TXT
//! record carries the cached policy's id, the cached policy is used without a fetch. A new id,
//! or no usable cached policy, means a fetch. When there is no live record (absent, invalid, DNS
//! failure) or the fetch fails, a usable cached policy still applies — that is what protects a
//! domain from an attacker who blocks DNS or HTTPS — and otherwise no policy does.

use serde::{Deserialize, Serialize};

use super::policy::Policy;

/// After a failed fetch, the same policy id is not fetched again for this long (seconds), so a
/// broken policy server costs one attempt per domain per 5 minutes, not one per message. A new
/// id in DNS is fetched at once.
pub const FETCH_RETRY_AFTER: i64 = 300;

/// A policy as cached, in memory and in the spool bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The TXT record's `id` the policy was fetched under.
    pub id: String,
    /// Unix seconds.
    pub fetched_at: i64,
    pub policy: Policy,
}

/// Version of the stored JSON; a different one is ignored (and refetched), never misread.
const STORED_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    domain: String,
    #[serde(flatten)]
    cached: Cached,
}

impl Cached {
    /// Whether the policy may still be applied at `now` (§3.3: for `max_age` from its fetch).
    pub fn usable_at(&self, now: i64) -> bool {
        now < self.fetched_at.saturating_add(self.policy.max_age as i64)
    }

    /// The stored form: `{"v":1,"domain":..,"id":..,"fetched_at":..,"policy":{..}}`.
    pub fn to_json(&self, domain: &str) -> Vec<u8> {
        let stored = Stored { v: STORED_VERSION, domain: domain.to_string(), cached: self.clone() };
        serde_json::to_vec(&stored).expect("a cached policy serializes")
    }

    /// Read the stored form back; `Err` for another version, another domain or bad JSON.
    pub fn from_json(domain: &str, bytes: &[u8]) -> Result<Self, String> {
        let stored: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if stored.v != STORED_VERSION {
            return Err(format!("stored version {} is not {STORED_VERSION}", stored.v));
        }
        if stored.domain != domain {
            return Err(format!("stored for {:?}", stored.domain));
        }
        Ok(stored.cached)
    }
}

/// What the domain's `_mta-sts` TXT record says right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txt {
    /// One valid record with this policy id.
    Id(String),
    /// No live record: none, an invalid one, or the lookup failed (the reason, for the log).
    Unavailable(String),
}

/// The last failed fetch of a domain's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: String,
    pub at: i64,
}

/// What to do for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply the cached policy.
    UseCached,
    /// Fetch the policy for this id; on failure, [`fallback`].
    Fetch(String),
    /// Deliver as if the domain had no policy.
    NoPolicy,
}

/// Decide for one delivery at `now`.
pub fn decide(cached: Option<&Cached>, txt: &Txt, failure: Option<&Failure>, now: i64) -> Decision {
    let usable = cached.filter(|c| c.usable_at(now));
    match txt {
        Txt::Id(id) if usable.is_some_and(|c| &c.id == id) => Decision::UseCached,
        Txt::Id(id) if failure.is_some_and(|f| &f.id == id && now - f.at < FETCH_RETRY_AFTER) => fallback(cached, now),
        Txt::Id(id) => Decision::Fetch(id.clone()),
        Txt::Unavailable(_) => fallback(cached, now),
    }
}

/// When no new policy can be had: the cached one while it is usable, else none (§3.3).
pub fn fallback(cached: Option<&Cached>, now: i64) -> Decision {
    match cached {
        Some(c) if c.usable_at(now) => Decision::UseCached,
        _ => Decision::NoPolicy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::mta_sts::policy::Mode;

    const NOW: i64 = 1_800_000_000;

    fn cached(id: &str, fetched_at: i64, max_age: u64) -> Cached {
        Cached {
            id: id.into(),
            fetched_at,
            policy: Policy { mode: Mode::Enforce, max_age, mx: vec!["mx.b.test".into()] },
        }
    }

    fn id(s: &str) -> Txt {
        Txt::Id(s.into())
    }

    #[test]
    fn decisions() {
        let fresh = cached("a", NOW - 100, 3600);
        let expired = cached("a", NOW - 3600, 3600);
        let gone = Txt::Unavailable("NXDOMAIN".into());
        let failed_a = Failure { id: "a".into(), at: NOW - 10 };
        let failed_a_long_ago = Failure { id: "a".into(), at: NOW - FETCH_RETRY_AFTER };
        let failed_b = Failure { id: "b".into(), at: NOW - 10 };
        use Decision::*;
        type Case<'a> = (&'a str, Option<&'a Cached>, &'a Txt, Option<&'a Failure>, Decision);
        let cases: &[Case] = &[
            ("nothing cached, record found", None, &id("a"), None, Fetch("a".into())),
            ("nothing cached, no record", None, &gone, None, NoPolicy),
            ("fresh, same id: no fetch", Some(&fresh), &id("a"), None, UseCached),
            ("fresh, id changed", Some(&fresh), &id("b"), None, Fetch("b".into())),
            ("fresh, record gone or DNS failing", Some(&fresh), &gone, None, UseCached),
            ("expired, same id", Some(&expired), &id("a"), None, Fetch("a".into())),
            ("expired, record gone", Some(&expired), &gone, None, NoPolicy),
            ("fetch of this id just failed, fresh cache", Some(&fresh), &id("b"), Some(&failed_b), UseCached),
            ("fetch of this id just failed, nothing cached", None, &id("a"), Some(&failed_a), NoPolicy),
            ("fetch of this id just failed, expired cache", Some(&expired), &id("a"), Some(&failed_a), NoPolicy),
            ("failure long enough ago: try again", None, &id("a"), Some(&failed_a_long_ago), Fetch("a".into())),
            ("failure was for another id", None, &id("b"), Some(&failed_a), Fetch("b".into())),
        ];
        for (what, c, txt, f, expected) in cases {
            assert_eq!(&decide(*c, txt, *f, NOW), expected, "{what}");
        }
    }

    #[test]
    fn a_failed_fetch_falls_back_to_a_usable_cached_policy_only() {
        assert_eq!(fallback(Some(&cached("a", NOW - 100, 3600)), NOW), Decision::UseCached);
        assert_eq!(fallback(Some(&cached("a", NOW - 3600, 3600)), NOW), Decision::NoPolicy, "expired at max_age");
        assert_eq!(fallback(Some(&cached("a", NOW, 0)), NOW), Decision::NoPolicy, "max_age 0 is never usable");
        assert_eq!(fallback(None, NOW), Decision::NoPolicy);
    }

    #[test]
    fn stored_form_round_trips_and_rejects_strangers() {
        let c = cached("20240101", NOW, 86400);
        let json = c.to_json("b.test");
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.starts_with(r#"{"v":1,"domain":"b.test","id":"20240101","#), "{text}");
        assert!(text.contains(r#""policy":{"mode":"enforce","max_age":86400,"mx":["mx.b.test"]}"#), "{text}");
        assert_eq!(Cached::from_json("b.test", &json), Ok(c));
        assert!(Cached::from_json("c.test", &json).unwrap_err().contains("b.test"));
        let v2 = text.replace(r#""v":1"#, r#""v":2"#);
        assert!(Cached::from_json("b.test", v2.as_bytes()).unwrap_err().contains("version 2"));
        assert!(Cached::from_json("b.test", b"not json").is_err());
    }
}
