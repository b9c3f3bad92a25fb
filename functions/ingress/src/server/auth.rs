//! An AUTH's credentials checked for a session: the lockout first (`policy::lockout`: an address
//! locked out gets `454 4.7.0` and its password is not even checked), then the password against
//! the session's snapshot of the AUTH file on the blocking pool (hashes are slow on purpose),
//! then a wrong one counted against the client's address — the failure that locks it out is
//! logged and counted (`AuthLockouts`).

use shared::metrics::Metrics;

use crate::metrics::AUTH_LOCKOUTS;
use crate::policy::lockout::{Verdict, client_key};
use crate::server::connection::Deps;
use crate::session::{Secret, Session};

pub async fn authenticate(session: &mut Session, deps: &Deps, user: String, password: Secret) {
    let ip = session.peer;
    let now = chrono::Utc::now().timestamp();
    if let Verdict::Locked(until) = deps.lockout.check(ip, now).await {
        return session.auth_locked_out(&user, until);
    }
    // The session's own snapshot: the users as they were when it connected.
    let ok = match session.tables().auth.clone() {
        Some(db) => {
            let u = user.clone();
            tokio::task::spawn_blocking(move || db.verify(&u, &password.0)).await.unwrap_or(false)
        }
        None => false,
    };
    if !ok && let Some(until) = deps.lockout.failed(ip, now).await {
        locked_out(&deps.metrics, ip, until);
    }
    session.auth_result(&user, ok);
}

fn locked_out(metrics: &Metrics, ip: std::net::IpAddr, until: i64) {
    tracing::warn!(event = "auth_lockout", client = %client_key(ip), until,
        "too many failed AUTH attempts: the address is locked out");
    metrics.count(AUTH_LOCKOUTS, 1);
}
