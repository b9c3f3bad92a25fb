//! The imperative shell around sessions: [`listener`] (accept loops, connection limits, graceful
//! shutdown), [`proxy`] (PROXY v2 behind the NLB), [`tls`] (the acceptor), [`connection`] (one
//! client socket driving one [`crate::session::Session`]), [`auth`] (checking an AUTH's
//! credentials under the lockout) and [`health`] (the container health probe that connects to
//! our own listener).

pub mod auth;
pub mod connection;
pub mod health;
pub mod listener;
pub mod proxy;
pub mod tls;
