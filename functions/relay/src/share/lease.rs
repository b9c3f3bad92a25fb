//! Delivery leases: one worker at a time delivers a job's pending recipients.
//!
//! SQS is at-least-once, and a job whose visibility ran out while its worker still waits for
//! the remote `250` is handed to a second worker. The per-job state in S3 guards a copy that
//! runs *after* the first wrote its outcome; a copy that runs *while* the first is in flight
//! would find nothing written yet and deliver again. So before it reads the job's state a
//! worker claims the job's lease — one conditional write of the item
//! `lease#<queue id>` / `<domain>` (the job's message and destination: every copy and every
//! retry of one job name the same item) with a fresh owner token and an expiry — and deletes
//! it, conditionally on the token, once the job's outcome is written. A worker that finds a
//! live lease of another owner puts its copy back on the queue for the lease's remaining time
//! ([`defer`], between 5 and 30 s) without reading or delivering anything; when it comes back,
//! the state (or the deleted message) the first worker left tells it what is left to do.
//!
//! The state is read *after* the lease is taken, so a copy never acts on a state read before
//! the previous holder finished: the holder writes its state, then releases; the next holder
//! claims, then reads.
//!
//! **Expiry.** A lease lasts [`TERM`] and is renewed every [`RENEW_EVERY`] while its job runs
//! (a job may wait for a session slot); under Lambda never past the invocation's deadline plus
//! [`DEADLINE_MARGIN`] — the process cannot deliver after it. A crashed worker's lease lapses
//! by itself, at most [`TERM`] after its last renewal.
//!
//! **Cost.** One conditional write and one delete per job (two write units), plus a renewal per
//! 20 s of a job that runs longer. The first receive of a job cannot skip them: a copy that is
//! also a first receive is indistinguishable from the original — the ingress's
//! SendMessageBatch retried by the SDK after a lost response queues the same job twice, both
//! received once, and SQS's at-least-once delivery can hand out one message twice, both with a
//! receive count of 1 — so a first receive that skipped the lease could run beside its copy.

use std::sync::Arc;
use std::time::Duration;

use shared::Job;

use super::{Claim, Row, Table, TableError, Taken};

/// How long a lease lasts without a renewal.
pub const TERM: Duration = Duration::from_secs(60);
/// How often a running job renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(20);
/// How long past a Lambda invocation's deadline a lease lasts (a reply already on its way).
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(15);
/// A copy that finds its job leased comes back after the lease's remaining time, within these.
pub const DEFER_MIN: Duration = Duration::from_secs(5);
pub const DEFER_MAX: Duration = Duration::from_secs(30);

/// The item of `job`'s lease: (`lease#<queue id>`, the lower-cased destination domain).
pub fn key(job: &Job) -> (String, String) {
    (format!("lease#{}", job.queue_id), job.domain.to_lowercase())
}

/// When a lease taken or renewed at `now_ms` ends: [`TERM`] on, never past the deadline (Unix
/// ms, under Lambda) plus [`DEADLINE_MARGIN`].
pub fn until(now_ms: i64, deadline_ms: Option<i64>) -> i64 {
    let term = now_ms + TERM.as_millis() as i64;
    match deadline_ms {
        Some(d) => term.min(d + DEADLINE_MARGIN.as_millis() as i64),
        None => term,
    }
}

/// How long a copy that found `holder` waits before it comes back.
pub fn defer(holder: Option<&Row>, now_ms: i64) -> Duration {
    let left = holder.map_or(DEFER_MAX.as_millis() as i64, |h| h.until_ms - now_ms);
    Duration::from_millis(left.max(0) as u64).clamp(DEFER_MIN, DEFER_MAX)
}

/// A lease held by this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    claim: Claim,
}

impl Lease {
    pub fn owner(&self) -> &str {
        &self.claim.owner
    }
}

/// What [`Leases::take`] found.
#[derive(Debug)]
pub enum Outcome {
    /// Ours: deliver, then release it.
    Taken(Lease),
    /// Another worker is delivering this job: put the copy back for `defer`.
    Held { defer: Duration, holder: Option<Row> },
    /// The table could not be reached: deliver without a lease (see `share`).
    Unavailable(TableError),
}

/// The leases of the jobs this worker runs.
#[derive(Clone)]
pub struct Leases {
    table: Arc<dyn Table>,
}

impl Leases {
    pub fn new(table: Arc<dyn Table>) -> Self {
        Self { table }
    }

    /// Claim `job`'s lease at `now_ms` under a fresh owner token.
    pub async fn take(&self, job: &Job, owner: String, now_ms: i64, deadline_ms: Option<i64>) -> Outcome {
        let (pk, sk) = key(job);
        let note = [("job_id".to_string(), job.id())].into();
        let claim = Claim { pk, sk, owner, until_ms: until(now_ms, deadline_ms), note };
        match self.table.claim(&claim, now_ms).await {
            Ok(Taken::Yes) => Outcome::Taken(Lease { claim }),
            Ok(Taken::No(holder)) => Outcome::Held { defer: defer(holder.as_ref(), now_ms), holder },
            Err(e) => Outcome::Unavailable(e),
        }
    }

    /// Push the lease's end on; `Ok(false)` when it lapsed and someone else took it.
    pub async fn renew(&self, lease: &mut Lease, now_ms: i64, deadline_ms: Option<i64>) -> Result<bool, TableError> {
        lease.claim.until_ms = until(now_ms, deadline_ms);
        self.table.renew(&lease.claim).await
    }

    /// Give the lease up (a failure only delays the next copy until the lease lapses).
    pub async fn release(&self, lease: Lease) -> Result<(), TableError> {
        self.table.release(&lease.claim).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::memory::MemoryTable;

    const S: i64 = 1000;

    fn job(domain: &str) -> Job {
        Job::first_attempt("01JD0000000000000000000000", "a@x.test", domain, vec![], 10, 0)
    }

    #[test]
    fn terms_and_deferrals() {
        assert_eq!(key(&job("B.Test")), ("lease#01JD0000000000000000000000".into(), "b.test".into()));
        let cases = [
            // (now, deadline, until)
            (1000 * S, None, 1060 * S),
            (1000 * S, Some(1180 * S), 1060 * S),
            (1000 * S, Some(1030 * S), 1045 * S),
            (1000 * S, Some(990 * S), 1005 * S),
        ];
        for (now, deadline, want) in cases {
            assert_eq!(until(now, deadline), want, "{now} {deadline:?}");
        }
        let row = |until_ms| Row { until_ms, ..Row::default() };
        let secs = |d: Duration| d.as_secs();
        assert_eq!(secs(defer(Some(&row(1012 * S)), 1000 * S)), 12);
        assert_eq!(secs(defer(Some(&row(1001 * S)), 1000 * S)), 5, "at least DEFER_MIN");
        assert_eq!(secs(defer(Some(&row(1100 * S)), 1000 * S)), 30, "at most DEFER_MAX");
        assert_eq!(secs(defer(Some(&row(900 * S)), 1000 * S)), 5, "lapsed meanwhile");
        assert_eq!(secs(defer(None, 1000 * S)), 30, "holder unknown");
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_released_or_lapsed() {
        let table = Arc::new(MemoryTable::default());
        let leases = Leases::new(table.clone());
        let j = job("b.test");
        let Outcome::Taken(mut first) = leases.take(&j, "w1".into(), 1000 * S, None).await else { panic!() };
        let Outcome::Held { defer, holder } = leases.take(&j, "w2".into(), 1010 * S, None).await else { panic!() };
        assert_eq!((defer.as_secs(), holder.unwrap().owner.as_deref()), (30, Some("w1")));
        assert!(matches!(leases.take(&job("c.test"), "w2".into(), 1010 * S, None).await, Outcome::Taken(_)));
        // Renewed at 1040 s: still held at 1090 s, lapsed at 1100 s.
        assert!(leases.renew(&mut first, 1040 * S, None).await.unwrap());
        assert!(matches!(leases.take(&j, "w2".into(), 1090 * S, None).await, Outcome::Held { .. }));
        let Outcome::Taken(second) = leases.take(&j, "w2".into(), 1100 * S, None).await else { panic!() };
        assert!(!leases.renew(&mut first, 1101 * S, None).await.unwrap(), "the first lost it");
        leases.release(first).await.unwrap();
        assert_eq!(table.row(&key(&j)).unwrap().owner.as_deref(), Some("w2"), "a stale release deletes nothing");
        leases.release(second).await.unwrap();
        assert!(table.row(&key(&j)).is_none());
        assert!(matches!(leases.take(&j, "w3".into(), 1221 * S, None).await, Outcome::Taken(_)));
        table.fail(true);
        assert!(matches!(leases.take(&job("d.test"), "w3".into(), 1221 * S, None).await, Outcome::Unavailable(_)));
    }
}
