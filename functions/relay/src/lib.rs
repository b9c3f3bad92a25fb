//! The relay: consumes jobs from SQS, delivers them over SMTP to MX hosts or a smarthost,
//! retries by delayed re-enqueue and bounces with RFC 3464 reports.
//!
//! Every stage speaks the vocabulary of [`vocab`] (verdicts, the TLS requirement). A job goes
//! through the stages in folder order: [`route`] (where to), [`deliver`] (the SMTP
//! client), [`decide`] (what follows, pure), and [`handler`] carries out the decision against the
//! [`store`] edges (S3, SQS). [`poll`] drives the same handler as a long-poll consumer; both it
//! and the Lambda entry point keep a batch invisible while it runs ([`heartbeat`]); [`config`]
//! reads the relay's settings; [`metrics`] names what the relay counts; [`suppression`] calls the
//! suppression list around a job. What every worker shares through the state table — delivery
//! leases, destination slots and holds — is in [`share`].
//!
//! Functional core, imperative shell: [`decide`], the wire format in [`deliver::wire`], the MX
//! ordering in [`route::mx`] and the loop rules in [`route::loops`] are pure and unit-tested; the
//! handler reaches DNS, SMTP peers, S3 and SQS only through traits.

pub mod config;
pub mod decide;
pub mod deliver;
pub mod dkim;
pub mod handler;
pub mod heartbeat;
pub mod metrics;
pub mod poll;
pub mod route;
pub mod share;
pub mod store;
pub mod suppression;
pub mod vocab;

#[cfg(test)]
mod testkit;
