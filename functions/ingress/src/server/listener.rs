//! Listeners, connection limits and graceful shutdown.
//!
//! Each configured address gets an accept loop. A connection over the total or per-IP limit
//! is told `421 4.7.0` (and counted as `TempFailed`) and closed before any session exists. On shutdown the loops stop
//! accepting, sessions are told to drain (finish the transaction in flight, then `421 4.3.2`),
//! and after the grace period the rest are closed.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::IngressConfig;
use shared::metrics::Metrics;
use shared::table::StateTable;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::feedback::Feedback;
use crate::judge::auth::AuthMode;
use crate::judge::authenticate::{Authenticate, SealKey};
use crate::judge::spam::Spam;
use crate::judge::{Check, Judge};
use crate::policy::Policy;
use crate::policy::feedback::Intake;
use crate::policy::lockout::{DynamoFailures, Failures, Lockout};
use crate::policy::rate::RateLimit;
use crate::policy::tables::LiveTables;
use crate::rspamd::client::RspamdClient;
use crate::screen::resolver::HickoryBlocklists;
use crate::screen::{self, Outcome, Screen};
use crate::server::connection::{self, Deps, Phase};
use crate::server::proxy;
use crate::server::tls;
use crate::session::budget::MemoryBudget;
use crate::session::replies;
use crate::session::{ListenerKind, Session, SessionConfig};
use crate::spool::Spool;

/// Counts connections, in total and per client address.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
    released: Notify,
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_ip, state: Mutex::default(), released: Notify::new() })
    }

    /// A slot for a connection from `ip`, unless a limit is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let mut st = self.state.lock().expect("limits lock");
        let per_ip = st.1.get(&ip).copied().unwrap_or(0);
        if st.0 >= self.max_total || per_ip >= self.max_per_ip {
            return None;
        }
        st.0 += 1;
        st.1.insert(ip, per_ip + 1);
        Some(ConnGuard { limits: Arc::clone(self), ip })
    }

    pub fn active(&self) -> usize {
        self.state.lock().expect("limits lock").0
    }

    /// Wait until no connection is left.
    pub async fn idle(&self) {
        loop {
            let notified = self.released.notified();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut st = self.limits.state.lock().expect("limits lock");
        st.0 -= 1;
        if let Some(n) = st.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&self.ip);
            }
        }
        drop(st);
        self.limits.released.notify_waiters();
    }
}

/// Everything the running server shares.
pub struct Server {
    listeners: Vec<(TcpListener, ListenerKind)>,
    session_cfg: Arc<SessionConfig>,
    tables: Arc<LiveTables>,
    deps: Arc<Deps>,
    limits: Arc<ConnLimits>,
    grace: Duration,
    proxy_protocol: bool,
    screen: Arc<Screen>,
}

impl Server {
    /// Bind every listener and load TLS material, the AUTH file and the recipient table;
    /// errors name the variable. `seal_key` is `INGRESS_ARC_SEAL`'s key, read by the caller;
    /// `feedback` the feedback domain's stage, when it is on; `state` the state table
    /// (`STATE_TABLE`), when set, where the AUTH lockout counts.
    pub async fn bind(
        cfg: &IngressConfig,
        spool: Arc<dyn Spool>,
        metrics: Arc<Metrics>,
        seal_key: Option<SealKey>,
        feedback: Option<Arc<Feedback>>,
        state: Option<StateTable>,
    ) -> Result<Self, String> {
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
            _ => None,
        };
        let tables = Arc::new(LiveTables::load(cfg.auth_file.as_deref(), cfg.recipients_file.as_deref())?);
        let mut listeners = Vec::new();
        let groups = [
            (&cfg.listen, ListenerKind::Mta, "INGRESS_LISTEN"),
            (&cfg.submission_listen, ListenerKind::Submission, "INGRESS_SUBMISSION_LISTEN"),
            (&cfg.tls_listen, ListenerKind::ImplicitTls, "INGRESS_TLS_LISTEN"),
        ];
        for (addrs, kind, var) in groups {
            for addr in addrs {
                let l = TcpListener::bind(addr).await.map_err(|e| format!("{var}: cannot listen on {addr}: {e}"))?;
                tracing::info!(event = "listening", address = %addr, kind = ?kind);
                listeners.push((l, kind));
            }
        }
        let session_cfg = Arc::new(SessionConfig {
            hostname: cfg.hostname.clone(),
            policy: Policy {
                relay_domains: cfg.relay_domains.clone(),
                relay_networks: cfg.relay_networks.clone(),
                postmaster: cfg.postmaster.clone(),
            },
            max_message_size: cfg.max_message_size,
            max_recipients: cfg.max_recipients,
            max_errors: cfg.max_errors,
            tls_available: tls.is_some(),
            auth_available: cfg.auth_file.is_some(),
            budget: MemoryBudget::new(cfg.memory_limit),
            part_size: cfg.part_size,
            tables: tables.clone(),
            rate_limit: cfg.rate_limit.clone().map(RateLimit::new),
            feedback: feedback.as_ref().map(|f| Intake::new(f.return_path.clone())),
        });
        let dns = HickoryBlocklists::new(&cfg.dns_servers).map_err(|e| format!("INGRESS_DNS_SERVERS: {e}"))?;
        let screen = Arc::new(Screen {
            zones: cfg.dnsbl.clone(),
            threshold: cfg.dnsbl_threshold,
            greet_pause: cfg.greet_pause,
            deadline: cfg.timeout.min(screen::MAX_LOOKUP_TIME),
            dns: Arc::new(dns),
        });
        Ok(Self {
            screen,
            listeners,
            session_cfg,
            tables,
            deps: Arc::new(Deps {
                spool,
                tls,
                timeout: cfg.timeout,
                metrics: metrics.clone(),
                judge: Arc::new(judge(cfg, metrics, seal_key)?),
                feedback,
                lockout: Arc::new(Lockout::new(
                    cfg.auth_lockout,
                    state.map(|t| -> Arc<dyn Failures> { Arc::new(DynamoFailures(t)) }),
                )),
            }),
            limits: ConnLimits::new(cfg.max_connections, cfg.max_connections_per_ip),
            grace: cfg.shutdown_grace,
            proxy_protocol: cfg.proxy_protocol,
        })
    }

    /// The AUTH file and recipient table, for the SIGHUP handler to reload.
    pub fn tables(&self) -> Arc<LiveTables> {
        self.tables.clone()
    }

    /// The bound addresses (useful when binding port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect()
    }

    /// Serve until `shutdown` resolves, then drain and return.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let mut loops = Vec::new();
        for (listener, kind) in self.listeners {
            let ctx = Ctx {
                cfg: self.session_cfg.clone(),
                deps: self.deps.clone(),
                limits: self.limits.clone(),
                phase: phase_rx.clone(),
                proxy_protocol: self.proxy_protocol,
                screen: self.screen.clone(),
            };
            loops.push(tokio::spawn(accept_loop(listener, kind, ctx)));
        }
        shutdown.await;
        tracing::info!(event = "shutdown", phase = "draining", connections = self.limits.active());
        let _ = phase_tx.send(Phase::Draining);
        for l in loops {
            let _ = l.await;
        }
        if tokio::time::timeout(self.grace, self.limits.idle()).await.is_err() {
            tracing::warn!(event = "shutdown", phase = "stopping", connections = self.limits.active());
            let _ = phase_tx.send(Phase::Stopping);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.limits.idle()).await;
        }
        tracing::info!(event = "shutdown", phase = "done");
    }
}

/// What each accept loop hands to its connections.
#[derive(Clone)]
struct Ctx {
    cfg: Arc<SessionConfig>,
    deps: Arc<Deps>,
    limits: Arc<ConnLimits>,
    phase: watch::Receiver<Phase>,
    proxy_protocol: bool,
    screen: Arc<Screen>,
}

async fn accept_loop(listener: TcpListener, kind: ListenerKind, ctx: Ctx) {
    let mut phase = ctx.phase.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, addr)) => {
                    let _ = sock.set_nodelay(true);
                    let ctx = ctx.clone();
                    tokio::spawn(async move { handle(sock, addr, kind, ctx).await });
                }
                Err(e) => {
                    tracing::error!(event = "accept_failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = phase.changed() => return,
        }
    }
}

async fn handle(mut sock: TcpStream, mut addr: SocketAddr, kind: ListenerKind, ctx: Ctx) {
    let Ctx { cfg, deps, limits, phase, proxy_protocol, screen } = ctx;
    if proxy_protocol {
        match proxy::read_header(&mut sock, addr).await {
            Ok(client) => addr = client,
            Err(e) => {
                tracing::warn!(event = "connect", peer = %addr, result = "rejected", reason = %e);
                return;
            }
        }
    }
    let ip = addr.ip();
    let Some(_guard) = limits.try_acquire(ip) else {
        tracing::warn!(event = "connect", client = %ip, result = "rejected", reason = "connection limit");
        deps.metrics.count(crate::metrics::TEMP_FAILED, 1);
        let _ = sock.write_all(replies::too_many_connections().to_string().as_bytes()).await;
        let _ = sock.shutdown().await;
        return;
    };
    tracing::info!(event = "connect", client = %ip, port = addr.port(), kind = ?kind);
    let (stream, tls_info): (Box<dyn connection::Io>, _) = match (kind, &deps.tls) {
        (ListenerKind::ImplicitTls, Some(acceptor)) => {
            match tokio::time::timeout(deps.timeout, acceptor.accept(sock)).await {
                Ok(Ok(s)) => {
                    let info = tls::info(&s);
                    (Box::new(s), Some(info))
                }
                _ => {
                    tracing::warn!(event = "tls_failed", client = %ip);
                    return;
                }
            }
        }
        _ => (Box::new(sock), None),
    };
    let mut stream = stream;
    let mut session = Session::new(cfg.clone(), kind, ip, tls_info);
    // Only strangers on the MTA listener are screened (see `screen`).
    if kind == ListenerKind::Mta && !screen.is_off() && !cfg.policy.is_trusted(ip, false) {
        match screen.run(ip, &mut stream).await {
            Outcome::Clean => {}
            Outcome::Blocklisted { zone, .. } => {
                deps.metrics.count(crate::metrics::BLOCKLISTED, 1);
                session.blocklist(zone);
            }
            Outcome::Pregreeted => {
                deps.metrics.count(crate::metrics::REJECTED, 1);
                let _ = stream.write_all(replies::pregreet().to_string().as_bytes()).await;
                let _ = stream.shutdown().await;
                tracing::info!(event = "disconnect", client = %ip, reason = "pregreet");
                return;
            }
            Outcome::Gone => {
                tracing::info!(event = "disconnect", client = %ip, reason = "client closed before the greeting");
                return;
            }
        }
    }
    connection::serve(stream, session, &deps, phase).await;
}

/// The end-of-DATA checks `cfg` asks for.
fn judge(cfg: &IngressConfig, metrics: Arc<Metrics>, seal_key: Option<SealKey>) -> Result<Judge, String> {
    let auth = match cfg.auth_checks {
        AuthMode::Off => None,
        mode => Some(
            Authenticate::new(&cfg.dns_servers, &cfg.hostname, mode, &cfg.arc_trusted_sealers, metrics.clone())?
                .with_seal(seal_key),
        ),
    };
    let mut checks: Vec<Box<dyn Check>> = Vec::new();
    if let Some(r) = &cfg.rspamd {
        let scanner = Box::new(RspamdClient::new(r.url.clone(), r.timeout));
        checks.push(Box::new(Spam::new(scanner, r.on_failure, &cfg.hostname, metrics)));
    }
    Ok(Judge::new(auth, checks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_ip() {
        let l = ConnLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g1 = l.try_acquire(a).unwrap();
        let _g2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none(), "per-IP limit");
        let _g3 = l.try_acquire(b).unwrap();
        assert!(l.try_acquire("192.0.2.3".parse().unwrap()).is_none(), "total limit");
        drop(g1);
        assert_eq!(l.active(), 2);
        assert!(l.try_acquire(a).is_some());
    }
}
