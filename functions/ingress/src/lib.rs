//! The SMTP ingress: a long-lived server that accepts mail for the relay.
//!
//! * [`session`] + [`commands`] — the protocol as a pure state machine (bytes in, actions out);
//! * [`body`], [`header`], [`policy`], [`received`], [`replies`], [`budget`] — the rules it
//!   applies;
//! * [`upload`] — what the session and the spool exchange about a message's bytes (whole, or
//!   streamed as the parts of a multipart upload);
//! * [`spool`] — durable hand-off to S3 and SQS behind a small trait;
//! * [`metrics`] — what the ingress counts (Accepted, Rejected, TempFailed); [`health`] — the
//!   container's health check (`ingress health`);
//! * [`connection`], [`listener`], [`tls`], [`auth`] — the sockets and everything else with I/O;
//! * [`alloc`] — allocator tuning, so streamed parts' memory goes back to the system;
//! * [`tables`] — the AUTH file and recipient table, re-read on SIGHUP.

pub mod alloc;
pub mod auth;
pub mod body;
pub mod budget;
pub mod commands;
pub mod config;
pub mod connection;
pub mod header;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod received;
pub mod replies;
pub mod session;
pub mod spool;
pub mod tables;
pub mod tls;
pub mod upload;
