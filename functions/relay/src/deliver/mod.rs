//! Stage 2 of a job: handing the message to the next hop over SMTP. [`Transport`] is the edge the
//! handler sees (a fake in its tests); [`client`] is the SMTP client behind it, with its protocol
//! bytes ([`wire`]), TLS connectors ([`tls`]) and the 8-bit to 7-bit conversion for servers
//! without 8BITMIME ([`downgrade`]). [`transport`] puts jobs on sessions shared per next hop,
//! kept by [`pool`]; [`throttle`] knows the replies that mean "slow down"; [`feedback`] gives
//! mail of our own its return path and reference header in the feedback domain; [`credentials`]
//! keeps the smarthost password (and reads a rotated one).

use async_trait::async_trait;
use shared::Job;

use crate::route::Target;
use crate::vocab::Attempt;

pub mod client;
pub mod credentials;
pub mod downgrade;
pub mod feedback;
pub mod pool;
pub mod throttle;
pub mod tls;
pub mod transport;
pub mod wire;

pub use client::SmtpTransport;

/// Delivery of one job's pending recipients to the first target that takes it.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn deliver(&self, targets: &[Target], job: &Job, message: &[u8]) -> Attempt;

    /// The handler is done with a batch: a transport that keeps sessions open between jobs
    /// closes them now, or (`relay poll`) lets them wait briefly for the next batch.
    async fn end_batch(&self) {}

    /// The process is stopping: close whatever is still open.
    async fn shutdown(&self) {}
}
