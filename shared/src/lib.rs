//! The contract between the ingress and the relay.
//!
//! Everything both sides must agree on lives here and nowhere else: the relay job that travels
//! through SQS ([`job`]), the per-job state the relay leaves in S3 ([`state`]), the DynamoDB state table's conventions ([`table`]), the envelope as
//! message-object metadata ([`meta`]), where objects live in the spool bucket ([`keys`]), how configuration is
//! read from the environment ([`config`]), how AWS clients are built ([`aws`]), SMTP replies
//! ([`reply`]), signing keys and the fields signatures cover ([`signing`]), queue ids ([`queue_id`]), log set-up ([`logging`]) and the embedded-format metrics
//! both programs print ([`metrics`]).

pub mod aws;
pub mod config;
pub mod job;
pub mod keys;
pub mod logging;
pub mod meta;
pub mod metrics;
pub mod queue_id;
pub mod reply;
pub mod signing;
pub mod state;
pub mod table;

pub use job::{BodyType, DsnParams, Job, Notify, RcptState, Recipient, Ret};
pub use reply::Reply;
