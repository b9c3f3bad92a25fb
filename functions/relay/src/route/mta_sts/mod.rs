//! MTA-STS (RFC 8461) for MX delivery: which of a domain's MX hosts mail may go to, and whether
//! their sessions must be TLS with a verified certificate, from the domain's published policy.
//!
//! Per delivery, [`MtaSts::restrict`] looks up the `_mta-sts.<domain>` TXT record (DNS, cached
//! by the resolver for its TTL); [`cache::decide`] says whether the cached policy, a fresh
//! fetch ([`fetch`]) or no policy applies; [`policy::select`] applies the policy to the MX hosts.
//!
//! Policies are cached twice: in memory for the warm process, and in the spool bucket
//! (`mta-sts/<domain>.json`, [`PolicyStore`]) so that a policy survives a Lambda cold start — a
//! domain's policy must keep protecting it when an attacker blocks the policy server, which is
//! the point of caching for `max_age`. Cost: a domain whose policy is in memory costs one DNS
//! question per delivery and no S3 or HTTP request; after a cold start the first delivery to
//! each domain reads its stored policy once (a GET; for most domains a 404, remembered too).
//!
//! One lock per domain: concurrent deliveries to a domain wait for one fetch instead of each
//! making their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shared::Job;

use crate::route::{Lookup, Resolver};
use crate::store::PolicyStore;
use crate::vocab::TlsRequirement;
use crate::vocab::Verdict;

pub mod cache;
pub mod fetch;
pub mod policy;

pub use fetch::{Fetcher, HttpsFetcher};
pub use policy::{Mode, Policy};

use cache::{Cached, Decision, Failure, Txt};

/// Domains held in memory at most. Past it, entries not in use are dropped; they are read from
/// the spool bucket again when next needed. (A domain entry is a few hundred bytes.)
pub const MAX_DOMAINS: usize = 10_000;

/// What is known of one domain in this process.
#[derive(Default)]
struct Slot {
    /// The spool bucket was read for this domain.
    loaded: bool,
    cached: Option<Cached>,
    failure: Option<Failure>,
}

/// The MTA-STS policies of recipient domains: looked up, fetched, cached, applied.
pub struct MtaSts {
    store: Box<dyn PolicyStore>,
    fetcher: Box<dyn Fetcher>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl MtaSts {
    pub fn new(store: Box<dyn PolicyStore>, fetcher: Box<dyn Fetcher>) -> Self {
        Self { store, fetcher, slots: Mutex::new(HashMap::new()) }
    }

    /// The MX `hosts` of `job`'s domain that mail may go to, and what their sessions must prove.
    /// Under `enforce` with none of them listed, the recipients are deferred: the policy may
    /// change (a new id is fetched at the next attempt), and nothing goes to an unlisted host.
    pub async fn restrict(
        &self,
        job: &Job,
        hosts: Vec<String>,
        resolver: &dyn Resolver,
        now: i64,
    ) -> Result<(Vec<String>, TlsRequirement), Verdict> {
        let policy = self.policy(&job.domain, resolver, now).await;
        let selection = policy::select(policy.as_ref(), hosts);
        let unlisted = selection.unlisted.join(" ");
        let enforced = selection.tls == TlsRequirement::Verified;
        if enforced && selection.hosts.is_empty() {
            return Err(Verdict::deferred(
                "4.7.0",
                format!("MTA-STS policy of {} (enforce) lists none of its MX hosts ({unlisted})", job.domain),
            ));
        }
        if enforced && !unlisted.is_empty() {
            tracing::info!(queue_id = %job.queue_id, domain = %job.domain, unlisted = %unlisted,
                "mta-sts enforce: MX hosts the policy does not list are skipped");
        } else if !unlisted.is_empty() {
            tracing::warn!(queue_id = %job.queue_id, domain = %job.domain, unlisted = %unlisted,
                "mta-sts testing: MX hosts the policy does not list (delivering anyway)");
        }
        Ok((selection.hosts, selection.tls))
    }

    /// The policy that applies to mail for `domain` at `now`, if any.
    pub async fn policy(&self, domain: &str, resolver: &dyn Resolver, now: i64) -> Option<Policy> {
        let domain = crate::route::dns::ascii_domain(domain);
        let txt = match resolver.txt(&format!("_mta-sts.{domain}")).await {
            Lookup::Found(records) => policy::record_id(&records).map_or_else(Txt::Unavailable, Txt::Id),
            Lookup::NoData | Lookup::NxDomain => Txt::Unavailable("no _mta-sts TXT record".into()),
            Lookup::Failed(e) => Txt::Unavailable(format!("_mta-sts TXT lookup failed: {e}")),
        };
        let slot = self.slot(&domain);
        let mut slot = slot.lock().await;
        if !slot.loaded {
            self.load(&domain, &mut slot).await;
        }
        let decision = match cache::decide(slot.cached.as_ref(), &txt, slot.failure.as_ref(), now) {
            Decision::Fetch(id) => self.refresh(&domain, id, &mut slot, resolver, now).await,
            other => other,
        };
        if let Txt::Unavailable(why) = &txt {
            tracing::debug!(domain = %domain, why = %why, cached = decision == Decision::UseCached, "mta-sts: no live record");
        }
        match decision {
            Decision::UseCached => slot.cached.as_ref().map(|c| c.policy.clone()),
            _ => None,
        }
    }

    fn slot(&self, domain: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().expect("the MTA-STS cache lock is never poisoned");
        if !slots.contains_key(domain) && slots.len() >= MAX_DOMAINS {
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        slots.entry(domain.to_string()).or_default().clone()
    }

    /// Read the domain's stored policy; a read that fails is tried again at the next delivery.
    async fn load(&self, domain: &str, slot: &mut Slot) {
        match self.store.get_policy(domain).await {
            Ok(stored) => {
                slot.loaded = true;
                slot.cached = stored.and_then(|bytes| {
                    Cached::from_json(domain, &bytes)
                        .inspect_err(|e| tracing::warn!(domain = %domain, error = %e, "stored mta-sts policy ignored"))
                        .ok()
                });
            }
            Err(e) => tracing::warn!(domain = %domain, error = %e, "stored mta-sts policy unreadable"),
        }
    }

    /// Fetch the policy for `id`; on success it replaces the cached one (memory and bucket).
    async fn refresh(&self, domain: &str, id: String, slot: &mut Slot, resolver: &dyn Resolver, now: i64) -> Decision {
        let fetched = self.fetcher.fetch(domain, resolver).await.and_then(|text| policy::parse_policy(&text));
        match fetched {
            Ok(policy) => {
                tracing::info!(domain = %domain, id = %id, mode = policy.mode.as_str(), max_age = policy.max_age,
                    mx = %policy.mx.join(" "), "mta-sts policy fetched");
                let cached = Cached { id, fetched_at: now, policy };
                if let Err(e) = self.store.put_policy(domain, cached.to_json(domain)).await {
                    tracing::warn!(domain = %domain, error = %e, "mta-sts policy not stored; cached in memory only");
                }
                slot.cached = Some(cached);
                slot.failure = None;
                Decision::UseCached
            }
            Err(e) => {
                let fallback = cache::fallback(slot.cached.as_ref(), now);
                tracing::warn!(domain = %domain, id = %id, error = %e, cached_policy_applies = fallback == Decision::UseCached,
                    "mta-sts policy fetch failed");
                slot.failure = Some(Failure { id, at: now });
                fallback
            }
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
