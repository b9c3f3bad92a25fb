//! Stage 3 of a job: what follows an attempt, decided without I/O. Every stage reports in the
//! verdicts of [`crate::vocab`]; [`plan`] turns an attempt into actions
//! (a retry job, reports, log lines); [`backoff`] times the retry and store writes; [`dsn`]
//! writes the RFC 3464 report a sender gets; [`events`] describes each recipient's outcome for
//! the events queue; [`fence`] decides from the job's state object
//! whether a job may run at all, and [`record`] what state it leaves behind; [`suppress`] keeps
//! listed recipients out of an attempt and names the failures that list a recipient.

pub mod backoff;
pub mod dsn;
pub mod events;
pub mod fence;
pub mod plan;
pub mod record;
pub mod suppress;
