//! Stage 2 of a job: handing the message to the next hop over SMTP. [`Transport`] is the edge the
//! handler sees (a fake in its tests); [`client`] is the SMTP client behind it, with its protocol
//! bytes ([`wire`]), TLS connectors ([`tls`]) and the 8-bit to 7-bit conversion for servers
//! without 8BITMIME ([`downgrade`]).

use async_trait::async_trait;
use shared::Job;

use crate::decide::outcome::Attempt;
use crate::route::Target;

pub mod client;
pub mod downgrade;
pub mod tls;
pub mod wire;

pub use client::SmtpTransport;

/// Delivery of one job's pending recipients to the first target that takes it.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn deliver(&self, targets: &[Target], job: &Job, message: &[u8]) -> Attempt;
}
