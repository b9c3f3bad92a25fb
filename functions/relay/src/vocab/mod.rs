//! The words every stage of a job speaks, ahead of the stages themselves: [`outcome`] (what an
//! attempt did to each recipient: [`Verdict`], [`Class`], [`Remote`], [`Attempt`]) and [`tls`]
//! (what a target's TLS must prove: [`TlsRequirement`]). Route, deliver and decide all report in
//! these types, so they sit here rather than in any one stage, and a stage never reaches forward
//! into a later one for them.

pub mod outcome;
pub mod tls;

pub use outcome::{Attempt, Class, Remote, Verdict};
pub use tls::TlsRequirement;
