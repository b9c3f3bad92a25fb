//! The files the ingress re-reads on SIGHUP: `INGRESS_AUTH_FILE` (users, passwords, sender
//! lists) and `INGRESS_RECIPIENTS_FILE` (the relay recipient table).
//!
//! [`LiveTables`] holds the current [`Tables`] behind a lock that is only taken to swap or to
//! clone an `Arc`. Each session takes a snapshot when it starts and keeps it to the end (as a
//! Postfix `smtpd` keeps the tables it opened), so a reload never changes the rules in the middle
//! of a transaction and never drops a session; every session that starts after the reload sees
//! the new tables.
//!
//! At start a file that cannot be read or parsed stops the ingress with a message naming its
//! variable. On reload each file is read on its own: one that fails keeps its previous table
//! and logs an error (`event=reload`, `result=failed`), the other is still replaced.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::policy::auth::AuthDb;
use crate::policy::recipients::RecipientTable;

/// One consistent view of both files.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub auth: Option<Arc<AuthDb>>,
    pub recipients: Option<Arc<RecipientTable>>,
}

/// The tables in force, and where to re-read them from.
#[derive(Debug)]
pub struct LiveTables {
    auth_file: Option<PathBuf>,
    recipients_file: Option<PathBuf>,
    current: RwLock<Arc<Tables>>,
}

impl LiveTables {
    /// Load both files (those configured); errors name the variable, the file and the line.
    pub fn load(auth_file: Option<&Path>, recipients_file: Option<&Path>) -> Result<Self, String> {
        let tables = Tables {
            auth: auth_file.map(AuthDb::load).transpose()?.map(Arc::new),
            recipients: recipients_file.map(RecipientTable::load).transpose()?.map(Arc::new),
        };
        if let Some(t) = &tables.recipients {
            tracing::info!(event = "tables", file = "INGRESS_RECIPIENTS_FILE", entries = t.len());
        }
        if let Some(a) = &tables.auth {
            tracing::info!(event = "tables", file = "INGRESS_AUTH_FILE", users = a.len());
        }
        Ok(Self {
            auth_file: auth_file.map(Path::to_path_buf),
            recipients_file: recipients_file.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(tables)),
        })
    }

    /// Tables that never change (tests, benchmarks).
    pub fn fixed(tables: Tables) -> Self {
        Self { auth_file: None, recipients_file: None, current: RwLock::new(Arc::new(tables)) }
    }

    /// The tables a new session uses.
    pub fn current(&self) -> Arc<Tables> {
        self.current.read().expect("tables lock").clone()
    }

    /// Re-read every configured file; a file that fails keeps its old table. Returns how many
    /// files failed (0 when all were replaced).
    pub fn reload(&self) -> usize {
        let mut next = Tables::clone(&self.current());
        let mut failed = 0;
        if let Some(path) = &self.auth_file {
            match AuthDb::load(path) {
                Ok(db) => {
                    tracing::info!(event = "reload", file = "INGRESS_AUTH_FILE", result = "ok", users = db.len());
                    next.auth = Some(Arc::new(db));
                }
                Err(e) => {
                    tracing::error!(event = "reload", file = "INGRESS_AUTH_FILE", result = "failed", kept = "previous table", error = %e);
                    failed += 1;
                }
            }
        }
        if let Some(path) = &self.recipients_file {
            match RecipientTable::load(path) {
                Ok(t) => {
                    tracing::info!(
                        event = "reload",
                        file = "INGRESS_RECIPIENTS_FILE",
                        result = "ok",
                        entries = t.len()
                    );
                    next.recipients = Some(Arc::new(t));
                }
                Err(e) => {
                    tracing::error!(event = "reload", file = "INGRESS_RECIPIENTS_FILE", result = "failed", kept = "previous table", error = %e);
                    failed += 1;
                }
            }
        }
        *self.current.write().expect("tables lock") = Arc::new(next);
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("ingress-tables-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reload_swaps_good_files_and_keeps_tables_of_bad_ones() {
        let dir = TempDir::new("reload");
        let hash = bcrypt::hash("pw", 4).unwrap();
        let auth = dir.write("auth", &format!("alice:{hash}\n"));
        let rcpt = dir.write("rcpt", "bob@example.test\n");
        let live = LiveTables::load(Some(&auth), Some(&rcpt)).unwrap();
        let before = live.current();
        assert!(before.recipients.as_ref().unwrap().accepts("bob", "example.test"));

        // Both files change: both are replaced; the old snapshot is untouched.
        dir.write("auth", &format!("alice:{hash}\ncarol:{hash}:carol@example.org\n"));
        dir.write("rcpt", "carol@example.test\n");
        assert_eq!(live.reload(), 0);
        let after = live.current();
        assert!(after.recipients.as_ref().unwrap().accepts("carol", "example.test"));
        assert!(!after.recipients.as_ref().unwrap().accepts("bob", "example.test"));
        assert_eq!(after.auth.as_ref().unwrap().len(), 2);
        assert!(before.recipients.as_ref().unwrap().accepts("bob", "example.test"), "old sessions keep theirs");

        // A broken recipients file keeps the previous table; the AUTH file still reloads.
        dir.write("rcpt", "dave@example.test\nnot an address\n");
        dir.write("auth", &format!("alice:{hash}\n"));
        assert_eq!(live.reload(), 1);
        let now = live.current();
        assert!(now.recipients.as_ref().unwrap().accepts("carol", "example.test"));
        assert!(!now.recipients.as_ref().unwrap().accepts("dave", "example.test"));
        assert_eq!(now.auth.as_ref().unwrap().len(), 1);

        // A file that disappeared is a failure too (and the recipients file is still broken).
        std::fs::remove_file(&auth).unwrap();
        assert_eq!(live.reload(), 2);
        assert_eq!(live.current().auth.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn load_errors_name_the_variable() {
        let dir = TempDir::new("load");
        let rcpt = dir.write("rcpt", "ok@example.test\n@\n");
        let e = LiveTables::load(None, Some(&rcpt)).unwrap_err();
        assert!(e.starts_with("INGRESS_RECIPIENTS_FILE: ") && e.contains("line 2"), "{e}");
        let auth = dir.write("auth", "alice:plain\n");
        let e = LiveTables::load(Some(&auth), None).unwrap_err();
        assert!(e.starts_with("INGRESS_AUTH_FILE: ") && e.contains("line 1"), "{e}");
        let none = LiveTables::load(None, None).unwrap().current();
        assert!(none.auth.is_none() && none.recipients.is_none());
    }
}
