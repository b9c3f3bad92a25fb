//! The end of a message, in the shell: judged (untrusted mail), then stored and queued — or
//! refused, leaving nothing behind. This is where the judge's decision meets the spool.
//!
//! A message that fitted in a part is judged in memory, its header section edited in place,
//! and stored with one PUT. A streamed one is already mostly in S3: its upload is completed,
//! the judge reads the object back, and then it is withdrawn (refused), rewritten with its new
//! header section, or left as it is, before its jobs are queued. Either way `250` comes only
//! after the jobs, and a refusal never leaves an object, upload or job. The rewrite's first
//! part is held against the memory budget (`451 4.3.1` when it is spent), like every part.

use shared::Reply;

use crate::judge::{Judged, Judgement, Source};
use crate::server::connection::Deps;
use crate::session::Incoming;
use crate::session::replies;
use crate::spool::MIN_PART;
use crate::spool::upload::Content;

/// How a message ended.
#[derive(Debug)]
pub enum Ending {
    /// Stored and queued (`Ok`), or not (`Err`: the client gets `451` and sends it again).
    Stored(Result<(), String>),
    /// Refused by the judge (or unjudgeable): this reply, and nothing stored.
    Refused(Reply),
}

/// Judge, store and queue `msg`.
pub async fn accept(deps: &Deps, mut msg: Incoming) -> Ending {
    if msg.env.trusted || deps.judge.is_off() {
        return Ending::Stored(deps.spool.store(msg).await);
    }
    if let Content::Whole(bytes) = &mut msg.content {
        let judged = Judged { env: &msg.env, client: msg.client, helo: &msg.helo, source: Source::Memory(bytes) };
        match deps.judge.judge(&judged).await {
            Judgement::Refuse(r) => return Ending::Refused(r),
            Judgement::Accept(None) => {}
            Judgement::Accept(Some(change)) => {
                bytes.splice(..change.old_len, change.new);
                msg.size = bytes.len() as u64;
            }
        }
        return Ending::Stored(deps.spool.store(msg).await);
    }
    // Streamed: stored first, judged from the object, then queued.
    let content = msg.take_content();
    let mut stored = match deps.spool.persist(&msg.env, content, msg.size).await {
        Ok(s) => s,
        Err(e) => return Ending::Stored(Err(e)),
    };
    let judged = Judged {
        env: &msg.env,
        client: msg.client,
        helo: &msg.helo,
        source: Source::Stored { spool: &*deps.spool, object: &stored },
    };
    let judgement = deps.judge.judge(&judged).await;
    match judgement {
        Judgement::Refuse(r) => {
            deps.spool.withdraw(stored).await;
            return Ending::Refused(r);
        }
        Judgement::Accept(None) => {}
        Judgement::Accept(Some(change)) => {
            if !msg.reservation.ensure(change.new.len() as u64 + MIN_PART) {
                deps.spool.withdraw(stored).await;
                return Ending::Refused(replies::memory_full());
            }
            stored = match deps.spool.replace_header(&msg.env, stored.clone(), change).await {
                Ok(s) => s,
                Err(e) => {
                    deps.spool.withdraw(stored).await;
                    return Ending::Stored(Err(e));
                }
            };
        }
    }
    msg.size = stored.size;
    Ending::Stored(deps.spool.enqueue(&msg, stored).await)
}
