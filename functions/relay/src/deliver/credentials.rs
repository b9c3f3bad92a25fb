//! The smarthost password in force. From `RELAY_SMARTHOST_PASSWORD` it never changes (local
//! use); from `RELAY_SMARTHOST_PASSWORD_SECRET` it is read once at start — a secret that cannot
//! be read stops the relay there — and read again after the smarthost refused it, so a rotated
//! password is picked up without a restart. The first refusal always reads it again; later
//! ones at most once per [`REREAD_EVERY`], however many sessions are refused meanwhile (a wrong
//! password would otherwise cost a secret read per job). A refused session is retried on the
//! same connection only when the re-read found a different password.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// Re-reads of the secret after refusals are at least this far apart.
pub const REREAD_EVERY: Duration = Duration::from_secs(30);

/// Where the password comes from (Secrets Manager, SSM: `store::secrets`).
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The password as stored now.
    async fn read(&self) -> Result<String, String>;
    /// What to call it in logs (its ARN).
    fn name(&self) -> &str;
}

/// The smarthost password, cheap to share between sessions.
pub struct Password {
    current: RwLock<String>,
    source: Option<Arc<dyn SecretSource>>,
    last_read: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// A password given as it is.
    pub fn fixed(password: impl Into<String>) -> Self {
        Self { current: RwLock::new(password.into()), source: None, last_read: Mutex::new(None) }
    }

    /// The password read from `source` now; an error names the source.
    pub async fn read(source: Arc<dyn SecretSource>) -> Result<Self, String> {
        let password = source.read().await.map_err(|e| format!("{}: {e}", source.name()))?;
        Ok(Self { current: RwLock::new(password), source: Some(source), last_read: Mutex::new(None) })
    }

    /// The password in force.
    pub fn current(&self) -> String {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The smarthost refused `used`: read the secret again (unless it was read within
    /// [`REREAD_EVERY`]) and return the password to try now, when it differs from `used`.
    pub async fn after_refusal(&self, used: &str) -> Option<String> {
        let source = self.source.as_ref()?;
        let due = {
            let mut last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= REREAD_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            match source.read().await {
                Ok(fresh) => {
                    let changed = fresh != self.current();
                    tracing::info!(
                        secret = source.name(),
                        changed,
                        "smarthost refused the password; secret read again"
                    );
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
                Err(e) => tracing::warn!(secret = source.name(), error = %e, "smarthost password secret unreadable"),
            }
        }
        Some(self.current()).filter(|p| p != used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rotating(Mutex<Vec<&'static str>>, Mutex<usize>);

    #[async_trait]
    impl SecretSource for Rotating {
        async fn read(&self) -> Result<String, String> {
            *self.1.lock().unwrap() += 1;
            let mut v = self.0.lock().unwrap();
            if v.len() > 1 {
                Ok(v.remove(0).to_string())
            } else {
                v.first().map(|s| s.to_string()).ok_or("gone".into())
            }
        }
        fn name(&self) -> &str {
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"
        }
    }

    #[tokio::test]
    async fn a_refusal_rereads_the_secret_once_and_offers_a_changed_password() {
        let source = Arc::new(Rotating(Mutex::new(vec!["old", "new"]), Mutex::new(0)));
        let p = Password::read(source.clone()).await.unwrap();
        assert_eq!(p.current(), "old");
        // The first refusal reads again (the secret may have been rotated just before).
        assert_eq!(p.after_refusal("old").await.as_deref(), Some("new"), "rotated");
        assert_eq!(p.current(), "new");
        // Another session that failed with the old one meanwhile gets the new one, no read.
        assert_eq!(p.after_refusal("old").await.as_deref(), Some("new"));
        // The new one refused too, within REREAD_EVERY: no read, nothing else to try.
        assert_eq!(p.after_refusal("new").await, None);
        assert_eq!(*source.1.lock().unwrap(), 2);
        *p.last_read.lock().unwrap() = Some(Instant::now() - REREAD_EVERY);
        assert_eq!(p.after_refusal("new").await, None, "read again: unchanged");
        assert_eq!(*source.1.lock().unwrap(), 3);
        assert_eq!(Password::fixed("pw").after_refusal("pw").await, None, "a fixed password is never re-read");
        let empty = Arc::new(Rotating(Mutex::new(vec![]), Mutex::new(0)));
        let e = Password::read(empty).await.unwrap_err();
        assert!(e.starts_with("arn:aws:secretsmanager:") && e.ends_with("gone"), "{e}");
        assert_eq!(format!("{:?}", Password::fixed("hunter2")), "Password(<redacted>)");
    }
}
