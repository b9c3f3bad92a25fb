//! The imperative shell around sessions: [`listener`] (accept loops, connection limits, graceful
//! shutdown), [`proxy`] (PROXY v2 behind the NLB), [`tls`] (the acceptor), [`connection`] (one
//! client socket driving one [`crate::session::Session`]), [`accept`] (the end of a message:
//! judged, stored and queued, or refused), [`auth`] (checking an AUTH's credentials under the
//! lockout) and [`health`] (the container health probe that connects to our own listener).

pub mod accept;
pub mod auth;
pub mod connection;
pub mod health;
pub mod listener;
pub mod proxy;
pub mod tls;
