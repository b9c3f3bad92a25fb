//! Receiving a message: DATA and BDAT bytes into the transaction's
//! [`Body`](crate::session::body::Body), its full parts out to the spool as they fill, and the end of
//! the message.
//!
//! Input is fed to the body at most [`max_push`](crate::session::body::Body::max_push) bytes at a time.
//! Before every step, a body holding more than a part makes the session ask the shell to open
//! the message's upload (the first time) and then to upload the part; input waits until the
//! shell reports back, so a session holds about one part however large the message. A body
//! that fails (NUL, too many hops, too big, memory, a spool error) has its upload aborted at
//! once and stores nothing more; the client still sends the rest, which is counted and
//! dropped, and gets the error reply at the end. Only a message that reached its end intact
//! becomes an [`Action::Store`].

use shared::Reply;

use super::{Action, Incoming, Mode, Session};
use crate::policy::senders;
use crate::session::body::{BodyError, Finished};
use crate::session::replies;
use crate::spool::upload::{Content, Part, PartTag, Upload};

impl Session {
    /// The outcome of an [`Action::BeginUpload`].
    pub fn upload_begun(&mut self, result: Result<Upload, String>) {
        self.spooling = false;
        let peer = self.peer;
        match (result, self.txn.as_mut()) {
            (Ok(upload), Some(txn)) => {
                tracing::info!(event = "upload", queue_id = %upload.queue_id, client = %peer, result = "started");
                txn.upload = Some(upload);
            }
            (Ok(upload), None) => self.push_action(Action::AbortUpload(upload)),
            (Err(e), txn) => {
                tracing::error!(event = "upload", queue_id = txn.as_ref().map(|t| t.env.queue_id.as_str()), client = %peer, result = "failed", error = %e);
                if let Some(body) = txn.and_then(|t| t.body.as_mut()) {
                    body.fail(BodyError::Storage);
                }
            }
        }
        self.process();
    }

    /// The outcome of an [`Action::UploadPart`].
    pub fn part_uploaded(&mut self, result: Result<PartTag, String>) {
        self.spooling = false;
        let peer = self.peer;
        if let Some(txn) = self.txn.as_mut() {
            match result {
                Ok(tag) => {
                    tracing::debug!(event = "part", queue_id = %txn.env.queue_id, client = %peer, part = tag.number);
                    txn.parts.push(tag);
                }
                Err(e) => {
                    tracing::error!(event = "upload", queue_id = %txn.env.queue_id, client = %peer, result = "failed", error = %e);
                    if let Some(body) = txn.body.as_mut() {
                        body.fail(BodyError::Storage);
                    }
                }
            }
        }
        self.process();
    }

    /// Run before every step of input: abort the upload of a body that failed, or hand the
    /// shell the body's next full part. True when the session must wait for the shell.
    pub(super) fn spool_body(&mut self) -> bool {
        let Some(txn) = self.txn.as_mut() else { return false };
        let Some(body) = txn.body.as_mut() else { return false };
        if body.error().is_some() {
            if let Some(upload) = txn.upload.take() {
                tracing::info!(event = "aborted", queue_id = %upload.queue_id, client = %self.peer, reason = ?body.error());
                self.push_action(Action::AbortUpload(upload));
            }
            return false;
        }
        if !body.has_part() {
            return false;
        }
        let action = match &txn.upload {
            None => Action::BeginUpload(Box::new(txn.env.clone())),
            Some(upload) => {
                let bytes = body.take_part().expect("has_part");
                let number = txn.parts.len() as i32 + 1;
                Action::UploadPart(Box::new(Part { upload: upload.clone(), number, bytes }))
            }
        };
        self.push_action(action);
        self.spooling = true;
        true
    }

    pub(super) fn process_data(&mut self) -> bool {
        if self.input.is_empty() {
            return false;
        }
        let (Mode::Data(receiver), Some(body)) = (&mut self.mode, self.txn.as_mut().and_then(|t| t.body.as_mut()))
        else {
            unreachable!("DATA mode has a body")
        };
        let take = self.input.len().min(body.max_push());
        let mut iter = self.input[..take].iter();
        let done = receiver.ingest(&mut iter, &mut self.scratch);
        let consumed = take - iter.as_slice().len();
        self.input.drain(..consumed);
        // A CR at the end may be the one of the end marker's CRLF, which the receiver takes
        // back from its output when the LF comes: hold it back until then.
        let hold = usize::from(!done && self.scratch.last() == Some(&b'\r'));
        let ready = self.scratch.len() - hold;
        body.push(&self.scratch[..ready]);
        self.scratch.drain(..ready);
        if done {
            self.mode = Mode::Command;
            self.finish_message();
        }
        true
    }

    pub(super) fn process_bdat(&mut self) -> bool {
        let Mode::Bdat { left, last, reject } = &mut self.mode else { unreachable!() };
        let body = self.txn.as_mut().and_then(|t| t.body.as_mut());
        let take = (*left).min(self.input.len()).min(body.as_ref().map_or(usize::MAX, |b| b.max_push()));
        let (left_now, last) = (*left - take, *last);
        *left = left_now;
        let reject = if left_now == 0 { reject.take() } else { None };
        if let Some(body) = body {
            body.push(&self.input[..take]);
        }
        self.input.drain(..take);
        if left_now > 0 {
            return take > 0;
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
        let body = txn.body.as_ref().expect("an accepted BDAT has a body");
        match body.error() {
            Some(e) => self.bdat_failed(e, last),
            None if last => self.finish_message(),
            None => {
                let n = body.size() as usize;
                self.reply(replies::chunk_ok(n));
            }
        }
    }

    /// Reply to a BDAT chunk of a failed message; after LAST the transaction is over.
    fn bdat_failed(&mut self, e: BodyError, last: bool) {
        let r = body_error_reply(e);
        if last {
            self.end_txn();
        }
        self.reply(r);
    }

    /// End of DATA or BDAT LAST: check the message and hand it to the shell.
    fn finish_message(&mut self) {
        let body = self.txn.as_mut().and_then(|t| t.body.take()).expect("a message ends inside a transaction");
        let Finished { last, size, header, reservation } = match body.finish() {
            Ok(f) => f,
            Err(e) => return self.reject(body_error_reply(e)),
        };
        if let Some((user, list)) = self.sender_list() {
            // A From: past the kept bytes could not be checked, so such a message is refused
            // from a user whose senders are listed (no real header section is that long).
            let checked = if header.truncated() {
                Err(replies::header_too_long_to_check(user))
            } else {
                senders::check_from_header(user, list, header.bytes())
            };
            if let Err(r) = checked {
                let user = user.to_string();
                tracing::warn!(event = "rejected", queue_id = %self.txn.as_ref().map_or("", |t| t.env.queue_id.as_str()), client = %self.peer, user, reason = "from_not_owned");
                return self.reject(r);
            }
        }
        let txn = self.txn.take().expect("checked above");
        let helo = self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or("unknown");
        let content = match txn.upload {
            None => Content::Whole(last),
            Some(upload) => Content::Multipart { upload, parts: txn.parts, last },
        };
        self.mode = Mode::Waiting;
        self.push_action(Action::Store(Box::new(Incoming {
            env: txn.env,
            received_from: format!("{helo} ([{}])", self.peer),
            client: self.peer,
            helo: helo.to_string(),
            content,
            size,
            reservation,
        })));
    }

    /// Refuse the transaction's message: abort its upload, log, reply.
    fn reject(&mut self, r: Reply) {
        if let Some(txn) = &self.txn {
            tracing::warn!(event = "rejected", queue_id = %txn.env.queue_id, client = %self.peer, reply = %r.one_line());
        }
        self.end_txn();
        self.reply(r);
    }
}

/// The reply for a message refused because of its body.
fn body_error_reply(e: BodyError) -> Reply {
    match e {
        BodyError::TooBig => replies::too_big(),
        BodyError::MemoryFull => replies::memory_full(),
        BodyError::Nul => replies::bare_newline(),
        BodyError::TooManyHops => replies::too_many_hops(),
        BodyError::Storage => replies::storage_failed(),
    }
}
