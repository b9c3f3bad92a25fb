//! Stage 3 of a job: what follows an attempt, decided without I/O. [`outcome`] is the vocabulary
//! every stage reports in (a verdict per recipient); [`plan`] turns an attempt into actions
//! (records, a retry job, reports); [`backoff`] times the retry; [`dsn`] writes the RFC 3464
//! report a sender gets; [`events`] describes each recipient's outcome for the events queue.

pub mod backoff;
pub mod dsn;
pub mod events;
pub mod outcome;
pub mod plan;
