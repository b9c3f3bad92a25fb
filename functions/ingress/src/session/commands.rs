//! One handler per SMTP command: check the state, check the arguments, change the state, reply.
//!
//! Parsing is smtp-proto's; this module decides what each request means in each state. The
//! obsolete SEND, SOML, SAML and TURN are recognised here (smtp-proto does not know them) so
//! they get `502` rather than "unknown command".

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use shared::{BodyType, DsnParams, Notify, Recipient, Ret};
use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{self as proto, Error as ParseError, MailFrom, RcptTo, Request};

use crate::policy::rate::RateKey;
use crate::policy::senders;
use crate::session::body::Body;
use crate::session::received::{Trace, protocol};
use crate::session::replies;
use crate::session::{Action, Envelope, Helo, ListenerKind, Mode, Secret, Session, Txn};

/// MAIL parameters we parse but do not offer, so must refuse with 555.
const UNOFFERED_MAIL_FLAGS: u64 = proto::MAIL_BODY_BINARYMIME
    | proto::MAIL_REQUIRETLS
    | proto::MAIL_CONPERM
    | proto::MAIL_BY_NOTIFY
    | proto::MAIL_BY_RETURN
    | proto::MAIL_BY_TRACE;
const UNOFFERED_RCPT_FLAGS: u64 = proto::RCPT_CONNEG | proto::RCPT_RRVS_REJECT | proto::RCPT_RRVS_CONTINUE;

impl Session {
    /// A complete command line (without its line ending).
    pub(crate) fn command(&mut self, line: &[u8]) {
        let verb = line.split(|&b| b == b' ').next().unwrap_or_default().to_ascii_uppercase();
        match verb.as_slice() {
            b"SEND" | b"SOML" | b"SAML" | b"TURN" | b"ETRN" | b"ATRN" | b"BURL" => {
                return self.reply(replies::not_implemented(&String::from_utf8_lossy(&verb)));
            }
            b"LHLO" => return self.reply(replies::unknown_command()),
            _ => {}
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let request = Request::parse(&mut buf.iter()).map(Request::into_owned);
        self.mail_command =
            matches!(request, Ok(Request::Mail { .. } | Request::Rcpt { .. } | Request::Data | Request::Bdat { .. }));
        match request {
            Ok(Request::Ehlo { host }) => self.helo(host, true),
            Ok(Request::Helo { host }) => self.helo(host, false),
            Ok(Request::Mail { from }) => self.mail(from),
            Ok(Request::Rcpt { to }) => self.rcpt(to),
            Ok(Request::Data) => self.data(),
            Ok(Request::Bdat { chunk_size, is_last }) => self.bdat(chunk_size, is_last),
            Ok(Request::Rset) => {
                self.end_txn();
                self.reply(replies::ok());
            }
            Ok(Request::Noop { .. }) => self.reply(replies::ok()),
            Ok(Request::Quit) => self.close_with(replies::bye(&self.cfg.hostname.clone())),
            Ok(Request::Vrfy { value }) if value.trim().is_empty() => self.reply(replies::syntax("VRFY <address>")),
            Ok(Request::Vrfy { .. }) => self.reply(replies::vrfy()),
            Ok(Request::Expn { .. }) => self.reply(replies::not_implemented("EXPN")),
            Ok(Request::Help { .. }) => self.reply(replies::help()),
            Ok(Request::StartTls) => self.starttls(),
            Ok(Request::Auth { mechanism, initial_response }) => self.auth(mechanism, initial_response),
            Ok(other) => self.reply(replies::not_implemented(other.name())),
            Err(_) if verb == b"BDAT" => {
                // The chunk length is unknown, so what follows cannot be framed: close.
                self.close_with(replies::bdat_malformed());
            }
            Err(e) => self.reply(parse_error_reply(e)),
        }
    }

    fn helo(&mut self, host: String, esmtp: bool) {
        tracing::info!(event = "helo", client = %self.peer, helo = %host, esmtp);
        self.end_txn();
        self.helo = Some(Helo { name: host, esmtp });
        let host = &self.cfg.hostname;
        if !esmtp {
            return self.reply(shared::Reply::multi(250, None, vec![host.clone()]));
        }
        let mut lines = vec![
            host.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "DSN".into(),
            "CHUNKING".into(),
        ];
        if self.cfg.tls_available && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        if self.cfg.auth_available && self.tls.is_some() && self.user.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("HELP".into());
        self.reply(shared::Reply::multi(250, None, lines));
    }

    fn mail(&mut self, from: MailFrom<String>) {
        if self.helo.is_none() {
            return self.reply(replies::bad_sequence("send HELO or EHLO first"));
        }
        if self.txn.is_some() {
            return self.reply(replies::bad_sequence("nested MAIL command"));
        }
        if self.kind != ListenerKind::Mta {
            if self.tls.is_none() {
                return self.reply(replies::tls_required());
            }
            if self.user.is_none() {
                return self.reply(replies::auth_required());
            }
        }
        if let Some(param) = unoffered_mail_param(&from) {
            return self.reply(replies::unknown_param(param));
        }
        if from.size as u64 > self.cfg.max_message_size {
            return self.reply(replies::too_big());
        }
        let smtputf8 = from.flags & proto::MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return self.reply(replies::needs_smtputf8());
        }
        let ret = match from.flags & (proto::MAIL_RET_FULL | proto::MAIL_RET_HDRS) {
            proto::MAIL_RET_FULL => Some(Ret::Full),
            proto::MAIL_RET_HDRS => Some(Ret::Hdrs),
            0 => None,
            _ => return self.reply(replies::bad_param("RET")),
        };
        let body_type =
            if from.flags & proto::MAIL_BODY_8BITMIME != 0 { BodyType::EightBitMime } else { BodyType::SevenBit };
        if let Some((user, list)) = self.sender_list()
            && let Err(r) = senders::check_mail_from(user, list, &from.address)
        {
            tracing::warn!(event = "mail", client = %self.peer, from = %from.address, user, result = "rejected", reason = "sender_not_owned");
            return self.reply(r);
        }
        // Last, so that only a MAIL that would otherwise be accepted counts against the limit.
        if let Some(limit) = &self.cfg.rate_limit {
            let key = RateKey::of(self.user.as_deref(), self.peer);
            if let Err(wait) = limit.check(&key) {
                tracing::warn!(event = "mail", client = %self.peer, from = %from.address, result = "rejected", reason = "rate_limit", key = %key, limit = %limit.spec(), retry_after_s = wait.as_secs());
                return self.reply(replies::rate_limited(&key.to_string(), &limit.spec().to_string(), wait));
            }
        }
        let queue_id = shared::queue_id::new_queue_id();
        tracing::info!(event = "mail", queue_id, client = %self.peer, from = %from.address, size = from.size, user = self.user.as_deref().unwrap_or(""));
        self.txn = Some(Txn::new(Envelope {
            queue_id,
            sender: from.address,
            recipients: Vec::new(),
            dsn: DsnParams { ret, envid: from.env_id },
            body_type,
            smtputf8,
            trusted: self.cfg.policy.is_trusted(self.peer, self.user.is_some()),
        }));
        self.reply(replies::sender_ok());
    }

    fn rcpt(&mut self, to: RcptTo<String>) {
        let trusted = self.cfg.policy.is_trusted(self.peer, self.user.is_some());
        let Some(txn) = self.txn.as_ref() else {
            return self.reply(replies::bad_sequence("need MAIL before RCPT"));
        };
        if txn.bdat {
            return self.reply(replies::bad_sequence("RCPT during BDAT"));
        }
        if to.flags & UNOFFERED_RCPT_FLAGS != 0 {
            return self.reply(replies::unknown_param(if to.flags & proto::RCPT_CONNEG != 0 {
                "CONNEG"
            } else {
                "RRVS"
            }));
        }
        if !txn.env.smtputf8 && !to.address.is_ascii() {
            return self.reply(replies::needs_smtputf8());
        }
        if txn.env.recipients.len() >= self.cfg.max_recipients {
            return self.reply(replies::too_many_recipients());
        }
        let queue_id = txn.env.queue_id.clone();
        if !trusted && let Some(zone) = &self.blocklisted {
            let helo = self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or("");
            tracing::warn!(event = "rcpt", queue_id, client = %self.peer, helo, from = %txn.env.sender, to = %to.address, result = "rejected", reason = "blocklisted", zone = %zone);
            let r = replies::blocklisted(self.peer, zone);
            return self.reply(r);
        }
        let address = match self.check_recipient(&to.address, trusted) {
            Ok(a) => a,
            Err(r) => {
                tracing::warn!(event = "rcpt", queue_id, client = %self.peer, to = %to.address, result = "rejected", reply = %r.one_line());
                return self.reply(r);
            }
        };
        if to.flags & proto::RCPT_NOTIFY_NEVER != 0
            && to.flags & (proto::RCPT_NOTIFY_SUCCESS | proto::RCPT_NOTIFY_FAILURE | proto::RCPT_NOTIFY_DELAY) != 0
        {
            return self.reply(replies::bad_param("NOTIFY (NEVER cannot be combined)"));
        }
        let notify_bits = to.flags
            & (proto::RCPT_NOTIFY_NEVER
                | proto::RCPT_NOTIFY_SUCCESS
                | proto::RCPT_NOTIFY_FAILURE
                | proto::RCPT_NOTIFY_DELAY);
        let notify = (notify_bits != 0).then_some(Notify {
            success: to.flags & proto::RCPT_NOTIFY_SUCCESS != 0,
            failure: to.flags & proto::RCPT_NOTIFY_FAILURE != 0,
            delay: to.flags & proto::RCPT_NOTIFY_DELAY != 0,
        });
        tracing::info!(event = "rcpt", queue_id, client = %self.peer, to = %address, result = "accepted");
        let txn = self.txn.as_mut().expect("checked above");
        if !txn.env.recipients.iter().any(|r| r.address.eq_ignore_ascii_case(&address)) {
            txn.env.recipients.push(Recipient {
                orcpt: to.orcpt.map(|o| format!("rfc822;{o}")),
                notify,
                ..Recipient::new(address)
            });
        }
        self.reply(replies::rcpt_ok());
    }

    /// Why DATA or BDAT cannot start now, if it cannot.
    fn body_refusal(&self) -> Option<shared::Reply> {
        match &self.txn {
            None => Some(replies::bad_sequence("need MAIL and RCPT before the message")),
            Some(t) if t.env.recipients.is_empty() => Some(replies::no_valid_recipients()),
            Some(_) => None,
        }
    }

    fn data(&mut self) {
        if let Some(r) = self.body_refusal() {
            return self.reply(r);
        }
        if self.txn.as_ref().is_some_and(|t| t.bdat) {
            return self.reply(replies::bad_sequence("DATA during BDAT"));
        }
        let body = self.new_body();
        self.txn.as_mut().expect("checked").body = Some(body);
        self.reply(replies::start_data());
        self.scratch.clear();
        self.mode = Mode::Data(DataReceiver::new());
    }

    fn bdat(&mut self, chunk_size: usize, last: bool) {
        if let Some(r) = self.body_refusal() {
            // The chunk still has to be read (and dropped) before the reply.
            self.end_txn();
            self.mode = Mode::Bdat { left: chunk_size, last, reject: Some(r) };
            return;
        }
        if self.txn.as_ref().is_some_and(|t| !t.bdat) {
            let body = self.new_body();
            let txn = self.txn.as_mut().expect("checked");
            txn.body = Some(body);
            txn.bdat = true;
        }
        self.mode = Mode::Bdat { left: chunk_size, last, reject: None };
    }

    /// A body that starts with our trace field.
    fn new_body(&self) -> Body {
        let txn = self.txn.as_ref().expect("a body belongs to a transaction");
        let esmtp = self.helo.as_ref().is_some_and(|h| h.esmtp);
        let trace = Trace {
            helo: self.helo.as_ref().map(|h| h.name.as_str()).unwrap_or("unknown"),
            client_ip: self.peer,
            hostname: &self.cfg.hostname,
            protocol: protocol(esmtp, txn.env.smtputf8, self.tls.is_some(), self.user.is_some()),
            queue_id: &txn.env.queue_id,
            tls: self.tls.as_ref().map(|t| (t.version.as_str(), t.cipher.as_str())),
            single_rcpt: (txn.env.recipients.len() == 1).then(|| txn.env.recipients[0].address.as_str()),
            now: chrono::Utc::now(),
        };
        Body::new(&trace.render(), self.size_limit(), self.cfg.part_size, self.cfg.budget.reservation())
    }

    fn starttls(&mut self) {
        if !self.cfg.tls_available || self.tls.is_some() {
            return self.reply(replies::tls_unavailable());
        }
        self.reply(replies::tls_ready());
        // Anything pipelined after STARTTLS was sent in plaintext: never act on it.
        self.discard_input();
        self.push_action(Action::StartTls);
        self.mode = Mode::Waiting;
    }

    fn auth(&mut self, mechanism: u64, initial: String) {
        if !self.cfg.auth_available {
            return self.reply(replies::not_implemented("AUTH"));
        }
        if self.tls.is_none() {
            return self.reply(replies::encryption_required());
        }
        if self.user.is_some() {
            return self.reply(replies::bad_sequence("already authenticated"));
        }
        if self.txn.is_some() {
            return self.reply(replies::bad_sequence("AUTH not allowed during a mail transaction"));
        }
        match mechanism {
            proto::AUTH_PLAIN if initial.is_empty() => {
                self.mode = Mode::AuthPlain;
                self.reply(replies::auth_challenge(""));
            }
            proto::AUTH_PLAIN => self.auth_plain_response(initial.as_bytes()),
            proto::AUTH_LOGIN if initial.is_empty() => {
                self.mode = Mode::AuthLogin(None);
                self.reply(replies::auth_challenge(&B64.encode("Username:")));
            }
            proto::AUTH_LOGIN => self.auth_login_response(None, initial.as_bytes()),
            _ => self.reply(replies::auth_mechanism()),
        }
    }

    /// The client's response to AUTH PLAIN: `authzid NUL authcid NUL password`.
    pub(crate) fn auth_plain_response(&mut self, line: &[u8]) {
        let Some(decoded) = self.auth_decode(line) else { return };
        let mut parts = decoded.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(pass), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.reply(replies::bad_base64());
        };
        if !authz.is_empty() && authz != user {
            return self.reply(replies::auth_failed());
        }
        self.authenticate(user, pass);
    }

    /// The client's response to an AUTH LOGIN prompt.
    pub(crate) fn auth_login_response(&mut self, user: Option<String>, line: &[u8]) {
        let Some(decoded) = self.auth_decode(line) else { return };
        match user {
            None => {
                self.mode = Mode::AuthLogin(Some(String::from_utf8_lossy(&decoded).into_owned()));
                self.reply(replies::auth_challenge(&B64.encode("Password:")));
            }
            Some(user) => self.authenticate(user.as_bytes(), &decoded),
        }
    }

    /// Base64 of a SASL response; `*` cancels, `=` is empty. Replies itself on failure.
    fn auth_decode(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        match line {
            b"*" => {
                self.reply(replies::auth_cancelled());
                None
            }
            b"=" => Some(Vec::new()),
            _ => B64.decode(line).ok().or_else(|| {
                self.reply(replies::bad_base64());
                None
            }),
        }
    }

    fn authenticate(&mut self, user: &[u8], password: &[u8]) {
        let user = String::from_utf8_lossy(user).into_owned();
        let password = Secret(String::from_utf8_lossy(password).into_owned());
        self.mode = Mode::Waiting;
        self.push_action(Action::Authenticate { user, password });
    }
}

/// The first MAIL parameter smtp-proto understood but we do not advertise.
fn unoffered_mail_param(from: &MailFrom<String>) -> Option<&'static str> {
    if from.flags & proto::MAIL_BODY_BINARYMIME != 0 {
        Some("BODY=BINARYMIME")
    } else if from.flags & proto::MAIL_REQUIRETLS != 0 {
        Some("REQUIRETLS")
    } else if from.flags & UNOFFERED_MAIL_FLAGS != 0 || from.by != 0 {
        Some("BY")
    } else if from.mtrk.is_some() {
        Some("MTRK")
    } else if from.hold_for != 0 || from.hold_until != 0 {
        Some("HOLDFOR")
    } else if from.mt_priority != 0 {
        Some("MT-PRIORITY")
    } else if from.solicit.is_some() {
        Some("SOLICIT")
    } else if from.trans_id.is_some() {
        Some("TRANSID")
    } else {
        None
    }
}

fn parse_error_reply(e: ParseError) -> shared::Reply {
    match e {
        ParseError::UnknownCommand => replies::unknown_command(),
        ParseError::InvalidSenderAddress => shared::Reply::new(501, "5.1.7", "Bad sender address syntax"),
        ParseError::InvalidRecipientAddress => replies::bad_address("recipient"),
        ParseError::SyntaxError { syntax } => replies::syntax(syntax),
        ParseError::InvalidParameter { param } => replies::bad_param(param),
        ParseError::UnsupportedParameter { param } => replies::unknown_param(&param),
        _ => replies::unknown_command(),
    }
}
