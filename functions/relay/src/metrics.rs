//! The relay's metrics (names are a contract) and what each counts, derived from the delivery
//! events of a batch so that a metric and an event never disagree:
//!
//! | metric | unit | counts |
//! |---|---|---|
//! | `Sent` | Count | recipients a next hop accepted (one per `Delivery` event) |
//! | `Deferred` | Count | recipients left for a later attempt (one per `DeliveryDelay` event) |
//! | `Bounced` | Count | recipients given up on (one per `Bounce` event), DSNs included |
//! | `DeliveryDelay` | Seconds | for each sent recipient: accepted by the ingress → sent |
//! | `Suppressed` | Count | recipients not attempted because they are on the suppression list (each also a `Bounced`) |
//!
//! DSNs are mail the relay delivers like any other, so their recipients count too. Recipients
//! skipped because a delivery record shows them done count nothing: they were counted when they
//! were sent.

use shared::metrics::{Metric, Metrics};

use crate::decide::events::{Event, ON_SUPPRESSION_LIST};

pub const SENT: &str = "Sent";
pub const DEFERRED: &str = "Deferred";
pub const BOUNCED: &str = "Bounced";
pub const DELIVERY_DELAY: &str = "DeliveryDelay";
pub const SUPPRESSED: &str = "Suppressed";

/// Every metric the relay emits, in the order of its EMF lines.
pub static METRICS: &[Metric] = &[
    Metric::counter(SENT),
    Metric::counter(DEFERRED),
    Metric::counter(BOUNCED),
    Metric::seconds(DELIVERY_DELAY),
    Metric::counter(SUPPRESSED),
];

/// The `Service` dimension of the relay's metrics.
pub const SERVICE: &str = "relay";

/// What a batch's events add to the metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub sent: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub suppressed: u64,
    /// Seconds from acceptance to delivery, one per sent recipient.
    pub delays: Vec<f64>,
}

/// Count `events` (pure).
pub fn tally(events: &[Event]) -> Tally {
    let mut t = Tally::default();
    for e in events {
        match e {
            Event::Delivery { delivery, .. } => {
                t.sent += 1;
                t.delays.push(delivery.processing_time_millis as f64 / 1000.0);
            }
            Event::DeliveryDelay { .. } => t.deferred += 1,
            Event::Bounce { bounce, .. } => {
                t.bounced += 1;
                t.suppressed += u64::from(bounce.bounce_sub_type == ON_SUPPRESSION_LIST);
            }
            // The ingress reports complaints; the relay makes none.
            Event::Complaint { .. } => {}
        }
    }
    t
}

/// Add a batch's events to `metrics`.
pub fn record(metrics: &Metrics, events: &[Event]) {
    let t = tally(events);
    metrics.count(SENT, t.sent);
    metrics.count(DEFERRED, t.deferred);
    metrics.count(BOUNCED, t.bounced);
    metrics.count(SUPPRESSED, t.suppressed);
    for d in t.delays {
        metrics.observe(DELIVERY_DELAY, d);
    }
}
