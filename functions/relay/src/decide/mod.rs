//! Stage 3 of a job: what follows an attempt, decided without I/O. [`outcome`] is the vocabulary
//! every stage reports in (a verdict per recipient); [`plan`] turns an attempt into actions
//! (records, a retry job, reports); [`backoff`] times the retry; [`dsn`] writes the RFC 3464
//! report a sender gets.

pub mod backoff;
pub mod dsn;
pub mod outcome;
pub mod plan;
