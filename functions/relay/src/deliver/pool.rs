//! Sessions per next hop: how many are open, which are idle, and whether the destination is on
//! hold — the bookkeeping behind connection reuse, with no I/O (the session type is a parameter;
//! the SMTP client puts its sessions in, `deliver::transport` decides when).
//!
//! - **Limit.** At most [`Limits::sessions`] sessions per next hop (`RELAY_DESTINATION_CONCURRENCY`)
//!   are open at once in this process, counting the ones being opened and closed: every one holds a
//!   [`Slot`], and a job that finds none free waits until one is released.
//! - **Reuse.** After a transaction a session goes back idle unless it has carried
//!   [`Limits::messages`] (`RELAY_MAX_MESSAGES_PER_CONNECTION`) or its destination is on hold. A job
//!   takes the idle session whose target comes first in its own target list (so an MX job prefers
//!   its best MX host, and a session is only ever shared by jobs with an equal [`Target`]); among
//!   sessions to one target, the most recently used, so that the others can expire.
//! - **Eviction.** At the limit with no idle session to one of its targets, a job closes the
//!   longest idle session of the next hop (to a target it cannot use) and opens its own.
//! - **Idle expiry.** [`Pool::expired`] hands back sessions idle for [`Limits::idle`]
//!   (`RELAY_CONNECTION_IDLE`); [`Pool::drain`] all idle ones (end of a Lambda invocation).
//! - **Hold.** [`Pool::throttle`] puts the next hop on hold ([`Backoff`]); while it lasts every
//!   job of that next hop gets [`Lease::Held`] instead of a session, and its idle sessions are
//!   handed back to be closed.
//!
//! - **Shared limits.** With a state table a slot also carries a place under the limit across
//!   all workers (`share::slots`), attached by the transport ([`Slot::attach`]); it goes wherever
//!   the slot goes (an evicted session's slot is reused with it) and is given up when the slot is
//!   dropped. [`Pool::adopt`] puts a hop on hold because another worker was told to slow down.
//!
//! Nothing here is dropped under the lock: sessions to close are returned to the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shared::Reply;
use tokio::sync::Notify;

use super::throttle::{Backoff, Hold};
use crate::route::Target;

/// The pool's limits, from the relay's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Sessions open at once per next hop.
    pub sessions: usize,
    /// Transactions a session carries before it is closed.
    pub messages: u32,
    /// How long a session may stay idle.
    pub idle: Duration,
    /// Hold after the 1st, 2nd, … consecutive throttling episode; the last entry repeats.
    pub backoff: Vec<Duration>,
}

type Hops<S> = Arc<Mutex<HashMap<String, Hop<S>>>>;

/// One next hop's state.
struct Hop<S> {
    /// Slots held: sessions open, being opened or being closed.
    open: usize,
    /// Idle sessions, least recently used first.
    idle: Vec<(Pooled<S>, Instant)>,
    backoff: Backoff,
    /// Woken whenever a slot or an idle session is released, or the hop is put on hold.
    notify: Arc<Notify>,
}

impl<S> Hop<S> {
    fn new() -> Self {
        Self { open: 0, idle: Vec::new(), backoff: Backoff::default(), notify: Arc::new(Notify::new()) }
    }
}

/// A place under a next hop's session limit. Every open session holds one, and so does a job
/// while it opens a session; dropping it frees the place and wakes the jobs waiting for one.
pub struct Slot<S> {
    hop: String,
    hops: Hops<S>,
    /// What else holds this place (a slot shared across workers); dropped with the slot.
    extra: Option<Extra>,
}

/// Something a slot keeps as long as it lives (its drop gives it up).
pub type Extra = Box<dyn std::any::Any + Send + Sync>;

impl<S> Slot<S> {
    /// Keep `extra` with this slot.
    pub fn attach(&mut self, extra: Extra) {
        self.extra = Some(extra);
    }

    /// True when something is attached already (a slot taken over from an evicted session).
    pub fn attached(&self) -> bool {
        self.extra.is_some()
    }
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        drop(self.extra.take()); // outside the lock
        let mut hops = lock(&self.hops);
        if let Some(h) = hops.get_mut(&self.hop) {
            h.open -= 1;
            h.notify.notify_waiters();
            // Idle sessions hold slots, so none is left here to drop under the lock.
            if h.open == 0 && h.backoff.is_clear() {
                hops.remove(&self.hop);
            }
        }
    }
}

/// A session with its target, its use count and its slot.
pub struct Pooled<S> {
    pub target: Target,
    pub session: S,
    /// Transactions carried so far.
    pub uses: u32,
    slot: Slot<S>,
}

impl<S> Pooled<S> {
    /// A session just opened in `slot`.
    pub fn new(slot: Slot<S>, target: Target, session: S) -> Self {
        Self { target, session, uses: 0, slot }
    }

    /// The next hop it counts against.
    pub fn hop(&self) -> &str {
        &self.slot.hop
    }
}

/// What a job gets from [`Pool::acquire`].
pub enum Lease<S> {
    /// The next hop is on hold: do not connect.
    Held(Hold),
    /// An idle session to one of the job's targets.
    Idle(Pooled<S>),
    /// A slot to open a new session in, and the idle session it was taken from (to a target the
    /// job cannot use), to be closed first.
    Fresh(Slot<S>, Option<S>),
}

/// The sessions of every next hop in this process. Cloning shares the pool.
pub struct Pool<S> {
    limits: Arc<Limits>,
    hops: Hops<S>,
}

impl<S> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Self { limits: self.limits.clone(), hops: self.hops.clone() }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic elsewhere: every change is one statement.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S> Pool<S> {
    pub fn new(limits: Limits) -> Self {
        Self { limits: Arc::new(limits), hops: Arc::default() }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A session (or the right to open one) for a job to `hop` over `targets`, waiting while the
    /// hop is at its limit with every session busy. `reuse: false` skips idle sessions (after
    /// one was found dead).
    pub async fn acquire(&self, hop: &str, targets: &[Target], reuse: bool) -> Lease<S> {
        loop {
            let notify;
            let released;
            {
                let mut hops = lock(&self.hops);
                let h = hops.entry(hop.to_string()).or_insert_with(Hop::new);
                if let Some(hold) = h.backoff.hold(Instant::now()) {
                    return Lease::Held(hold);
                }
                let best = targets.iter().find_map(|t| h.idle.iter().rposition(|(p, _)| &p.target == t));
                if let Some(i) = best.filter(|_| reuse) {
                    return Lease::Idle(h.idle.remove(i).0);
                }
                if h.open < self.limits.sessions {
                    h.open += 1;
                    return Lease::Fresh(Slot { hop: hop.to_string(), hops: self.hops.clone(), extra: None }, None);
                }
                if !h.idle.is_empty() {
                    let Pooled { slot, session, .. } = h.idle.remove(0).0;
                    return Lease::Fresh(slot, Some(session));
                }
                // Registered before the lock is released, so no release in between is missed.
                notify = h.notify.clone();
                released = notify.notified();
            }
            released.await;
        }
    }

    /// Return `p` after a transaction at `now`; it comes back when it is to be closed instead
    /// (it has carried its messages, or its next hop is on hold).
    pub fn release(&self, p: Pooled<S>, now: Instant) -> Option<Pooled<S>> {
        if p.uses >= self.limits.messages {
            return Some(p);
        }
        let mut hops = lock(&self.hops);
        let Some(h) = hops.get_mut(p.hop()) else { return Some(p) };
        if h.backoff.hold(now).is_some() {
            return Some(p);
        }
        h.idle.push((p, now));
        h.notify.notify_waiters();
        None
    }

    /// `hop` said `reply` (slow down) at `now`: put it on hold and hand back its idle sessions.
    pub fn throttle(&self, hop: &str, reply: &Reply, now: Instant) -> (Hold, Vec<Pooled<S>>) {
        let mut hops = lock(&self.hops);
        let h = hops.entry(hop.to_string()).or_insert_with(Hop::new);
        let hold = h.backoff.throttled(now, reply, &self.limits.backoff);
        let idle = h.idle.drain(..).map(|(p, _)| p).collect();
        h.notify.notify_waiters();
        (hold, idle)
    }

    /// Another worker's hold of `hop` (`remaining` from `now`): hold it here too and hand back its
    /// idle sessions.
    pub fn adopt(
        &self,
        hop: &str,
        remaining: Duration,
        reply: &Reply,
        episodes: u32,
        now: Instant,
    ) -> (Hold, Vec<Pooled<S>>) {
        let mut hops = lock(&self.hops);
        let h = hops.entry(hop.to_string()).or_insert_with(Hop::new);
        let hold = h.backoff.adopt(now, remaining, reply, episodes);
        let idle = h.idle.drain(..).map(|(p, _)| p).collect();
        h.notify.notify_waiters();
        (hold, idle)
    }

    /// `hop` accepted a transaction at `now` (ends its series of throttling episodes).
    pub fn delivered(&self, hop: &str, now: Instant) {
        if let Some(h) = lock(&self.hops).get_mut(hop) {
            h.backoff.delivered(now);
        }
    }

    /// Idle sessions past the idle limit at `now`, out of the pool, to be closed.
    pub fn expired(&self, now: Instant) -> Vec<Pooled<S>> {
        let idle = self.limits.idle;
        let mut out = Vec::new();
        for h in lock(&self.hops).values_mut() {
            let (old, keep): (Vec<_>, Vec<_>) = h.idle.drain(..).partition(|(_, since)| *since + idle <= now);
            h.idle = keep;
            out.extend(old.into_iter().map(|(p, _)| p));
        }
        out
    }

    /// Every idle session, out of the pool, to be closed.
    pub fn drain(&self) -> Vec<Pooled<S>> {
        lock(&self.hops).values_mut().flat_map(|h| h.idle.drain(..).map(|(p, _)| p).collect::<Vec<_>>()).collect()
    }

    /// Slots held and idle sessions of `hop` (for tests and logs).
    pub fn counts(&self, hop: &str) -> (usize, usize) {
        lock(&self.hops).get(hop).map_or((0, 0), |h| (h.open, h.idle.len()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn target(n: u8) -> Target {
        Target::new(format!("mx{n}.b.test"), ([192, 0, 2, n], 25).into(), crate::route::Hop::Mx)
    }

    fn pool(sessions: usize, messages: u32) -> Pool<u32> {
        let backoff = vec![Duration::from_secs(60)];
        Pool::new(Limits { sessions, messages, idle: Duration::from_secs(5), backoff })
    }

    /// A fresh session `id` to `t`, as a job would open it.
    async fn open(pool: &Pool<u32>, t: &Target, id: u32) -> Pooled<u32> {
        match pool.acquire("b.test", std::slice::from_ref(t), true).await {
            Lease::Fresh(slot, None) => Pooled::new(slot, t.clone(), id),
            _ => panic!("expected a fresh slot"),
        }
    }

    /// A pool with room for `sessions` per hop, and its first session (`1`, to `mx1`) just opened.
    async fn with_one(sessions: usize) -> (Pool<u32>, Target, Instant, Pooled<u32>) {
        let (pool, t1) = (pool(sessions, 100), target(1));
        let a = open(&pool, &t1, 1).await;
        (pool, t1, Instant::now(), a)
    }

    /// A job asking for a session to `t` in the background, after it has had time to start waiting.
    async fn waiting(pool: &Pool<u32>, t: &Target) -> tokio::task::JoinHandle<Lease<u32>> {
        let (pool, t) = (pool.clone(), t.clone());
        let job = tokio::spawn(async move { pool.acquire("b.test", &[t], true).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        job
    }

    fn used(mut p: Pooled<u32>) -> Pooled<u32> {
        p.uses += 1;
        p
    }

    #[tokio::test]
    async fn the_limit_holds_and_a_release_wakes_a_waiting_job() {
        let (pool, t1, now, a) = with_one(2).await;
        let _b = open(&pool, &t1, 2).await;
        assert_eq!(pool.counts("b.test"), (2, 0));
        let job = waiting(&pool, &t1).await;
        assert!(!job.is_finished(), "a third session must wait at a limit of 2");
        assert!(pool.release(used(a), now).is_none());
        let Lease::Idle(p) = job.await.unwrap() else { panic!("expected the released session") };
        assert_eq!(p.session, 1, "the waiting job got session 1");
        drop(p);
        assert_eq!(pool.counts("b.test"), (1, 0), "and its drop freed the slot");
    }

    #[tokio::test]
    async fn a_dropped_session_frees_its_slot_for_a_fresh_one() {
        let (pool, t1, _, a) = with_one(1).await;
        let job = waiting(&pool, &t1).await;
        assert!(!job.is_finished());
        drop(a); // the connection broke
        assert!(matches!(job.await.unwrap(), Lease::Fresh(_, None)));
        assert_eq!(pool.counts("b.test"), (0, 0), "the hop is forgotten once nothing is open");
    }

    #[tokio::test]
    async fn max_messages_closes_and_other_hops_do_not_count() {
        let pool = pool(1, 2);
        let (t1, now) = (target(1), Instant::now());
        let mut a = open(&pool, &t1, 1).await;
        a = used(a);
        assert!(pool.release(a, now).is_none(), "1 of 2 messages: kept");
        let Lease::Idle(a) = pool.acquire("b.test", std::slice::from_ref(&t1), true).await else { panic!() };
        let a = pool.release(used(a), now).expect("2 of 2 messages: to be closed");
        assert_eq!((a.uses, a.session), (2, 1));
        assert!(matches!(pool.acquire("c.test", &[t1], true).await, Lease::Fresh(_, None)), "another hop, own limit");
    }

    #[tokio::test]
    async fn a_job_takes_the_session_to_its_earliest_target_and_evicts_at_the_limit() {
        let pool = pool(2, 100);
        let (t1, t2, t3, now) = (target(1), target(2), target(3), Instant::now());
        let a = open(&pool, &t2, 2).await;
        let b = open(&pool, &t1, 1).await;
        assert!(pool.release(used(a), now).is_none());
        assert!(pool.release(used(b), now + Duration::from_secs(1)).is_none());
        // Targets [t1, t2]: t1 comes first, whichever was used last.
        let Lease::Idle(p) = pool.acquire("b.test", &[t1.clone(), t2.clone()], true).await else { panic!() };
        assert_eq!(p.session, 1);
        assert!(pool.release(p, now + Duration::from_secs(2)).is_none());
        // `reuse: false` (an idle one was found dead) at the limit: evicts the least recently used.
        let Lease::Fresh(_slot, Some(evicted)) = pool.acquire("b.test", std::slice::from_ref(&t1), false).await else {
            panic!()
        };
        assert_eq!(evicted, 2);
        // A job whose only target has no session evicts the other hop-mate.
        let Lease::Fresh(_slot2, Some(evicted)) = pool.acquire("b.test", &[t3], true).await else { panic!() };
        assert_eq!(evicted, 1);
        assert_eq!(pool.counts("b.test"), (2, 0));
    }

    #[tokio::test]
    async fn idle_sessions_expire_and_drain() {
        let (pool, t1, t0, a) = with_one(3).await;
        let b = open(&pool, &t1, 2).await;
        assert!(pool.release(used(a), t0).is_none());
        assert!(pool.release(used(b), t0 + Duration::from_secs(3)).is_none());
        assert!(pool.expired(t0 + Duration::from_millis(4999)).is_empty());
        let gone = pool.expired(t0 + Duration::from_secs(5));
        assert_eq!(gone.iter().map(|p| p.session).collect::<Vec<_>>(), [1]);
        assert_eq!(pool.counts("b.test"), (2, 1), "an expired session keeps its slot until it is closed");
        drop(gone);
        assert_eq!(pool.counts("b.test"), (1, 1));
        let rest: Vec<u32> = pool.drain().into_iter().map(|p| p.session).collect();
        assert_eq!(rest, [2]);
        assert_eq!(pool.counts("b.test"), (0, 0));
    }

    #[tokio::test]
    async fn what_is_attached_to_a_slot_goes_with_it_and_is_dropped_with_it() {
        struct Flag(Arc<Mutex<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                *self.0.lock().unwrap() = true;
            }
        }
        let (pool, t1, now) = (pool(1, 100), target(1), Instant::now());
        let dropped = Arc::new(Mutex::new(false));
        let Lease::Fresh(mut slot, None) = pool.acquire("b.test", std::slice::from_ref(&t1), true).await else {
            panic!()
        };
        assert!(!slot.attached());
        slot.attach(Box::new(Flag(dropped.clone())));
        assert!(pool.release(used(Pooled::new(slot, t1.clone(), 1)), now).is_none());
        // Evicted for another target: the new session gets the slot with what is attached.
        let Lease::Fresh(slot, Some(1)) = pool.acquire("b.test", &[target(2)], true).await else { panic!() };
        assert!(slot.attached() && !*dropped.lock().unwrap());
        drop(slot);
        assert!(*dropped.lock().unwrap(), "given up with the slot");
    }

    #[tokio::test]
    async fn another_workers_hold_is_adopted() {
        let (pool, t1, now, a) = with_one(2).await;
        assert!(pool.release(used(a), now).is_none());
        let (hold, idle) = pool.adopt("b.test", Duration::from_secs(30), &Reply::parse(421, "4.7.0 busy"), 2, now);
        assert_eq!((hold.remaining, hold.episodes, idle.len()), (Duration::from_secs(30), 2, 1));
        assert!(matches!(pool.acquire("b.test", &[t1], true).await, Lease::Held(_)));
    }

    #[tokio::test]
    async fn a_hold_stops_every_job_of_the_hop_and_hands_back_its_idle_sessions() {
        let (pool, t1, now, a) = with_one(1).await;
        let job = waiting(&pool, &t1).await;
        let busy = Reply::parse(421, "4.7.28 rate limited");
        let (hold, idle) = pool.throttle("b.test", &busy, now);
        assert_eq!((hold.remaining, idle.len()), (Duration::from_secs(60), 0));
        let Lease::Held(h) = job.await.unwrap() else { panic!("a waiting job is released with the hold") };
        assert_eq!(h.reply, busy);
        assert!(pool.release(used(a), now).is_some(), "a session of a held hop is closed, not kept");
        assert!(matches!(pool.acquire("b.test", std::slice::from_ref(&t1), true).await, Lease::Held(_)));
        assert!(matches!(pool.acquire("c.test", &[t1], true).await, Lease::Fresh(..)), "other hops go on");
        assert_eq!(pool.counts("b.test"), (0, 0), "the hold is kept with nothing open");
    }
}
