//! [`MtaSts`] against a TXT table, a scripted policy fetcher and a counting in-memory bucket:
//! what each delivery costs, what survives a cold start, what applies when fetching fails.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::store::StoreError;
use crate::store::memory::MemorySpool;
use crate::testkit::{self, FakeFetcher};
use crate::vocab::Class;

const NOW: i64 = 1_800_000_000;
const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: *.b.test\nmax_age: 3600\n";
const TESTING: &str = "version: STSv1\nmode: testing\nmx: mx.b.test\nmax_age: 3600\n";

/// `_mta-sts.b.test` TXT answers, changeable between deliveries.
#[derive(Default)]
struct Dns(Mutex<HashMap<String, Lookup<Vec<String>>>>);

impl Dns {
    fn set_id(&self, domain: &str, id: &str) {
        self.set(domain, Lookup::Found(vec![format!("v=STSv1; id={id}")]));
    }
    fn set(&self, domain: &str, answer: Lookup<Vec<String>>) {
        self.0.lock().unwrap().insert(format!("_mta-sts.{domain}"), answer);
    }
}

#[async_trait]
impl Resolver for Dns {
    async fn mx(&self, _: &str) -> Lookup<Vec<(u16, String)>> {
        Lookup::NoData
    }
    async fn ips(&self, _: &str) -> Lookup<Vec<IpAddr>> {
        Lookup::NoData
    }
    async fn txt(&self, name: &str) -> Lookup<Vec<String>> {
        self.0.lock().unwrap().get(name).cloned().unwrap_or(Lookup::NxDomain)
    }
}

/// The in-memory bucket, counting requests.
#[derive(Clone, Default)]
struct Bucket {
    inner: MemorySpool,
    gets: Arc<AtomicUsize>,
    puts: Arc<AtomicUsize>,
}

#[async_trait]
impl PolicyStore for Bucket {
    async fn get_policy(&self, domain: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_policy(domain).await
    }
    async fn put_policy(&self, domain: &str, json: Vec<u8>) -> Result<(), StoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_policy(domain, json).await
    }
}

impl Bucket {
    fn counts(&self) -> (usize, usize) {
        (self.gets.load(Ordering::SeqCst), self.puts.load(Ordering::SeqCst))
    }
}

fn engine(bucket: &Bucket, fetcher: &FakeFetcher) -> MtaSts {
    MtaSts::new(Box::new(bucket.clone()), Box::new(fetcher.clone()))
}

/// b.test publishes `policy` under id 1; an empty bucket.
fn published(policy: &str) -> (Dns, Bucket, FakeFetcher) {
    let (dns, fetcher) = (Dns::default(), FakeFetcher::default());
    dns.set_id("b.test", "1");
    fetcher.set("b.test", Ok(policy));
    (dns, Bucket::default(), fetcher)
}

fn mode(p: Option<Policy>) -> Option<Mode> {
    p.map(|p| p.mode)
}

#[tokio::test]
async fn a_policy_in_memory_costs_no_s3_or_http_request_per_delivery() {
    let (dns, bucket, fetcher) = published(ENFORCE);
    let sts = engine(&bucket, &fetcher);
    for n in 0..5 {
        assert_eq!(mode(sts.policy("b.test", &dns, NOW + n).await), Some(Mode::Enforce));
    }
    assert_eq!(fetcher.calls(), 1, "fetched once");
    assert_eq!(bucket.counts(), (1, 1), "read once at the first delivery, written once after the fetch");
    let stored = bucket.inner.0.lock().unwrap().get("mta-sts/b.test.json").cloned().expect("stored");
    assert_eq!(Cached::from_json("b.test", &stored).unwrap().id, "1");
}

#[tokio::test]
async fn a_new_id_in_dns_is_fetched_at_once() {
    let (dns, bucket, fetcher) = published(ENFORCE);
    let sts = engine(&bucket, &fetcher);
    assert_eq!(mode(sts.policy("b.test", &dns, NOW).await), Some(Mode::Enforce));
    dns.set_id("b.test", "2");
    fetcher.set("b.test", Ok(TESTING));
    assert_eq!(mode(sts.policy("b.test", &dns, NOW + 1).await), Some(Mode::Testing));
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test]
async fn after_a_cold_start_the_stored_policy_applies_with_the_policy_server_down() {
    let (dns, bucket, fetcher) = published(ENFORCE);
    assert_eq!(mode(engine(&bucket, &fetcher).policy("b.test", &dns, NOW).await), Some(Mode::Enforce));

    // A new process; the policy server is gone.
    let down = FakeFetcher::default();
    let sts = engine(&bucket, &down);
    assert_eq!(mode(sts.policy("b.test", &dns, NOW + 60).await), Some(Mode::Enforce));
    assert_eq!(down.calls(), 0, "same id, usable stored policy: nothing to fetch");

    // The TXT record disappears (or DNS is blocked): the cached policy still applies.
    dns.set("b.test", Lookup::Failed("SERVFAIL".into()));
    assert_eq!(mode(sts.policy("b.test", &dns, NOW + 61).await), Some(Mode::Enforce));
    dns.set("b.test", Lookup::NxDomain);
    assert_eq!(mode(sts.policy("b.test", &dns, NOW + 62).await), Some(Mode::Enforce));

    // A new id that cannot be fetched: the cached policy applies, and the fetch waits a while.
    dns.set_id("b.test", "2");
    assert_eq!(mode(sts.policy("b.test", &dns, NOW + 63).await), Some(Mode::Enforce));
    assert_eq!(mode(sts.policy("b.test", &dns, NOW + 64).await), Some(Mode::Enforce));
    assert_eq!(down.calls(), 1, "a failed fetch is not repeated for every delivery");
    assert_eq!(bucket.counts().0, 2, "one read per process");

    // Past max_age the cached policy no longer applies.
    assert_eq!(sts.policy("b.test", &dns, NOW + 3600).await, None);
    assert_eq!(down.calls(), 2, "retried after the pause");
}

#[tokio::test]
async fn a_domain_without_a_record_costs_one_bucket_read_per_process() {
    let (dns, bucket, fetcher) = (Dns::default(), Bucket::default(), FakeFetcher::default());
    let sts = engine(&bucket, &fetcher);
    for n in 0..3 {
        assert_eq!(sts.policy("plain.test", &dns, NOW + n).await, None);
    }
    assert_eq!((fetcher.calls(), bucket.counts()), (0, (1, 0)));
}

#[tokio::test]
async fn bad_policies_and_bad_stored_objects_are_not_applied() {
    let (dns, bucket, fetcher) = published("<html>hello</html>");
    assert_eq!(engine(&bucket, &fetcher).policy("b.test", &dns, NOW).await, None, "an unparsable policy is no policy");
    assert_eq!(bucket.counts().1, 0, "and is not stored");

    bucket.inner.0.lock().unwrap().insert("mta-sts/b.test.json".into(), b"{garbage".to_vec());
    fetcher.set("b.test", Ok(ENFORCE));
    assert_eq!(mode(engine(&bucket, &fetcher).policy("b.test", &dns, NOW).await), Some(Mode::Enforce));
    assert_eq!(fetcher.calls(), 2, "a corrupt stored object is ignored and the policy fetched");

    // Two v=STSv1 records: no usable record, so no policy is fetched.
    dns.set("c.test", Lookup::Found(vec!["v=STSv1; id=a".into(), "v=STSv1; id=b".into()]));
    fetcher.set("c.test", Ok(ENFORCE));
    assert_eq!(engine(&bucket, &fetcher).policy("c.test", &dns, NOW).await, None);
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test]
async fn restrict_applies_the_mode_to_the_mx_hosts() {
    let (dns, spool, fetcher) = (Dns::default(), MemorySpool::default(), FakeFetcher::default());
    let sts = testkit::mta_sts(&spool, &fetcher);
    let hosts = || vec!["mx1.b.test".to_string(), "backup.other.test".to_string()];
    let job = testkit::job("b.test", &["bob@b.test"], NOW);

    assert_eq!(sts.restrict(&job, hosts(), &dns, NOW).await, Ok((hosts(), TlsRequirement::Default)), "no policy");

    dns.set_id("b.test", "1");
    fetcher.set("b.test", Ok(ENFORCE));
    let (kept, tls) = sts.restrict(&job, hosts(), &dns, NOW).await.unwrap();
    assert_eq!((kept, tls), (vec!["mx1.b.test".to_string()], TlsRequirement::Verified));

    let v = sts.restrict(&job, vec!["backup.other.test".into()], &dns, NOW).await.unwrap_err();
    assert_eq!((v.class, v.status.as_str()), (Class::Deferred, "4.7.0"));
    assert!(v.detail.contains("lists none of its MX hosts (backup.other.test)"), "{}", v.detail);

    dns.set_id("b.test", "2");
    fetcher.set("b.test", Ok(TESTING));
    assert_eq!(sts.restrict(&job, hosts(), &dns, NOW).await, Ok((hosts(), TlsRequirement::Report)));
}

#[tokio::test]
async fn memory_holds_at_most_max_domains() {
    let (dns, bucket, fetcher) = (Dns::default(), Bucket::default(), FakeFetcher::default());
    let sts = engine(&bucket, &fetcher);
    for n in 0..MAX_DOMAINS + 10 {
        sts.policy(&format!("d{n}.test"), &dns, NOW).await;
    }
    assert!(sts.slots.lock().unwrap().len() <= MAX_DOMAINS);
}
