//! The SMTP session as a pure state machine: bytes in, [`Action`]s out.
//!
//! The connection shell feeds whatever it read with [`Session::receive`] and carries out the
//! actions in order: write a reply, upgrade to TLS, check a password, store a message, close.
//! Actions that need I/O put the session in a waiting mode until the shell reports back
//! ([`Session::tls_started`], [`Session::auth_result`], [`Session::stored`]); input that
//! arrived meanwhile (PIPELINING) stays buffered and is processed afterwards, in order, so
//! replies never overtake each other. The command handlers are in [`crate::commands`].

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use shared::{BodyType, DsnParams, Recipient, Reply};
use smtp_proto::request::receiver::DataReceiver;

use crate::body::{Body, BodyError, count_received};
use crate::budget::{MemoryBudget, Reservation};
use crate::metrics::Tally;
use crate::policy::Policy;
use crate::policy::rate::RateLimit;
use crate::policy::senders::{self, SenderList};
use crate::replies;
use crate::tables::{LiveTables, Tables};

/// Longest command line accepted (Postfix's `line_length_limit`).
pub const MAX_LINE: usize = 2048;
/// More `Received:` fields than this is a loop (Postfix's `hopcount_limit`).
pub const MAX_HOPS: usize = 50;

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
    /// The AUTH file and recipient table in force; each session takes a snapshot at its start.
    pub tables: Arc<LiveTables>,
    /// `INGRESS_RATE_LIMIT`, checked at MAIL.
    pub rate_limit: Option<RateLimit>,
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
    /// Check credentials, then call [`Session::auth_result`].
    Authenticate {
        user: String,
        password: Secret,
    },
    /// Store the message durably, then call [`Session::stored`].
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
}

/// A complete message and its envelope, ready for the spool.
#[derive(Debug)]
pub struct Incoming {
    pub env: Envelope,
    /// `helo ([ip])`, for DSNs and logs.
    pub received_from: String,
    /// The message as stored: our trace field, then the client's normalised data.
    pub message: Vec<u8>,
    /// Holds the message's bytes against the memory budget until the shell drops it.
    pub reservation: Reservation,
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
    /// BDAT in progress: the body so far, or `None` once a chunk failed (the rest is discarded).
    pub bdat: Option<Result<Body, Reply>>,
}

/// What the bytes arriving next mean.
pub(crate) enum Mode {
    Command,
    /// DATA: until `<CRLF>.<CRLF>`.
    Data(DataReceiver, Body),
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
    /// The shell is doing I/O for us (TLS, password check, storage).
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
    scratch: Vec<u8>,
    actions: VecDeque<Action>,
    /// The line being answered is a well-formed MAIL, RCPT, DATA or BDAT: its replies (and the
    /// replies to the message that follows) are counted.
    pub(crate) mail_command: bool,
    tally: Tally,
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
            actions: VecDeque::new(),
            mail_command: false,
            tally: Tally::default(),
        };
        s.actions.push_back(Action::Reply(replies::greeting(&s.cfg.hostname)));
        s
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
        self.txn = None;
        self.mode = Mode::Command;
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
        self.actions.push_back(Action::Reply(r));
        self.actions.push_back(Action::Close);
        self.mode = Mode::Closed;
        self.input.clear();
    }

    pub(crate) fn push_action(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    /// Drop input that arrived before a TLS upgrade (RFC 3207 §5: plaintext injection).
    pub(crate) fn discard_input(&mut self) {
        self.input.clear();
    }

    /// Consume buffered input until more is needed or the shell must act.
    fn process(&mut self) {
        loop {
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

    fn process_data(&mut self) -> bool {
        let Mode::Data(receiver, body) = &mut self.mode else { unreachable!() };
        let mut iter = self.input.iter();
        self.scratch.clear();
        let done = receiver.ingest(&mut iter, &mut self.scratch);
        let consumed = self.input.len() - iter.as_slice().len();
        body.push(&self.scratch);
        self.input.drain(..consumed);
        if !done {
            return false;
        }
        let Mode::Data(_, body) = std::mem::replace(&mut self.mode, Mode::Command) else { unreachable!() };
        self.finish_message(Ok(body));
        true
    }

    fn process_bdat(&mut self) -> bool {
        let Mode::Bdat { left, last, reject } = &mut self.mode else { unreachable!() };
        let take = (*left).min(self.input.len());
        let (left_now, last) = (*left - take, *last);
        *left = left_now;
        let reject = if left_now == 0 { reject.take() } else { None };
        if let Some(Some(Ok(body))) = self.txn.as_mut().map(|t| t.bdat.as_mut()) {
            body.push(&self.input[..take]);
        }
        self.input.drain(..take);
        if left_now > 0 {
            return false;
        }
        self.mode = Mode::Command;
        match reject {
            Some(r) => self.reply(r),
            None => self.end_of_chunk(last),
        }
        true
    }

    /// A BDAT chunk is complete.
    fn end_of_chunk(&mut self, last: bool) {
        let Some(txn) = self.txn.as_mut() else { return };
        let state = txn.bdat.take().expect("an accepted BDAT has a body");
        match state {
            Ok(body) if body.size() > self.cfg.max_message_size => {
                txn.bdat = Some(Err(replies::too_big()));
                self.bdat_failed(last);
            }
            Ok(body) if last => self.finish_message(Ok(body)),
            Ok(body) => {
                let n = body.size() as usize;
                txn.bdat = Some(Ok(body));
                self.reply(replies::chunk_ok(n));
            }
            Err(r) => {
                txn.bdat = Some(Err(r));
                self.bdat_failed(last);
            }
        }
    }

    /// Reply with the transaction's BDAT error; after LAST the transaction is over.
    pub(crate) fn bdat_failed(&mut self, last: bool) {
        let r = match self.txn.as_ref().and_then(|t| t.bdat.as_ref()) {
            Some(Err(r)) => r.clone(),
            _ => replies::bad_sequence("BDAT"),
        };
        if last {
            self.txn = None;
        }
        self.reply(r);
    }

    /// End of DATA or BDAT LAST: check the body and hand the message to the shell.
    pub(crate) fn finish_message(&mut self, body: Result<Body, Reply>) {
        let txn = self.txn.take().expect("a message ends inside a transaction");
        let result = body.and_then(|b| {
            b.finish().map_err(|e| match e {
                BodyError::TooBig => replies::too_big(),
                BodyError::MemoryFull => replies::memory_full(),
                BodyError::Nul => replies::bare_newline(),
            })
        });
        let (message, reservation) = match result {
            Ok(m) => m,
            Err(r) => {
                tracing::warn!(event = "rejected", queue_id = %txn.env.queue_id, client = %self.peer, reply = %r.one_line());
                return self.reply(r);
            }
        };
        if count_received(&message) > MAX_HOPS + 1 {
            tracing::warn!(event = "rejected", queue_id = %txn.env.queue_id, client = %self.peer, reason = "hops");
            return self.reply(replies::too_many_hops());
        }
        if let Some((user, list)) = self.sender_list()
            && let Err(r) = senders::check_from_header(user, list, senders::header_section(&message))
        {
            tracing::warn!(event = "rejected", queue_id = %txn.env.queue_id, client = %self.peer, user, reason = "from_not_owned", reply = %r.one_line());
            return self.reply(r);
        }
        let helo = self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or("unknown");
        self.mode = Mode::Waiting;
        self.actions.push_back(Action::Store(Box::new(Incoming {
            env: txn.env,
            received_from: format!("{helo} ([{}])", self.peer),
            message,
            reservation,
        })));
    }
}

#[cfg(test)]
mod tests;
