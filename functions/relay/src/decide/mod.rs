//! Stage 3 of a job: what follows an attempt, decided without I/O. Every stage reports in the
//! verdicts of [`crate::vocab`]; [`plan`] turns an attempt into actions
//! (a retry job, reports, log lines); [`backoff`] times the retry and store writes; [`dsn`]
//! writes the RFC 3464 report a sender gets; [`events`] describes each recipient's outcome for
//! the events queue; [`fence`] decides from the job's state object
//! whether a job may run at all, and [`record`] what state it leaves behind.

pub mod backoff;
pub mod dsn;
pub mod events;
pub mod fence;
pub mod plan;
pub mod record;
