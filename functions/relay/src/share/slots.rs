//! `RELAY_DESTINATION_CONCURRENCY` across all workers, and a destination's "slow down" hold seen
//! by every worker.
//!
//! A next hop (`route::destination`) has `RELAY_DESTINATION_CONCURRENCY` numbered slots in the
//! partition `dest#<next hop>`: items `slot#0`, `slot#1`, … Before a worker opens a session it
//! reads the partition (one strongly consistent Query) and claims a slot that is free or lapsed
//! (one conditional write; another worker that took it first makes it look again). The session
//! holds its slot for as long as it is open, idle in the pool included; closing it deletes the
//! slot. A worker renews the slots it holds every [`RENEW_EVERY`], so a crashed worker's slots
//! lapse within [`TERM`]. When every slot is held a job waits, looking again with a growing
//! pause ([`pause`]), for at most [`WAIT`]; then it is deferred without being counted as an
//! attempt ([`BUSY_RETRY`]). A session to the hop this process already has open is reused
//! without any of this: the costs are per session opened, not per message.
//!
//! The hold is the item `hold` of the same partition (`until`, the reply, the episode count):
//! written when a destination says "slow down" (unless a longer hold is already there), and
//! read by the same Query that looks for a slot, so a worker that never saw the reply leaves
//! the destination alone too, and adopts the hold for its own jobs ([`Seen::Held`]). A worker
//! that keeps using sessions it already has open looks again at most every [`LOOK_EVERY`]
//! ([`SharedSlots::hold_in_force`]), so it stops within that time of another worker's hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use shared::Reply;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Claim, Row, Table, Taken, now_ms};

/// How long a slot lasts without a renewal.
pub const TERM: Duration = Duration::from_secs(30);
/// How often the slots a worker holds are renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long a job waits for a slot of a hop whose slots are all held.
pub const WAIT: Duration = Duration::from_secs(30);
/// When a job that found no slot within [`WAIT`] is tried again.
pub const BUSY_RETRY: Duration = Duration::from_secs(30);

/// How long what a worker read of a hop's hold is trusted while it reuses open sessions.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// The item of a hold.
pub const HOLD: &str = "hold";

/// The partition of next hop `hop`.
pub fn partition(hop: &str) -> String {
    format!("dest#{}", hop.to_lowercase())
}

/// The item of slot `i`.
pub fn slot(i: usize) -> String {
    format!("slot#{i}")
}

/// A hold in force, as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHold {
    pub remaining: Duration,
    pub reply: Reply,
    pub episodes: u32,
}

/// The hold item for `reply`, in force for `remaining` from `now_ms`.
pub fn hold_row(reply: &Reply, remaining: Duration, episodes: u32, now_ms: i64) -> Row {
    let note = [("reply".to_string(), reply.one_line()), ("episodes".to_string(), episodes.to_string())].into();
    Row { sk: HOLD.into(), owner: None, until_ms: now_ms + remaining.as_millis() as i64, note }
}

/// What a hop's items say at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The destination asked to slow down: no session now.
    Held(SharedHold),
    /// These slots are free or lapsed, in the order to try them (from `start`, so workers
    /// spread over the slots instead of all racing for the first).
    Free(Vec<usize>),
    /// Every one of the `limit` slots is held.
    Full,
}

/// Read a hop's items (`rows`) against a limit of `limit` slots.
pub fn read(rows: &[Row], limit: usize, now_ms: i64, start: usize) -> Seen {
    if let Some(h) = rows.iter().find(|r| r.sk == HOLD && r.live(now_ms)) {
        let reply = h.note.get("reply").map(String::as_str).unwrap_or("421 4.7.0 slow down");
        let (code, text) = reply.split_once(' ').unwrap_or((reply, ""));
        let reply = Reply::parse(code.parse().unwrap_or(421), text);
        let episodes = h.note.get("episodes").and_then(|e| e.parse().ok()).unwrap_or(1);
        return Seen::Held(SharedHold {
            remaining: Duration::from_millis((h.until_ms - now_ms) as u64),
            reply,
            episodes,
        });
    }
    let held = |i: usize| rows.iter().any(|r| r.sk == slot(i) && r.live(now_ms));
    let free: Vec<usize> = (0..limit).map(|k| (start + k) % limit.max(1)).filter(|&i| !held(i)).collect();
    if free.is_empty() { Seen::Full } else { Seen::Free(free) }
}

/// The pause before the `n`-th look at a full hop (1-based): 250 ms doubling to 2 s.
pub fn pause(n: u32) -> Duration {
    Duration::from_millis(250u64 << n.saturating_sub(1).min(3))
}

/// What [`SharedSlots::acquire`] got.
pub enum Acquired {
    /// A slot: keep it with the session, drop it when the session is closed.
    Slot(SlotGuard),
    /// The destination is on hold (another worker was told to slow down).
    Held(SharedHold),
    /// Every slot stayed held for [`WAIT`].
    Busy,
    /// The table could not be reached: open the session under this process's own limit.
    Unshared,
}

/// What a worker last read of a hop's hold: when, and the hold found with the time it ends.
type Looked = (Instant, Option<(Instant, SharedHold)>);

/// The slots this worker holds, by owner token, their releases in flight, and the holds of the
/// hops it looked at (when, and the hold found, with the time it ends).
#[derive(Default)]
struct Books {
    held: Mutex<HashMap<String, Claim>>,
    releases: Mutex<Vec<JoinHandle<()>>>,
    renewing: AtomicBool,
    looked: Mutex<HashMap<String, Looked>>,
    /// The holds this worker wrote (next hop → `until`): its own pool keeps those already.
    written: Mutex<HashMap<String, i64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A slot held by a session. Dropping it releases the slot (in the background; see
/// [`SharedSlots::settle`]).
pub struct SlotGuard {
    owner: String,
    table: Arc<dyn Table>,
    books: Arc<Books>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let Some(claim) = lock(&self.books.held).remove(&self.owner) else { return };
        // Outside a runtime (the process is ending) the slot lapses by itself.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let table = self.table.clone();
        let release = runtime.spawn(async move {
            if let Err(e) = table.release(&claim).await {
                tracing::warn!(error = %e, "destination slot not released; it lapses by itself");
            }
        });
        lock(&self.books.releases).push(release);
    }
}

/// The destination slots of this worker, shared with every other through the table.
#[derive(Clone)]
pub struct SharedSlots {
    table: Arc<dyn Table>,
    limit: usize,
    books: Arc<Books>,
}

impl SharedSlots {
    /// Slots of `limit` per next hop (`RELAY_DESTINATION_CONCURRENCY`).
    pub fn new(table: Arc<dyn Table>, limit: usize) -> Self {
        Self { table, limit: limit.max(1), books: Arc::default() }
    }

    /// A slot of `hop` for a new session, waiting while all are held (at most [`WAIT`]).
    pub async fn acquire(&self, hop: &str) -> Acquired {
        self.start_renewing();
        let pk = partition(hop);
        let start = rand::rng().random_range(0..self.limit);
        let give_up = Instant::now() + WAIT;
        let mut looks = 0;
        loop {
            let rows = match self.table.query(&pk).await {
                Ok(rows) => self.others(hop, rows),
                Err(e) => return self.unshared(hop, &e),
            };
            let seen = read(&rows, self.limit, now_ms(), start);
            self.note(
                hop,
                match &seen {
                    Seen::Held(h) => Some(h.clone()),
                    _ => None,
                },
            );
            match seen {
                Seen::Held(hold) => return Acquired::Held(hold),
                Seen::Full => {}
                Seen::Free(free) => {
                    for i in free {
                        let owner = shared::queue_id::new_queue_id();
                        let until_ms = now_ms() + TERM.as_millis() as i64;
                        let claim = Claim { pk: pk.clone(), sk: slot(i), owner, until_ms, note: Default::default() };
                        match self.table.claim(&claim, now_ms()).await {
                            Ok(Taken::Yes) => return Acquired::Slot(self.keep(claim)),
                            Ok(Taken::No(_)) => {} // another worker was quicker: the next one
                            Err(e) => return self.unshared(hop, &e),
                        }
                    }
                }
            }
            looks += 1;
            let wait = pause(looks);
            if Instant::now() + wait > give_up {
                return Acquired::Busy;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The hold of `hop` another worker wrote, if one is in force: what was read within
    /// [`LOOK_EVERY`], else one Query (none when the table cannot be reached).
    pub async fn hold_in_force(&self, hop: &str) -> Option<SharedHold> {
        let cached = lock(&self.books.looked).get(hop).cloned();
        let hold = match cached {
            Some((at, hold)) if at.elapsed() < LOOK_EVERY => hold,
            _ => {
                let rows = self.others(hop, self.table.query(&partition(hop)).await.ok()?);
                let hold = match read(&rows, self.limit, now_ms(), 0) {
                    Seen::Held(h) => Some(h),
                    _ => None,
                };
                self.note(hop, hold.clone());
                hold.map(|h| (Instant::now() + h.remaining, h))
            }
        };
        let (until, h) = hold?;
        let remaining = until.checked_duration_since(Instant::now()).filter(|r| !r.is_zero())?;
        Some(SharedHold { remaining, ..h })
    }

    /// `rows` without the hold this worker wrote itself (its pool holds the hop already, until
    /// a moment earlier: the write came after).
    fn others(&self, hop: &str, rows: Vec<Row>) -> Vec<Row> {
        let ours = lock(&self.books.written).get(hop).copied();
        rows.into_iter().filter(|r| !(r.sk == HOLD && Some(r.until_ms) == ours)).collect()
    }

    /// Remember what was read of `hop`'s hold now.
    fn note(&self, hop: &str, hold: Option<SharedHold>) {
        let entry = (Instant::now(), hold.map(|h| (Instant::now() + h.remaining, h)));
        lock(&self.books.looked).insert(hop.to_string(), entry);
    }

    /// Tell every worker that `hop` asked to slow down, for `remaining` from now.
    pub async fn hold(&self, hop: &str, reply: &Reply, remaining: Duration, episodes: u32) {
        let row = hold_row(reply, remaining, episodes, now_ms());
        lock(&self.books.written).insert(hop.to_string(), row.until_ms);
        if let Err(e) = self.table.raise(&partition(hop), &row).await {
            tracing::warn!(next_hop = %hop, error = %e, "state table unreachable: the hold is this worker's only");
        }
    }

    /// Wait for the releases of the slots dropped so far (before a Lambda invocation returns:
    /// the process may be frozen right after).
    pub async fn settle(&self) {
        let releases: Vec<_> = lock(&self.books.releases).drain(..).collect();
        futures::future::join_all(releases).await;
    }

    /// Slots this worker holds now.
    pub fn held(&self) -> usize {
        lock(&self.books.held).len()
    }

    fn keep(&self, claim: Claim) -> SlotGuard {
        let owner = claim.owner.clone();
        lock(&self.books.held).insert(owner.clone(), claim);
        SlotGuard { owner, table: self.table.clone(), books: self.books.clone() }
    }

    fn unshared(&self, hop: &str, e: &super::TableError) -> Acquired {
        tracing::warn!(next_hop = %hop, error = %e,
            "state table unreachable: session opened under this worker's own limit");
        Acquired::Unshared
    }

    /// Renew the held slots every [`RENEW_EVERY`] (one task per worker, from its first slot on).
    fn start_renewing(&self) {
        if self.books.renewing.swap(true, Ordering::SeqCst) {
            return;
        }
        let (table, books) = (self.table.clone(), self.books.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let claims: Vec<Claim> = lock(&books.held).values().cloned().collect();
                for mut claim in claims {
                    claim.until_ms = now_ms() + TERM.as_millis() as i64;
                    match table.renew(&claim).await {
                        Ok(true) => {
                            if let Some(c) = lock(&books.held).get_mut(&claim.owner) {
                                c.until_ms = claim.until_ms;
                            }
                        }
                        Ok(false) => tracing::warn!(slot = %claim.sk, partition = %claim.pk,
                            "destination slot lapsed and was taken by another worker"),
                        Err(e) => tracing::warn!(error = %e, "destination slot not renewed"),
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::memory::MemoryTable;

    fn held(sk: &str, until_ms: i64) -> Row {
        Row { sk: sk.into(), owner: Some("w".into()), until_ms, note: Default::default() }
    }

    #[test]
    fn reading_a_hops_items() {
        let now = 10_000;
        let cases: Vec<(Vec<Row>, usize, usize, Seen)> = vec![
            (vec![], 3, 0, Seen::Free(vec![0, 1, 2])),
            (vec![], 3, 2, Seen::Free(vec![2, 0, 1])),
            (vec![held("slot#1", now + 1)], 3, 0, Seen::Free(vec![0, 2])),
            (vec![held("slot#1", now)], 3, 1, Seen::Free(vec![1, 2, 0])), // lapsed at `now`
            (vec![held("slot#0", now + 1), held("slot#1", now + 1)], 2, 1, Seen::Full),
            // A slot beyond this worker's limit (another worker's bigger setting) is not ours to use.
            (vec![held("slot#0", now + 1), held("slot#5", now + 1)], 1, 0, Seen::Full),
        ];
        for (rows, limit, start, want) in cases {
            assert_eq!(read(&rows, limit, now, start), want, "{rows:?} limit {limit}");
        }
        let reply = Reply::parse(421, "4.7.28 rate limited");
        let hold = hold_row(&reply, Duration::from_secs(60), 2, now);
        assert_eq!(
            read(&[held("slot#0", now + 1), hold.clone()], 2, now + 20_000, 0),
            Seen::Held(SharedHold { remaining: Duration::from_secs(40), reply, episodes: 2 })
        );
        assert_eq!(read(&[hold], 2, now + 60_000, 0), Seen::Free(vec![0, 1]), "the hold is over");
    }

    #[test]
    fn pauses_grow_to_two_seconds() {
        let ms: Vec<u128> = (1..=6).map(|n| pause(n).as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 2000, 2000]);
    }

    #[tokio::test]
    async fn two_workers_share_the_limit_and_a_dropped_slot_frees_a_place() {
        let table = Arc::new(MemoryTable::default());
        let (a, b) = (SharedSlots::new(table.clone(), 2), SharedSlots::new(table.clone(), 2));
        let Acquired::Slot(a1) = a.acquire("b.test").await else { panic!() };
        let Acquired::Slot(_b1) = b.acquire("b.test").await else { panic!() };
        assert_eq!(table.calls(), ["query", "claim", "query", "claim"], "a free hop: one read, one write");
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { matches!(b.acquire("b.test").await, Acquired::Slot(_)) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a third session waits at a limit of 2 across workers");
        drop(a1);
        a.settle().await;
        assert!(waiting.await.unwrap(), "the released slot went to the waiting job");
        assert!(matches!(a.acquire("c.test").await, Acquired::Slot(_)), "another hop has its own slots");
    }

    #[tokio::test]
    async fn a_hold_written_by_one_worker_stops_the_other_and_an_outage_unshares() {
        let table = Arc::new(MemoryTable::default());
        let (a, b) = (SharedSlots::new(table.clone(), 2), SharedSlots::new(table.clone(), 2));
        a.hold("b.test", &Reply::parse(421, "4.7.28 rate limited"), Duration::from_secs(60), 1).await;
        assert!(matches!(a.acquire("b.test").await, Acquired::Slot(_)), "its own hold is its pool's business");
        let Acquired::Held(h) = b.acquire("B.test").await else { panic!("the other worker sees the hold") };
        assert_eq!((h.reply.code, h.episodes), (421, 1));
        assert!(h.remaining > Duration::from_secs(55));
        a.hold("b.test", &Reply::parse(421, "4.7.0 busy"), Duration::from_secs(10), 1).await;
        let Acquired::Held(h) = b.acquire("b.test").await else { panic!() };
        assert_eq!(h.reply.status.as_deref(), Some("4.7.28"), "a shorter hold does not replace a longer one");
        table.fail(true);
        assert!(matches!(b.acquire("d.test").await, Acquired::Unshared));
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_reusing_its_sessions_looks_for_holds_every_few_seconds() {
        let table = Arc::new(MemoryTable::default());
        let (a, b) = (SharedSlots::new(table.clone(), 2), SharedSlots::new(table.clone(), 2));
        assert_eq!(b.hold_in_force("b.test").await, None);
        a.hold("b.test", &Reply::parse(421, "4.7.28 rate limited"), Duration::from_secs(60), 1).await;
        assert_eq!(b.hold_in_force("b.test").await, None, "what was read a moment ago stands");
        tokio::time::advance(LOOK_EVERY).await;
        let h = b.hold_in_force("b.test").await.expect("looked again: held");
        assert_eq!(h.reply.code, 421);
        let queries = table.calls().iter().filter(|c| **c == "query").count();
        assert_eq!(queries, 2);
        assert!(b.hold_in_force("b.test").await.is_some(), "the hold read is kept");
        assert_eq!(table.calls().iter().filter(|c| **c == "query").count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_finds_no_slot_for_the_wait_is_busy() {
        let table = Arc::new(MemoryTable::default());
        let (a, b) = (SharedSlots::new(table.clone(), 1), SharedSlots::new(table.clone(), 1));
        let Acquired::Slot(_kept) = a.acquire("b.test").await else { panic!() };
        let t0 = Instant::now();
        assert!(matches!(b.acquire("b.test").await, Acquired::Busy));
        let waited = t0.elapsed();
        assert!(waited <= WAIT && waited >= WAIT - Duration::from_secs(2), "{waited:?}");
        let queries = table.calls().iter().filter(|c| **c == "query").count();
        assert!((15..=20).contains(&queries), "about one look per 2 s: {queries}");
    }
}
