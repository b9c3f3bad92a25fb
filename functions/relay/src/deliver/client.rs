//! The SMTP client: opening a session and running one transaction on it (its MAIL/RCPT/DATA
//! exchange is in [`exchange`]), with a verdict per recipient. Which session a job uses — a pooled
//! one or a new one — is `deliver::transport`'s.
//!
//! A new session walks the targets in order until one host takes it ([`SmtpTransport::open_any`]).
//! Failures before the transaction (connect, greeting, EHLO, TLS) move on to the next address,
//! except a loop and a "slow down" reply (`deliver::throttle`); once RCPT replies have been read
//! the attempt ends there, so no recipient can be accepted twice in one attempt.
//! Opportunistic STARTTLS to an MX that fails in the handshake is retried once in plaintext on
//! the same address, as Postfix does; `RELAY_TLS=required`, smarthosts and targets that require
//! verified TLS (MTA-STS `enforce`, [`TlsRequirement::Verified`]) never fall back, and the last
//! are never sent anything but over TLS with a certificate valid for the MX name.
//! A server without 8BITMIME gets 8-bit bodies converted to 7-bit ([`crate::downgrade`]); the
//! bytes a server receives are then DKIM-signed ([`crate::dkim`]), so the signature covers them.
//! Only a [`Hop::Smarthost`] target gets the smarthost's treatment (implicit TLS, a verified
//! certificate, AUTH); MX hosts and routes are delivered to alike. A server whose greeting or
//! EHLO/HELO reply gives our own name ends the attempt with a permanent loop verdict
//! ([`loops::own_name_in`]).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{RelayConfig, Smarthost, TlsMode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use shared::config::ConfigError;
use shared::job::BodyType;
use shared::{Job, Reply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::credentials::Password;
use super::pool::{Limits, Pool};
use super::throttle;
use super::tls::{self, TlsClient};
use super::wire::{self, Extensions};
use crate::dkim::Signer;
use crate::route::{Hop, Target, loops};
use crate::share::SharedSlots;
use crate::vocab::TlsRequirement;
use crate::vocab::{Class, Remote, Verdict};
use exchange::Broken;
use shared::feedback::ReturnPath;

mod exchange;

/// The production [`Transport`](super::Transport): SMTP over TCP with STARTTLS or implicit TLS,
/// sessions pooled per next hop.
pub struct SmtpTransport {
    helo: String,
    tls_mode: TlsMode,
    connect_timeout: Duration,
    command_timeout: Duration,
    data_timeout: Duration,
    smarthost: Option<Smarthost>,
    /// For MX hosts and routes: any certificate, checked against web PKI + `RELAY_TLS_CA` for
    /// the log (see [`super::tls`]).
    tls: TlsClient,
    /// For MX hosts that must prove their name (MTA-STS `enforce`): verified in the handshake.
    verified_tls: TlsClient,
    /// For the smarthost: its certificate verified (web PKI + `RELAY_SMARTHOST_CA`).
    smarthost_tls: Option<TlsClient>,
    pub(super) pool: Pool<Session>,
    /// The smarthost password in force (`deliver::credentials`), when AUTH is configured.
    password: Option<Arc<Password>>,
    /// Session slots and holds shared with every other worker (a state table set).
    pub(super) shared: Option<SharedSlots>,
    dkim: Signer,
    /// `FEEDBACK_DOMAIN`'s return paths, when set ([`super::feedback`]).
    feedback: Option<ReturnPath>,
}

impl SmtpTransport {
    /// Fails only when extra trust anchors (`RELAY_TLS_CA`, `RELAY_SMARTHOST_CA`) cannot be read.
    pub fn new(cfg: &RelayConfig) -> Result<Self, ConfigError> {
        let roots = tls::roots(cfg.tls_ca.as_deref()).map_err(|reason| ConfigError { var: "RELAY_TLS_CA", reason })?;
        let smarthost_tls = match &cfg.smarthost {
            None => None,
            Some(sh) => Some(TlsClient::verifying(
                tls::roots(sh.ca.as_deref()).map_err(|reason| ConfigError { var: "RELAY_SMARTHOST_CA", reason })?,
            )),
        };
        Ok(Self {
            helo: cfg.helo_name.clone(),
            tls_mode: cfg.tls,
            connect_timeout: cfg.connect_timeout,
            command_timeout: cfg.command_timeout,
            data_timeout: cfg.data_timeout,
            smarthost: cfg.smarthost.clone(),
            tls: TlsClient::opportunistic(roots.clone()),
            verified_tls: TlsClient::verifying(roots),
            smarthost_tls,
            pool: Pool::new(Limits {
                sessions: cfg.destination_concurrency,
                messages: cfg.max_messages_per_connection,
                idle: cfg.connection_idle,
                backoff: cfg.throttle_backoff.clone(),
            }),
            password: cfg.smarthost.as_ref().and_then(|s| s.password.clone()).map(|p| Arc::new(Password::fixed(p))),
            shared: None,
            dkim: Signer::default(),
            feedback: None,
        })
    }

    /// Sign what this transport delivers with these keys (`RELAY_DKIM_KEYS`, loaded at start).
    pub fn with_dkim(self, dkim: Signer) -> Self {
        Self { dkim, ..self }
    }

    /// Give mail of our own a return path and a reference header in the feedback domain.
    pub fn with_feedback(self, feedback: Option<ReturnPath>) -> Self {
        Self { feedback, ..self }
    }

    /// AUTH to the smarthost with this password (read from `RELAY_SMARTHOST_PASSWORD_SECRET`).
    pub fn with_smarthost_password(self, password: Password) -> Self {
        Self { password: Some(Arc::new(password)), ..self }
    }

    /// Hold `RELAY_DESTINATION_CONCURRENCY` and "slow down" holds across every worker sharing
    /// this state table.
    pub fn with_shared_slots(self, shared: SharedSlots) -> Self {
        Self { shared: Some(shared), ..self }
    }
}

/// An open session ready for a transaction: the connection, what the server offers, and where
/// it goes (as an attempt reports it).
pub struct Session {
    conn: Conn,
    ext: Extensions,
    pub remote: Remote,
}

impl Session {
    /// RSET: ends the previous transaction and proves a pooled session is still alive before
    /// it is reused (Postfix does the same before reusing a cached session).
    pub async fn reset(&mut self) -> Result<(), String> {
        match self.conn.command("RSET").await? {
            r if r.is_positive() => Ok(()),
            r => Err(r.one_line()),
        }
    }

    pub async fn close(&mut self) {
        self.conn.quit().await;
    }
}

/// What a transaction left of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// The session can carry another transaction.
    Usable,
    /// The connection broke, or the server closes it (421).
    Closed,
    /// The connection broke before any recipient was accepted or refused: on a reused session,
    /// the job may go to a fresh one as if this never happened.
    Unused,
}

/// Why a session ended before its transaction, and whether plaintext is worth a retry.
struct Abort {
    verdict: Verdict,
    tls_failed: bool,
    /// No other address is tried (a loop: the other addresses are most likely us too).
    ends_attempt: bool,
}

impl From<Verdict> for Abort {
    fn from(verdict: Verdict) -> Self {
        Self { verdict, tls_failed: false, ends_attempt: false }
    }
}

impl Abort {
    fn tls(verdict: Verdict, tls_failed: bool) -> Self {
        Self { tls_failed, ..verdict.into() }
    }

    fn looped(verdict: Verdict) -> Self {
        Self { ends_attempt: true, ..verdict.into() }
    }
}

fn net(e: String) -> Verdict {
    Verdict::deferred("4.4.2", e)
}

/// The smarthost refused our credentials: a deferral — a configuration problem, not the mail's.
fn auth_refused(r: Reply) -> Abort {
    let detail = format!("authentication failed: {}", r.one_line());
    Verdict { class: Class::Deferred, status: "4.7.8".into(), reply: Some(r), detail, suppressed: false }.into()
}

impl SmtpTransport {
    /// A new session to the first of `targets` that takes one, or the last failure and where.
    pub(super) async fn open_any(
        &self,
        targets: &[Target],
        job: &Job,
    ) -> Result<(Target, Session), (Verdict, Option<Remote>)> {
        let mut last = (Verdict::deferred("4.4.1", "no address to try"), None);
        for target in targets {
            let mut plaintext = false;
            loop {
                let mut remote = Remote {
                    host: target.host.clone(),
                    addr: Some(target.addr),
                    tls_policy: target.tls,
                    ..Remote::default()
                };
                match self.open(target, job, &mut remote, plaintext).await {
                    Ok(session) => return Ok((target.clone(), session)),
                    Err(abort) => {
                        tracing::info!(queue_id = %job.queue_id, host = %target.host, addr = %target.addr,
                            error = %abort.verdict.text(), "session failed");
                        let retry_plain = abort.tls_failed && !plaintext && self.may_fall_back(target);
                        // A loop ends the attempt (the other addresses are most likely us too); a
                        // destination that asked for fewer connections is not given another address.
                        let ends_attempt = abort.ends_attempt || throttle::first([&abort.verdict]).is_some();
                        last = (abort.verdict, Some(remote));
                        if ends_attempt {
                            return Err(last);
                        }
                        if !retry_plain {
                            break;
                        }
                        plaintext = true;
                    }
                }
            }
        }
        Err(last)
    }

    fn may_fall_back(&self, target: &Target) -> bool {
        self.tls_mode == TlsMode::Opportunistic
            && target.hop != Hop::Smarthost
            && target.tls != TlsRequirement::Verified
    }

    /// The smarthost's settings when `target` is the smarthost, and its TLS client.
    fn smarthost_for(&self, target: &Target) -> Option<(&Smarthost, &TlsClient)> {
        (target.hop == Hop::Smarthost).then_some(())?;
        Some((self.smarthost.as_ref()?, self.smarthost_tls.as_ref()?))
    }

    async fn open(&self, target: &Target, job: &Job, remote: &mut Remote, plaintext: bool) -> Result<Session, Abort> {
        let tcp = timeout(self.connect_timeout, TcpStream::connect(target.addr))
            .await
            .map_err(|_| Verdict::deferred("4.4.1", format!("connect to {} timed out", target.addr)))?
            .map_err(|e| Verdict::deferred("4.4.1", format!("connect to {}: {e}", target.addr)))?;
        let _ = tcp.set_nodelay(true);
        let mut c = Conn { io: Box::new(tcp), buf: Vec::new(), timeout: self.command_timeout };
        let smarthost = self.smarthost_for(target);
        let tls = match (smarthost, target.tls) {
            (Some((_, smarthost_tls)), _) => smarthost_tls,
            (None, TlsRequirement::Verified) => &self.verified_tls,
            (None, _) => &self.tls,
        };
        if smarthost.is_some_and(|(s, _)| s.implicit_tls) {
            let (conn, verified) = c.upgrade(tls, target).await.map_err(|e| Abort::tls(e, false))?;
            (c, remote.tls, remote.tls_verified) = (conn, true, verified);
        }
        let greeting = c.read_reply().await.map_err(net)?;
        if !greeting.is_positive() {
            return Err(Verdict::from_reply(greeting).into());
        }
        c.refuse_own_name(&greeting, &self.helo).await?;
        let mut ext = c.hello(&self.helo).await?;
        if !remote.tls && ext.starttls && !plaintext {
            let r = c.command("STARTTLS").await.map_err(net)?;
            if r.code == 220 {
                let (conn, verified) = c.upgrade(tls, target).await.map_err(|e| Abort::tls(e, true))?;
                (c, remote.tls, remote.tls_verified) = (conn, true, verified);
                ext = c.hello(&self.helo).await?;
            }
        }
        if !remote.tls && (self.tls_mode == TlsMode::Required || target.tls == TlsRequirement::Verified) {
            c.quit().await;
            let why = match target.tls {
                TlsRequirement::Verified => "the domain's MTA-STS policy requires TLS but the server does not offer it",
                _ => "TLS is required but the server does not offer it",
            };
            return Err(Verdict::deferred("4.7.4", why).into());
        }
        if target.tls == TlsRequirement::Report && !(remote.tls && remote.tls_verified) {
            let failure = if remote.tls { "certificate not valid for the MX name" } else { "no TLS" };
            tracing::warn!(queue_id = %job.queue_id, host = %target.host, addr = %target.addr, failure,
                "mta-sts testing: an enforce policy would refuse this session (delivering anyway)");
        }
        if let Some((Smarthost { user: Some(user), .. }, _)) = smarthost {
            if !remote.tls {
                c.quit().await;
                return Err(Verdict::deferred("4.7.0", "refusing to send credentials without TLS").into());
            }
            let password = self.password.as_ref().ok_or_else(|| Verdict::deferred("4.7.0", "no smarthost password"))?;
            let used = password.current();
            if let Err(refused) = c.auth(&ext, user, &used).await? {
                // A rotated password: read the secret again and, when it changed, try once more.
                let Some(fresh) = password.after_refusal(&used).await else { return Err(auth_refused(refused)) };
                c.auth(&ext, user, &fresh).await?.map_err(auth_refused)?;
            }
        }
        remote.dsn = ext.dsn;
        Ok(Session { conn: c, ext, remote: remote.clone() })
    }

    /// MAIL, RCPT, DATA (pipelined when offered) on `session`; a verdict for every pending
    /// recipient, and what is left of the session.
    pub(super) async fn transaction(
        &self,
        session: &mut Session,
        job: &Job,
        message: &[u8],
    ) -> (Vec<(String, Verdict)>, After) {
        let Session { conn: c, ext, .. } = session;
        let ext = &*ext;
        let rcpts: Vec<_> = job.pending().collect();
        let mut verdicts: Vec<Option<Verdict>> = vec![None; rcpts.len()];
        let mut after = After::Usable;
        let message = match self.body_for(ext, job, message) {
            Ok(m) => m,
            // Nothing was sent: the session stays usable.
            Err(v) => return (rcpts.iter().map(|r| (r.address.clone(), v.clone())).collect(), After::Usable),
        };
        let message = &message[..];
        let refuse = if job.smtputf8 && !ext.smtputf8 {
            Some(Verdict::failed("5.6.7", "the message needs SMTPUTF8 but the server does not support it"))
        } else {
            ext.size.filter(|&l| l > 0 && message.len() as u64 > l).map(|limit| {
                Verdict::failed("5.3.4", format!("message size {} exceeds the server's limit {limit}", message.len()))
            })
        };
        if let Some(v) = refuse {
            verdicts.fill(Some(v));
        } else {
            for (v, r) in verdicts.iter_mut().zip(&rcpts) {
                if !wire::safe_address(&r.address) {
                    *v = Some(Verdict::failed("5.1.3", "bad recipient address syntax"));
                }
            }
            if let Err(Broken { error, answered }) = self.exchange(c, ext, job, &rcpts, &mut verdicts, message).await {
                // The connection broke mid-transaction: whatever has no answer yet waits.
                for v in verdicts.iter_mut().filter(|v| v.is_none()) {
                    *v = Some(net(error.clone()));
                }
                after = if answered { After::Closed } else { After::Unused };
            }
        }
        if verdicts.iter().flatten().any(|v| v.reply.as_ref().is_some_and(|r| r.code == 421)) {
            after = After::Closed;
        }
        let outcomes = rcpts
            .iter()
            .zip(verdicts)
            .map(|(r, v)| (r.address.clone(), v.expect("every recipient has a verdict")))
            .collect();
        (outcomes, after)
    }

    /// The message as this server receives it: 8-bit bodies converted to 7-bit (RFC 6152 §3)
    /// when the server does not offer 8BITMIME, then — mail of our own only (`job.trusted`:
    /// submitted by a client allowed to relay, or a DSN) — the feedback domain's reference header
    /// on top, and DKIM-signed when its `From:` domain has keys. Inbound mail is never signed, whatever its `From:` says: a forged sender of a
    /// signing domain must not get our signature. A signing failure defers the recipients rather
    /// than send the mail unsigned.
    fn body_for<'m>(&self, ext: &Extensions, job: &Job, message: &'m [u8]) -> Result<Cow<'m, [u8]>, Verdict> {
        let converted = if job.body == BodyType::SevenBit || ext.eightbitmime {
            Cow::Borrowed(message)
        } else {
            super::downgrade::seven_bit(message)
        };
        if let Cow::Owned(m) = &converted {
            tracing::info!(queue_id = %job.queue_id, from = message.len(), to = m.len(),
                "8-bit body converted to 7-bit: the server does not offer 8BITMIME");
        }
        if !job.trusted {
            return Ok(converted);
        }
        let converted = super::feedback::with_reference(self.feedback.as_ref(), job, converted);
        let (signed, by) = self.dkim.signed(converted).map_err(|e| {
            tracing::error!(queue_id = %job.queue_id, error = %e, "dkim signing failed");
            Verdict::deferred("4.3.0", e)
        })?;
        if !by.is_empty() {
            tracing::info!(queue_id = %job.queue_id, signatures = %by.join(", "), "dkim signed");
        }
        Ok(signed)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection with a reply buffer, so pipelined replies are never lost between reads.
struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    async fn write(&mut self, bytes: &[u8], limit: Duration) -> Result<(), String> {
        timeout(limit, async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        .map_err(|_| "timed out sending".to_string())?
        .map_err(|e| format!("write failed: {e}"))
    }

    async fn read_reply_within(&mut self, limit: Duration) -> Result<Reply, String> {
        timeout(limit, async {
            loop {
                if let Some(r) = wire::take_reply(&mut self.buf)? {
                    return Ok(r);
                }
                let mut chunk = [0u8; 4096];
                let n = self.io.read(&mut chunk).await.map_err(|e| format!("read failed: {e}"))?;
                if n == 0 {
                    return Err("connection closed by the server".to_string());
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .map_err(|_| "timed out waiting for a reply".to_string())?
    }

    async fn read_reply(&mut self) -> Result<Reply, String> {
        self.read_reply_within(self.timeout).await
    }

    async fn command(&mut self, line: &str) -> Result<Reply, String> {
        self.write(format!("{line}\r\n").as_bytes(), self.timeout).await?;
        self.read_reply().await
    }

    /// EHLO, or HELO when the server does not know EHLO.
    async fn hello(&mut self, name: &str) -> Result<Extensions, Abort> {
        let r = self.command(&format!("EHLO {name}")).await.map_err(net)?;
        if r.is_positive() {
            self.refuse_own_name(&r, name).await?;
            return Ok(Extensions::parse(&r));
        }
        if r.is_permanent() {
            let h = self.command(&format!("HELO {name}")).await.map_err(net)?;
            if h.is_positive() {
                self.refuse_own_name(&h, name).await?;
                return Ok(Extensions::default());
            }
            return Err(Verdict::from_reply(h).into());
        }
        Err(Verdict::from_reply(r).into())
    }

    /// A greeting or EHLO/HELO reply naming the server `helo`, our own name, is a loop: QUIT and
    /// end the attempt.
    async fn refuse_own_name(&mut self, reply: &Reply, helo: &str) -> Result<(), Abort> {
        match loops::own_name_in(reply, helo) {
            None => Ok(()),
            Some(looped) => {
                self.quit().await;
                Err(Abort::looped(looped))
            }
        }
    }

    /// AUTH PLAIN, else LOGIN: `Ok(Err(reply))` when the server refused the credentials.
    async fn auth(&mut self, ext: &Extensions, user: &str, password: &str) -> Result<Result<(), Reply>, Abort> {
        let r = if ext.offers_auth(smtp_proto::AUTH_PLAIN) {
            self.command(&format!("AUTH PLAIN {}", B64.encode(format!("\0{user}\0{password}")))).await
        } else if ext.offers_auth(smtp_proto::AUTH_LOGIN) {
            let mut r = self.command("AUTH LOGIN").await;
            for secret in [user, password] {
                r = match r {
                    Ok(ok) if ok.code == 334 => self.command(&B64.encode(secret)).await,
                    other => other,
                };
            }
            r
        } else {
            return Err(Verdict::deferred("4.7.0", "the smarthost offers neither AUTH PLAIN nor AUTH LOGIN").into());
        }
        .map_err(net)?;
        Ok(if r.code == 235 { Ok(()) } else { Err(r) })
    }

    /// The TLS handshake; the connection and whether the certificate is valid for the host.
    async fn upgrade(self, client: &TlsClient, target: &Target) -> Result<(Conn, bool), Verdict> {
        if !self.buf.is_empty() {
            // Bytes after the 220 were sent in plaintext and must not be read as if under TLS.
            return Err(Verdict::deferred("4.7.5", "server sent data after STARTTLS"));
        }
        let name = tls::server_name(&target.host, target.addr.ip());
        let (tls, verified) = timeout(self.timeout, client.connect(name, self.io))
            .await
            .map_err(|_| Verdict::deferred("4.7.5", "TLS handshake timed out"))?
            .map_err(|e| Verdict::deferred("4.7.5", format!("TLS handshake failed: {e}")))?;
        Ok((Conn { io: Box::new(tls), buf: Vec::new(), timeout: self.timeout }, verified))
    }

    async fn quit(&mut self) {
        let _ = timeout(Duration::from_secs(5), self.command("QUIT")).await;
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
pub(super) mod tests;
