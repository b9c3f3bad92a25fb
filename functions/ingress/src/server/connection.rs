//! One client connection: the imperative shell around a [`Session`].
//!
//! Reads bytes into the session, carries out its actions in order (replies are batched and
//! flushed before any wait, which is all PIPELINING needs), and watches the idle timeout and
//! the shutdown signal. This is the only place that touches the socket of a session. Spool
//! calls (open an upload, upload a part, abort, store) are awaited in line, so no bytes are
//! read meanwhile: a session holds one part of a message, and TCP makes the client wait.
//! However the connection ends, the uploads the session leaves open are aborted. What the
//! session counted goes to the metrics after every round of actions and when it ends. A
//! message to store is judged, stored and queued by [`accept`](super::accept::accept):
//! refused, nothing of it remains and the session sends the refusal. (A report to the
//! feedback domain goes to the [`Feedback`] stage there instead.)

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use shared::metrics::Metrics;

use crate::feedback::Feedback;
use crate::judge::Judge;
use crate::policy::lockout::Lockout;
use crate::server::accept::{Ending, accept};
use crate::server::{auth, tls};
use crate::session::{Action, Session};
use crate::spool::Spool;

/// A byte stream: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where the server is in its life; sessions watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// SIGTERM: finish the current transaction, then close with `421 4.3.2`.
    Draining,
    /// Grace period over: close now with `421 4.3.2`.
    Stopping,
}

/// What every connection needs besides its socket.
pub struct Deps {
    pub spool: Arc<dyn Spool>,
    pub tls: Option<TlsAcceptor>,
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// End-of-DATA checks of untrusted mail, between the session and the spool.
    pub judge: Arc<Judge>,
    /// Reports to `FEEDBACK_DOMAIN` (with `STATE_TABLE`).
    pub feedback: Option<Arc<Feedback>>,
    /// `INGRESS_AUTH_LOCKOUT`: addresses that guessed too many passwords.
    pub lockout: Arc<Lockout>,
}

/// Run a session on `stream` until it closes.
pub async fn serve(stream: Box<dyn Io>, mut session: Session, deps: &Deps, phase: watch::Receiver<Phase>) {
    converse(stream, &mut session, deps, phase).await;
    for upload in session.connection_lost() {
        deps.spool.abort(upload).await;
    }
    session.take_tally().record(&deps.metrics);
}

/// Read, act, reply until the session closes or the connection fails.
async fn converse(mut stream: Box<dyn Io>, session: &mut Session, deps: &Deps, mut phase: watch::Receiver<Phase>) {
    let peer = session.peer;
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(512);
    loop {
        let draining = *phase.borrow() != Phase::Running;
        if draining && !session.in_transaction() {
            session.shutdown();
        }
        while let Some(action) = session.next_action() {
            match action {
                Action::Reply(r) => out.extend_from_slice(r.to_string().as_bytes()),
                Action::StartTls => {
                    if flush(&mut stream, &mut out).await.is_err() {
                        return;
                    }
                    let Some(acceptor) = deps.tls.clone() else { return };
                    match acceptor.accept(stream).await {
                        Ok(tls_stream) => {
                            let info = tls::info(&tls_stream);
                            stream = Box::new(tls_stream);
                            session.tls_started(info);
                        }
                        Err(e) => {
                            tracing::warn!(event = "tls_failed", client = %peer, error = %e);
                            return;
                        }
                    }
                }
                Action::Authenticate { user, password } => auth::authenticate(session, deps, user, password).await,
                Action::BeginUpload(env) => {
                    let result = deps.spool.begin(&env).await;
                    session.upload_begun(result);
                }
                Action::UploadPart(part) => {
                    let result = deps.spool.upload_part(*part).await;
                    session.part_uploaded(result);
                }
                Action::AbortUpload(upload) => deps.spool.abort(upload).await,
                Action::Store(msg) => {
                    // Let the client see the replies before ours, then do the slow part.
                    if flush(&mut stream, &mut out).await.is_err() {
                        // The client is gone and never sees a 250: nothing is queued.
                        session.unperformed(Action::Store(msg));
                        return;
                    }
                    let queue_id = msg.env.queue_id.clone();
                    match accept(deps, *msg).await {
                        Ending::Refused(refusal) => session.refused(&queue_id, refusal),
                        Ending::Stored(result) => session.stored(&queue_id, result),
                    }
                }
                Action::Close => {
                    let _ = flush(&mut stream, &mut out).await;
                    let _ = stream.shutdown().await;
                    tracing::info!(event = "disconnect", client = %peer);
                    return;
                }
            }
        }
        session.take_tally().record(&deps.metrics);
        if flush(&mut stream, &mut out).await.is_err() {
            return;
        }
        tokio::select! {
            read = tokio::time::timeout(deps.timeout, stream.read(&mut buf)) => match read {
                Err(_) => session.timeout(),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    tracing::info!(event = "disconnect", client = %peer, reason = "client closed");
                    return;
                }
                Ok(Ok(n)) => session.receive(&buf[..n]),
            },
            changed = phase.changed() => {
                let stopping = changed.is_err() || *phase.borrow() == Phase::Stopping;
                if stopping {
                    session.shutdown();
                }
            }
        }
    }
}

async fn flush(stream: &mut Box<dyn Io>, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        stream.flush().await?;
        out.clear();
    }
    Ok(())
}
