//! How [`SmtpTransport`] puts a job on a session: a pooled one when there is one, a new one when
//! the next hop has room, otherwise it waits (`deliver::pool` keeps the books); and what a
//! transaction's replies do to the next hop (`deliver::throttle`).
//!
//! - A **pooled session** is checked with RSET first. One found dead then, or one that breaks
//!   before any recipient was accepted or refused, is dropped and the job goes to a fresh
//!   connection as if nothing happened: nothing was handed over on it. One that breaks later ends
//!   the attempt like a fresh one would (unanswered recipients deferred), and the next job of the
//!   next hop opens a new session in its place.
//! - After a transaction the session goes back to the pool unless it broke, the server closes it
//!   (421), it has carried `RELAY_MAX_MESSAGES_PER_CONNECTION`, or its next hop is on hold.
//! - A **"slow down" reply** — at the greeting, EHLO or any stage of a transaction — puts the next
//!   hop on hold: the session and the hop's idle ones are closed, every job of that next hop still
//!   to come gets deferred without a connection for as long as the hold lasts, and each such
//!   attempt carries the hold so the planner retries after it without counting the attempt.
//! - **Across workers** (a state table set): a new session also needs one of the next hop's slots
//!   shared by every worker (`share::slots`), kept with its local slot; a hold another worker
//!   wrote stops this worker's jobs of that hop as its own would, and a "slow down" reply here is
//!   written there for the others. A job that finds every shared slot held for `share::slots::WAIT`
//!   is deferred without counting the attempt.
//! - **End of a batch** ([`Transport::end_batch`]): under Lambda (`RELAY_CONNECTION_IDLE` 0) every
//!   idle session is closed before the invocation returns — and its shared slot released; under
//!   `relay poll` they stay open for `RELAY_CONNECTION_IDLE` for the next batch, then a sweep closes
//!   the ones nobody took.

use std::time::Instant;

use async_trait::async_trait;
use shared::{Job, Reply};

use super::client::{After, Session, SmtpTransport};
use super::pool::{Lease, Pooled, Slot};
use super::throttle::Hold;
use super::{Transport, throttle, wire};
use crate::route::{self, Target};
use crate::share::slots::{self, Acquired, SharedHold};
use crate::vocab::{Attempt, Class, Verdict};

#[async_trait]
impl Transport for SmtpTransport {
    async fn deliver(&self, targets: &[Target], job: &Job, message: &[u8]) -> Attempt {
        if !wire::safe_address(&job.sender) {
            return Attempt::all(job, &Verdict::failed("5.1.7", "bad sender address syntax"), None);
        }
        let hop = route::destination(job, targets);
        close_all(self.pool.expired(Instant::now())).await;
        let mut reuse = true;
        loop {
            match self.pool.acquire(&hop, targets, reuse).await {
                Lease::Held(hold) => return held(job, &hop, &hold),
                Lease::Idle(pooled) => {
                    if let Some(not_now) = self.shared_hold(&hop, job).await {
                        close(pooled).await;
                        return not_now;
                    }
                    match self.on_pooled(pooled, &hop, job, message).await {
                        Some(attempt) => return attempt,
                        None => reuse = false,
                    }
                }
                Lease::Fresh(mut slot, evicted) => {
                    if let Some(mut old) = evicted {
                        old.close().await;
                    }
                    if let Err(not_now) = self.share_slot(&mut slot, &hop, job).await {
                        return not_now;
                    }
                    return self.on_fresh(slot, &hop, targets, job, message).await;
                }
            }
        }
    }

    async fn end_batch(&self) {
        let idle = self.pool.limits().idle;
        if idle.is_zero() {
            close_all(self.pool.drain()).await;
            self.settle_shared().await;
            return;
        }
        let pool = self.pool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            close_all(pool.expired(Instant::now())).await;
        });
    }

    async fn shutdown(&self) {
        close_all(self.pool.drain()).await;
        self.settle_shared().await;
    }
}

/// The attempt of a job not tried because its next hop is on hold.
fn held(job: &Job, hop: &str, hold: &Hold) -> Attempt {
    Attempt { throttled: Some(hold.remaining), ..Attempt::all(job, &hold.verdict(hop), None) }
}

impl SmtpTransport {
    /// With a state table: a place under the next hop's limit across all workers for the session
    /// about to open in `slot` (one taken over from an evicted session has one already). The
    /// attempt to report instead when the hop is on hold or its places stay taken.
    async fn share_slot(&self, slot: &mut Slot<Session>, hop: &str, job: &Job) -> Result<(), Attempt> {
        let Some(shared) = &self.shared else { return Ok(()) };
        if slot.attached() {
            return Ok(());
        }
        match shared.acquire(hop).await {
            Acquired::Slot(guard) => {
                slot.attach(Box::new(guard));
                Ok(())
            }
            Acquired::Unshared => Ok(()),
            Acquired::Held(h) => Err(self.adopt(hop, &h, job).await),
            Acquired::Busy => {
                let limit = self.pool.limits().sessions;
                let why = format!(
                    "{hop}: {limit} sessions (RELAY_DESTINATION_CONCURRENCY) already open across workers; not tried"
                );
                tracing::info!(next_hop = %hop, queue_id = %job.queue_id, limit, "no session slot free across workers");
                Err(Attempt {
                    throttled: Some(slots::BUSY_RETRY),
                    ..Attempt::all(job, &Verdict::deferred("4.4.5", why), None)
                })
            }
        }
    }

    /// Before a pooled session carries another job: a hold another worker wrote since (looked at
    /// every few seconds), adopted, as the attempt to report instead.
    async fn shared_hold(&self, hop: &str, job: &Job) -> Option<Attempt> {
        let h = self.shared.as_ref()?.hold_in_force(hop).await?;
        Some(self.adopt(hop, &h, job).await)
    }

    /// Another worker's hold of `hop`: held here too (idle sessions closed); `job`'s attempt.
    async fn adopt(&self, hop: &str, h: &SharedHold, job: &Job) -> Attempt {
        let (hold, idle) = self.pool.adopt(hop, h.remaining, &h.reply, h.episodes, Instant::now());
        tracing::info!(next_hop = %hop, reply = %hold.reply.one_line(), hold = hold.remaining.as_secs(),
            queue_id = %job.queue_id, "destination on hold (another worker was asked to slow down)");
        close_all(idle).await;
        held(job, hop, &hold)
    }

    /// Wait for the release of the shared slots of sessions closed so far.
    async fn settle_shared(&self) {
        if let Some(shared) = &self.shared {
            shared.settle().await;
        }
    }

    /// A job on a pooled session; `None` when the session turned out dead before anything was
    /// handed over on it.
    async fn on_pooled(&self, mut p: Pooled<Session>, hop: &str, job: &Job, message: &[u8]) -> Option<Attempt> {
        let dead = match p.session.reset().await {
            Err(e) => Some(e),
            Ok(()) => {
                let (outcomes, after) = self.transaction(&mut p.session, job, message).await;
                if after != After::Unused {
                    return Some(self.finish(p, hop, job, outcomes, after).await);
                }
                Some(outcomes.first().map(|(_, v)| v.text()).unwrap_or_default())
            }
        };
        tracing::info!(queue_id = %job.queue_id, host = %p.target.host, addr = %p.target.addr, uses = p.uses,
            error = dead.as_deref().unwrap_or_default(), "pooled session found closed; the job goes to a fresh one");
        None
    }

    /// A job on a new session opened in `slot`.
    async fn on_fresh(&self, slot: Slot<Session>, hop: &str, targets: &[Target], job: &Job, message: &[u8]) -> Attempt {
        match self.open_any(targets, job).await {
            Ok((target, session)) => {
                let mut p = Pooled::new(slot, target, session);
                let (outcomes, after) = self.transaction(&mut p.session, job, message).await;
                self.finish(p, hop, job, outcomes, after).await
            }
            Err((verdict, remote)) => {
                drop(slot);
                let throttled = match throttle::first([&verdict]) {
                    Some(reply) => Some(self.slow_down(hop, reply, job).await),
                    None => None,
                };
                Attempt { throttled, ..Attempt::all(job, &throttle::transient(verdict), remote) }
            }
        }
    }

    /// After a transaction on `p`: throttle or deliveries to note, and the session back to the
    /// pool or closed.
    async fn finish(
        &self,
        mut p: Pooled<Session>,
        hop: &str,
        job: &Job,
        outcomes: Vec<(String, Verdict)>,
        after: After,
    ) -> Attempt {
        p.uses += 1;
        let remote = Some(crate::vocab::Remote { conn_use: p.uses, ..p.session.remote.clone() });
        let outcomes: Vec<(String, Verdict)> = outcomes.into_iter().map(|(a, v)| (a, throttle::transient(v))).collect();
        if let Some(reply) = throttle::first(outcomes.iter().map(|(_, v)| v)) {
            let throttled = Some(self.slow_down(hop, reply, job).await);
            close(p).await;
            return Attempt { outcomes, remote, throttled };
        }
        let now = Instant::now();
        if outcomes.iter().any(|(_, v)| v.class == Class::Sent) {
            self.pool.delivered(hop, now);
        }
        match after {
            After::Usable => {
                if let Some(p) = self.pool.release(p, now) {
                    close(p).await;
                }
            }
            After::Closed | After::Unused => drop(p), // nothing to say QUIT to
        }
        Attempt { outcomes, remote, throttled: None }
    }

    /// `hop` said `reply`: hold it and close its idle sessions; how long the hold lasts.
    async fn slow_down(&self, hop: &str, reply: &Reply, job: &Job) -> std::time::Duration {
        let (hold, idle) = self.pool.throttle(hop, reply, Instant::now());
        tracing::warn!(next_hop = %hop, reply = %reply.one_line(), hold = hold.remaining.as_secs(),
            episodes = hold.episodes, closing_idle = idle.len(), queue_id = %job.queue_id,
            "destination asked to slow down; its jobs are deferred while the hold lasts");
        // The other workers learn of the hold before the shared slots of the idle sessions free up.
        if let Some(shared) = &self.shared {
            shared.hold(hop, &hold.reply, hold.remaining, hold.episodes).await;
        }
        close_all(idle).await;
        hold.remaining
    }
}

/// QUIT, then the slot is freed.
async fn close(mut p: Pooled<Session>) {
    p.session.close().await;
}

async fn close_all(sessions: Vec<Pooled<Session>>) {
    futures::future::join_all(sessions.into_iter().map(close)).await;
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
