//! The handler's calls to the suppression list (`STATE_TABLE`): the lookup before a job is
//! attempted, and the additions after a remote said a mailbox does not exist. What they mean is
//! decided in [`crate::decide::suppress`].
//!
//! Neither ever fails a job. A lookup that fails is logged and the job is attempted as if nobody
//! were listed (fail open: the table being unreachable must not stop the mail); an addition that
//! fails is logged with the recipient, so an operator can add it by hand.

use shared::Job;
use shared::suppression::{Entry, SuppressionList};

/// The entries of `job`'s pending recipients: one request (BatchGetItem) per 100 of them.
pub async fn listed(job: &Job, list: Option<&dyn SuppressionList>) -> Vec<Entry> {
    let Some(list) = list else { return Vec::new() };
    let pending: Vec<&str> = job.pending().map(|r| r.address.as_str()).collect();
    match list.lookup(&pending).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(queue_id = %job.queue_id, error = %e, recipients = pending.len(),
                "suppression list not read; attempting every recipient");
            Vec::new()
        }
    }
}

/// Put `entries` on the list (an address listed already keeps its first entry).
pub async fn add(job: &Job, entries: Vec<Entry>, list: Option<&dyn SuppressionList>) {
    let Some(list) = list else { return };
    for e in entries {
        match list.add(&e).await {
            Ok(added) => tracing::info!(queue_id = %job.queue_id, recipient = %e.address, reason = e.reason.as_str(),
                diagnostic = %e.diagnostic, already_listed = !added, "recipient added to the suppression list"),
            Err(err) => tracing::error!(queue_id = %job.queue_id, recipient = %e.address, error = %err,
                "suppression not recorded"),
        }
    }
}
