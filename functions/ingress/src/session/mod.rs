//! The SMTP session as a pure state machine: bytes in, [`Action`]s out.
//!
//! The connection shell feeds whatever it read with [`Session::receive`] and carries out the
//! actions in order: write a reply, upgrade to TLS, check a password, open an upload, upload a
//! part, abort an upload, store a message, close. Actions that need I/O put the session in a
//! waiting mode until the shell reports back ([`Session::tls_started`],
//! [`Session::auth_result`], [`Session::upload_begun`], [`Session::part_uploaded`],
//! [`Session::stored`]); input that arrived meanwhile (PIPELINING) stays buffered and is
//! processed afterwards, in order, so replies never overtake each other. When the connection
//! ends the shell calls [`Session::connection_lost`] and aborts the uploads it names.
//!
//! The command handlers are in [`commands`]; receiving a message (DATA, BDAT, the parts of a
//! large one) is in [`message`], over the DATA/BDAT rules of [`body`] and [`header`] (hop
//! count, the bounded header section); [`received`] writes our trace field, [`replies`] holds
//! every reply, and [`budget`] is the memory budget all sessions share; `feedback` keeps a
//! report to the feedback domain in a transaction of its own.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use shared::{BodyType, DsnParams, Recipient, Reply};
use smtp_proto::request::receiver::DataReceiver;

use crate::metrics::Tally;
use crate::policy::Policy;
use crate::policy::feedback::Intake;
use crate::policy::rate::RateLimit;
use crate::policy::senders::SenderList;
use crate::policy::tables::{LiveTables, Tables};
use crate::spool::upload::{Content, Part, PartTag, Upload};
use body::Body;
use budget::{MemoryBudget, Reservation};

pub mod body;
pub mod budget;
pub mod commands;
mod feedback;
pub mod header;
mod message;
pub mod received;
pub mod replies;

/// Longest command line accepted (Postfix's `line_length_limit`).
pub const MAX_LINE: usize = 2048;
pub use header::MAX_HOPS;

/// Which listener accepted the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 25: mail from anyone, to our relay domains.
    Mta,
    /// Port 587: STARTTLS and AUTH required before MAIL.
    Submission,
    /// Port 465: TLS from the first byte, AUTH required before MAIL.
    ImplicitTls,
}

/// Settings shared by every session of a listener.
#[derive(Debug)]
pub struct SessionConfig {
    pub hostname: String,
    pub policy: Policy,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_errors: u32,
    /// A certificate is configured: STARTTLS can be offered.
    pub tls_available: bool,
    /// An AUTH file is configured: AUTH can be offered (under TLS).
    pub auth_available: bool,
    pub budget: Arc<MemoryBudget>,
    /// Bytes per multipart-upload part; a message that fits in one is stored with one PUT.
    pub part_size: usize,
    /// The AUTH file and recipient table in force; each session takes a snapshot at its start.
    pub tables: Arc<LiveTables>,
    /// `INGRESS_RATE_LIMIT`, checked at MAIL.
    pub rate_limit: Option<RateLimit>,
    /// `FEEDBACK_DOMAIN`'s intake, checked at RCPT (with `STATE_TABLE`).
    pub feedback: Option<Intake>,
}

/// The negotiated TLS parameters, for the trace field and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// A string that never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What the shell must do next.
#[derive(Debug)]
pub enum Action {
    Reply(Reply),
    /// Write pending replies, then run the TLS handshake and call [`Session::tls_started`].
    StartTls,
    /// Check credentials, then call [`Session::auth_result`] (or, when the client's address is
    /// locked out, [`Session::auth_locked_out`]).
    Authenticate {
        user: String,
        password: Secret,
    },
    /// The message being received outgrew one part: open a multipart upload for it, then call
    /// [`Session::upload_begun`].
    BeginUpload(Box<Envelope>),
    /// Upload this full part of the message being received, then call
    /// [`Session::part_uploaded`]. Input waits meanwhile, so a session holds one part at most.
    UploadPart(Box<Part>),
    /// Abandon this upload: its message will not be accepted. Nothing to report back.
    AbortUpload(Upload),
    /// Store the message durably (its single PUT, or its last part and the completion of its
    /// upload) and queue it, then call [`Session::stored`].
    Store(Box<Incoming>),
    /// Write pending replies and close the connection.
    Close,
}

/// The envelope of one transaction, as MAIL and RCPT built it.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub queue_id: String,
    /// Empty for the null sender.
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub dsn: DsnParams,
    pub body_type: BodyType,
    pub smtputf8: bool,
    /// The client may relay (authenticated, or in `RELAY_NETWORKS`): the message is mail of our
    /// own, which the relay DKIM-signs. Fixed at MAIL (AUTH is refused inside a transaction).
    pub trusted: bool,
}

/// A complete message and its envelope, ready for the spool.
#[derive(Debug)]
pub struct Incoming {
    pub env: Envelope,
    /// `helo ([ip])`, for DSNs and logs.
    pub received_from: String,
    /// The client's address (PROXY v2's source when enabled) and HELO name, for the judge.
    pub client: IpAddr,
    pub helo: String,
    /// The message as stored (our trace field, then the client's normalised data): whole, or
    /// the end of its multipart upload.
    pub content: Content,
    /// Bytes of the stored message.
    pub size: u64,
    /// Holds the bytes still in memory against the budget until the shell drops it.
    pub reservation: Reservation,
}

impl Incoming {
    /// The content, handed to the spool; an empty message is left in its place.
    pub fn take_content(&mut self) -> Content {
        std::mem::replace(&mut self.content, Content::Whole(Vec::new()))
    }
}

/// The greeting the client gave.
#[derive(Debug, Clone)]
pub(crate) struct Helo {
    pub name: String,
    pub esmtp: bool,
}

/// The transaction between MAIL and the end of the message.
#[derive(Debug)]
pub(crate) struct Txn {
    pub env: Envelope,
    /// The message, from its first byte (DATA's or the first BDAT chunk's) to its end.
    pub body: Option<Body>,
    /// The message comes in BDAT chunks.
    pub bdat: bool,
    /// The message's multipart upload, once opened, and its parts uploaded so far.
    pub upload: Option<Upload>,
    pub parts: Vec<PartTag>,
}

impl Txn {
    pub fn new(env: Envelope) -> Self {
        Self { env, body: None, bdat: false, upload: None, parts: Vec::new() }
    }
}

/// What the bytes arriving next mean.
pub(crate) enum Mode {
    Command,
    /// DATA: until `<CRLF>.<CRLF>` (the body is the transaction's).
    Data(DataReceiver),
    /// A BDAT chunk of `left` more bytes; `reject` when the command was refused and the chunk
    /// is read only to be dropped.
    Bdat {
        left: usize,
        last: bool,
        reject: Option<Reply>,
    },
    /// AUTH PLAIN waiting for the client's response.
    AuthPlain,
    /// AUTH LOGIN waiting for the user name, or the password after it.
    AuthLogin(Option<String>),
    /// The shell is doing I/O for us (TLS, password check, storage). Parts are uploaded
    /// without leaving DATA or BDAT: see [`Session::spooling`].
    Waiting,
    Closed,
}

pub struct Session {
    pub(crate) cfg: Arc<SessionConfig>,
    pub(crate) kind: ListenerKind,
    pub(crate) peer: IpAddr,
    pub(crate) helo: Option<Helo>,
    pub(crate) tls: Option<TlsInfo>,
    pub(crate) user: Option<String>,
    /// The tables as they were when the session started.
    pub(crate) tables: Arc<Tables>,
    pub(crate) txn: Option<Txn>,
    pub(crate) mode: Mode,
    errors: u32,
    input: Vec<u8>,
    /// Bytes of an over-long line are being skipped up to its LF.
    skipping_line: bool,
    /// DATA's output before it reaches the body (see `process_data`).
    pub(crate) scratch: Vec<u8>,
    /// The shell is opening the upload or uploading a part: input waits.
    spooling: bool,
    actions: VecDeque<Action>,
    /// The line being answered is a well-formed MAIL, RCPT, DATA or BDAT: its replies (and the
    /// replies to the message that follows) are counted.
    pub(crate) mail_command: bool,
    tally: Tally,
    /// The DNS blocklist that lists the client (the screen found it at connect): its recipients
    /// are refused unless it authenticates.
    pub(crate) blocklisted: Option<String>,
}

impl Session {
    /// A new session; its first action is the greeting.
    pub fn new(cfg: Arc<SessionConfig>, kind: ListenerKind, peer: IpAddr, tls: Option<TlsInfo>) -> Self {
        let tables = cfg.tables.current();
        let mut s = Self {
            cfg,
            kind,
            peer,
            helo: None,
            tls,
            user: None,
            tables,
            txn: None,
            mode: Mode::Command,
            errors: 0,
            input: Vec::new(),
            skipping_line: false,
            scratch: Vec::new(),
            spooling: false,
            actions: VecDeque::new(),
            mail_command: false,
            tally: Tally::default(),
            blocklisted: None,
        };
        s.actions.push_back(Action::Reply(replies::greeting(&s.cfg.hostname)));
        s
    }

    /// The connect-time screen found the client on `zone` (before any input was read).
    pub fn blocklist(&mut self, zone: String) {
        self.blocklisted = Some(zone);
    }

    /// The next thing to do, if any.
    pub fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// What the session counted since the last call (see [`crate::metrics`]).
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    /// The AUTH file and recipient table this session uses (a snapshot taken when it started).
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The authenticated user and the addresses it may send as, when its AUTH line restricts them.
    pub(crate) fn sender_list(&self) -> Option<(&str, &SenderList)> {
        let user = self.user.as_deref()?;
        Some((user, self.tables.auth.as_ref()?.senders(user)?))
    }

    /// True once the session has asked to close.
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// True between MAIL and the reply to the end of the message.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || matches!(self.mode, Mode::Data(..) | Mode::Bdat { .. } | Mode::Waiting)
    }

    /// Bytes from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.process();
    }

    /// The client was idle too long.
    pub fn timeout(&mut self) {
        self.close_with(replies::timeout());
    }

    /// The server is stopping.
    pub fn shutdown(&mut self) {
        self.close_with(replies::shutting_down());
    }

    /// The TLS handshake finished: the session starts over (RFC 3207 §4.2).
    pub fn tls_started(&mut self, info: TlsInfo) {
        tracing::info!(event = "tls", client = %self.peer, version = %info.version, cipher = %info.cipher);
        self.tls = Some(info);
        self.helo = None;
        self.end_txn();
        self.mode = Mode::Command;
        self.process();
    }

    /// An [`Action::Authenticate`] refused without checking the password: the client's address
    /// is locked out (`policy::lockout`) until `until` (Unix seconds).
    pub fn auth_locked_out(&mut self, user: &str, until: i64) {
        self.mode = Mode::Command;
        tracing::warn!(event = "auth", client = %self.peer, user, result = "locked_out", until);
        self.reply(replies::auth_locked_out());
        self.process();
    }

    /// The outcome of an [`Action::Authenticate`].
    pub fn auth_result(&mut self, user: &str, ok: bool) {
        self.mode = Mode::Command;
        if ok {
            tracing::info!(event = "auth", client = %self.peer, user, result = "ok");
            self.user = Some(user.to_string());
            self.reply(replies::auth_ok());
        } else {
            tracing::warn!(event = "auth", client = %self.peer, user, result = "failed");
            self.reply(replies::auth_failed());
        }
        self.process();
    }

    /// The outcome of an [`Action::Store`]: the queue id when the message is safe, else why not.
    pub fn stored(&mut self, queue_id: &str, result: Result<(), String>) {
        self.mode = Mode::Command;
        match result {
            Ok(()) => {
                tracing::info!(event = "queued", queue_id, client = %self.peer);
                self.tally.accepted += 1;
                self.reply(replies::queued(queue_id));
            }
            Err(e) => {
                tracing::error!(event = "deferred", queue_id, client = %self.peer, error = %e);
                self.reply(replies::storage_failed());
            }
        }
        self.process();
    }

    /// Queue a reply, counting errors; too many closes the session.
    pub(crate) fn reply(&mut self, r: Reply) {
        if self.mail_command {
            self.tally.reply(r.code);
        }
        let is_error = r.code >= 500;
        self.actions.push_back(Action::Reply(r));
        if is_error {
            self.errors += 1;
            if self.errors >= self.cfg.max_errors {
                tracing::warn!(event = "too_many_errors", client = %self.peer, errors = self.errors);
                self.close_with(replies::too_many_errors());
            }
        }
    }

    pub(crate) fn close_with(&mut self, r: Reply) {
        if self.is_closed() {
            return;
        }
        self.end_txn();
        self.actions.push_back(Action::Reply(r));
        self.actions.push_back(Action::Close);
        self.mode = Mode::Closed;
        self.input.clear();
    }

    pub(crate) fn push_action(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    /// End the transaction, if any (RSET, HELO, STARTTLS, close): its upload is aborted.
    pub(crate) fn end_txn(&mut self) {
        if let Some(upload) = self.txn.take().and_then(|t| t.upload) {
            tracing::info!(event = "aborted", queue_id = %upload.queue_id, client = %self.peer, reason = "transaction ended");
            self.push_action(Action::AbortUpload(upload));
        }
    }

    /// The judge refused the message (nothing was stored; the shell aborted its upload).
    pub fn refused(&mut self, queue_id: &str, r: Reply) {
        self.mode = Mode::Command;
        tracing::warn!(event = "rejected", queue_id, client = %self.peer, reply = %r.one_line(), reason = "judged");
        self.reply(r);
        self.process();
    }

    /// An action the shell took but could not carry out (the connection failed first): it goes
    /// back to the front of the queue, so [`connection_lost`](Self::connection_lost) sees it.
    pub fn unperformed(&mut self, a: Action) {
        self.actions.push_front(a);
    }

    /// The connection is gone (client closed, read or write failed, or the session closed):
    /// nothing more happens in this session. Returns every upload it leaves open — the
    /// transaction's, and those of actions the shell did not carry out — for the shell to abort.
    pub fn connection_lost(&mut self) -> Vec<Upload> {
        let mut open: Vec<Upload> = Vec::new();
        let pending = self.actions.drain(..).filter_map(|a| match a {
            Action::AbortUpload(u) => Some(u),
            Action::UploadPart(p) => Some(p.upload),
            Action::Store(m) => m.content.upload().cloned(),
            _ => None,
        });
        for u in pending.chain(self.txn.take().and_then(|t| t.upload)) {
            if !open.contains(&u) {
                tracing::info!(event = "aborted", queue_id = %u.queue_id, client = %self.peer, reason = "connection lost");
                open.push(u);
            }
        }
        self.mode = Mode::Closed;
        self.input.clear();
        open
    }

    /// Drop input that arrived before a TLS upgrade (RFC 3207 §5: plaintext injection).
    pub(crate) fn discard_input(&mut self) {
        self.input.clear();
    }

    /// Consume buffered input until more is needed or the shell must act.
    fn process(&mut self) {
        loop {
            if self.spooling || self.spool_body() {
                return;
            }
            let progressed = match &mut self.mode {
                Mode::Waiting | Mode::Closed => return,
                Mode::Command | Mode::AuthPlain | Mode::AuthLogin(_) => self.process_line(),
                Mode::Data(..) => self.process_data(),
                Mode::Bdat { .. } => self.process_bdat(),
            };
            if !progressed {
                return;
            }
        }
    }

    /// One line in command or AUTH mode; false when no complete line is buffered.
    fn process_line(&mut self) -> bool {
        let Some(lf) = memchr::memchr(b'\n', &self.input) else {
            if self.input.len() > MAX_LINE {
                self.input.clear();
                self.skipping_line = true;
            }
            return false;
        };
        let mut line: Vec<u8> = self.input.drain(..=lf).collect();
        self.mail_command = false;
        if std::mem::take(&mut self.skipping_line) || line.len() > MAX_LINE {
            self.reply(replies::line_too_long());
            return true;
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().any(|&b| b == b'\r' || b == 0) {
            self.reply(replies::bare_cr_or_nul());
            return true;
        }
        match std::mem::replace(&mut self.mode, Mode::Command) {
            Mode::AuthPlain => self.auth_plain_response(&line),
            Mode::AuthLogin(user) => self.auth_login_response(user, &line),
            _ => self.command(&line),
        }
        true
    }
}

#[cfg(test)]
mod tests;
