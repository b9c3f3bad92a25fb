//! The SMTP ingress: a long-lived server that accepts mail for the relay. A message goes through
//! the folders in order:
//!
//! * [`server`] — the sockets: listeners, connection limits and shutdown, PROXY v2, TLS, the
//!   connection shell around a session, and the container's health check (`ingress health`);
//! * [`session`] — the protocol as a pure state machine (bytes in, actions out): command
//!   handlers, DATA/BDAT rules, the trace field, the replies, the memory budget;
//! * [`policy`] — who may send what to whom: relay policy, AUTH credentials and sender lists,
//!   the recipient table, the rate limit, and the files re-read on SIGHUP;
//! * [`judge`] — end-of-DATA checks of untrusted mail (SPF, DKIM, DMARC): refuse, or edit
//!   the header section (one honest `Authentication-Results`) before the spool;
//! * [`screen`] — the connect-time checks the listener runs before the greeting on untrusted
//!   clients: the pregreet test and the DNS blocklists;
//! * [`rspamd`] — the spam filter's HTTP client and the meaning of its answers, a check of the
//!   end-of-DATA judgement;
//! * [`feedback`] — reports to the feedback domain (asynchronous bounces, ARF complaints) in
//!   place of the judge and the spool: events, suppressions, and the report forwarded to the
//!   sender of the message it is about;
//! * [`spool`] — the durable hand-off to S3 (single PUT or multipart) and SQS, then `250`;
//! * [`config`] reads the ingress's settings; [`metrics`] counts Accepted, Rejected,
//!   TempFailed, Blocklisted and the reports' AsyncBounces and Complaints; [`alloc`] tunes the allocator so streamed parts' memory goes back to the system.

pub mod alloc;
pub mod config;
pub mod feedback;
pub mod judge;
pub mod metrics;
pub mod policy;
pub mod rspamd;
pub mod screen;
pub mod server;
pub mod session;
pub mod spool;
