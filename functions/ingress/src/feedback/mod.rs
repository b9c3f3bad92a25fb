//! The feedback stage: what happens to a report that came to the feedback domain
//! (`FEEDBACK_DOMAIN`) once its data is in — instead of the judge and the spool, which other mail
//! goes through. The RCPT-time part (which addresses exist there, the rate and size limits) is
//! `policy::feedback`; a report always arrives whole (it is smaller than a part).
//!
//! [`Feedback::receive`]: read the report ([`report`], over [`dsn`] and mail-auth's ARF parser),
//! name the message of ours it is about and decide what follows ([`decide`], pure), look that
//! message up ([`origin`]), then carry it out in an order that loses nothing acknowledged:
//!
//! 1. suppressions (conditional puts: a report sent again adds nothing twice);
//! 2. the forward — the report itself, re-addressed from `<>` to our message's envelope sender
//!    and queued through the spool as a job of its own (one PUT, one SendMessage);
//! 3. only then `250`, then the events (best effort, like every event) and the metrics
//!    `AsyncBounces` and `Complaints`.
//!
//! A failure in 1 or 2 answers `451` and the reporting server sends it again. A report that names
//! no message of ours, or one no longer known, is accepted and dropped (logged): refusing it would
//! only make a bounce of a bounce.

use std::sync::Arc;

use shared::Recipient;
use shared::events::EventSink;
use shared::feedback::ReturnPath;
use shared::metrics::Metrics;
use shared::suppression::{AutoSuppress, SuppressionList};

use crate::session::{Envelope, Incoming};
use crate::spool::Spool;
use crate::spool::upload::Content;

pub mod decide;
pub mod dsn;
pub mod origin;
pub mod report;
#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;

use origin::Origins;

/// Everything the stage talks to.
pub struct Feedback {
    pub return_path: ReturnPath,
    pub origins: Box<dyn Origins>,
    pub list: Box<dyn SuppressionList>,
    /// `RELAY_SUPPRESSION`.
    pub auto: AutoSuppress,
    /// `RELAY_EVENTS_QUEUE_URL`'s queue, when set.
    pub events: Option<Box<dyn EventSink>>,
    pub spool: Arc<dyn Spool>,
    pub metrics: Arc<Metrics>,
}

impl Feedback {
    /// The message is a report to the feedback domain (its one recipient is there).
    pub fn claims(&self, env: &Envelope) -> bool {
        env.recipients.first().is_some_and(|r| self.return_path.in_domain(&r.address))
    }

    /// Carry out what the report `msg` leads to; `Ok` means `250` (see the module doc).
    pub async fn receive(&self, msg: Incoming) -> Result<(), String> {
        let report_id = msg.env.queue_id.clone();
        let bytes = match &msg.content {
            Content::Whole(b) => b,
            Content::Multipart { upload, .. } => {
                self.spool.abort(upload.clone()).await;
                return Err("a report larger than one part (the size limit should have refused it)".into());
            }
        };
        let to = msg.env.recipients.first().map(|r| r.address.clone()).unwrap_or_default();
        let read = report::read(bytes);
        let kind = match &read.kind {
            report::Kind::Delivery(_) => "dsn",
            report::Kind::Arf(_) => "arf",
            report::Kind::Other => "other",
        };
        let Some(queue_id) = decide::reference(&to, &read, &self.return_path) else {
            tracing::warn!(event = "feedback", queue_id = %report_id, to = %to, kind, "report names no message of ours; dropped");
            return Ok(());
        };
        let Some(origin) = self.origins.find(&queue_id).await? else {
            tracing::warn!(event = "feedback", queue_id = %report_id, about = %queue_id, kind,
                "report about a message no longer known; dropped");
            return Ok(());
        };
        let now = chrono::Utc::now().timestamp();
        let ctx = decide::Context {
            queue_id: &queue_id,
            origin: &origin,
            report_id: &report_id,
            now,
            auto: self.auto,
            return_path: &self.return_path,
        };
        let effects = decide::effects(&read, &ctx);
        for stranger in &effects.strangers {
            tracing::warn!(event = "feedback", queue_id = %report_id, about = %queue_id, recipient = %stranger,
                "report names an address that is not a recipient of the message; ignored");
        }
        for e in &effects.suppress {
            let added = self.list.add(e).await.map_err(|e| e.to_string())?;
            tracing::info!(event = "suppressed", queue_id = %report_id, about = %queue_id, recipient = %e.address,
                reason = e.reason.as_str(), diagnostic = %e.diagnostic, already_listed = !added,
                "recipient added to the suppression list");
        }
        if let Some(sender) = &effects.forward_to {
            self.spool.store(forward(msg, sender)).await?;
        }
        tracing::info!(event = "feedback", queue_id = %report_id, about = %queue_id, kind,
            bounced = effects.bounced, complaints = effects.complaints, suppressed = effects.suppress.len(),
            forwarded_to = effects.forward_to.as_deref().unwrap_or(""), "report processed");
        self.metrics.count(crate::metrics::ASYNC_BOUNCES, effects.bounced);
        self.metrics.count(crate::metrics::COMPLAINTS, effects.complaints);
        if let (Some(sink), false) = (&self.events, effects.events.is_empty()) {
            sink.publish(effects.events).await;
        }
        Ok(())
    }
}

/// The report re-addressed to our message's envelope sender, from `<>`, under its own queue id:
/// not mail of our own (it is not signed, and keeps `<>`).
fn forward(msg: Incoming, sender: &str) -> Incoming {
    let env = Envelope {
        sender: String::new(),
        recipients: vec![Recipient::new(sender)],
        dsn: Default::default(),
        smtputf8: msg.env.smtputf8 || !sender.is_ascii(),
        trusted: false,
        ..msg.env
    };
    Incoming { env, ..msg }
}
