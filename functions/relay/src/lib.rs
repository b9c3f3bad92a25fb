//! The relay: consumes jobs from SQS, delivers them over SMTP to MX hosts or a smarthost,
//! retries by delayed re-enqueue and bounces with RFC 3464 reports.
//!
//! Functional core, imperative shell: [`plan`], [`dsn`], [`wire`], [`backoff`] and the
//! ordering in [`mx`] are pure and unit-tested; [`handler`] wires them to the edges —
//! [`store`] (S3, SQS), [`mx`]'s resolver, [`smtp`]'s transport — through traits.

pub mod backoff;
pub mod downgrade;
pub mod dsn;
pub mod handler;
pub mod memory;
pub mod mx;
pub mod outcome;
pub mod plan;
pub mod poll;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod wire;

#[cfg(test)]
mod testkit;
