//! SMTP AUTH credentials: `user:<PHC hash>` or `user:<PHC hash>:<senders>` lines from
//! `INGRESS_AUTH_FILE` (argon2 or bcrypt; `#` comments). The optional third field is the comma
//! list of addresses and `@domain`s the user may send as ([`crate::policy::senders`]); PHC
//! strings never contain `:`, so the fields split unambiguously.
//!
//! Hash checks are deliberately slow, so they run on the blocking pool, never on the reactor.
//! The file is re-read on SIGHUP ([`crate::policy::tables`]).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordVerifier};

use crate::policy::senders::SenderList;

#[derive(Default)]
pub struct AuthDb {
    users: HashMap<String, Account>,
}

struct Account {
    hash: String,
    /// `None`: the user may send as anyone (no third field).
    senders: Option<SenderList>,
}

impl fmt::Debug for AuthDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthDb({} users)", self.users.len())
    }
}

impl AuthDb {
    /// Read the file; errors say which line is wrong.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("INGRESS_AUTH_FILE: {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("INGRESS_AUTH_FILE: {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, rest) =
                line.split_once(':').ok_or_else(|| format!("line {}: expected user:hash[:senders]", n + 1))?;
            let (hash, senders) = match rest.split_once(':') {
                Some((hash, list)) => (hash, Some(list)),
                None => (rest, None),
            };
            if user.is_empty() {
                return Err(format!("line {}: empty user name", n + 1));
            }
            if !(hash.starts_with("$argon2") || hash.starts_with("$2")) {
                return Err(format!("line {}: hash for {user} is not argon2 or bcrypt PHC", n + 1));
            }
            if hash.starts_with("$argon2") {
                PasswordHash::new(hash).map_err(|e| format!("line {}: {e}", n + 1))?;
            }
            let senders = senders
                .map(SenderList::parse)
                .transpose()
                .map_err(|e| format!("line {}: senders of {user}: {e}", n + 1))?;
            let account = Account { hash: hash.to_string(), senders };
            if users.insert(user.to_string(), account).is_some() {
                return Err(format!("line {}: {user} is listed twice", n + 1));
            }
        }
        Ok(Self { users })
    }

    /// Users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The addresses `user` may send as, when the file restricts them.
    pub fn senders(&self, user: &str) -> Option<&SenderList> {
        self.users.get(user).and_then(|a| a.senders.as_ref())
    }

    /// True when `password` is right for `user`.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user).map(|a| a.hash.as_str()) else { return false };
        if hash.starts_with("$2") {
            return bcrypt::verify(password, hash).unwrap_or(false);
        }
        PasswordHash::new(hash)
            .is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    #[test]
    fn verifies_argon2_and_bcrypt() {
        let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        let a = argon2::Argon2::default().hash_password(b"s3cret", &salt).unwrap().to_string();
        let b = bcrypt::hash("hunter2", 4).unwrap();
        let db = AuthDb::parse(&format!("# users\nalice:{a}\nbob:{b}\n")).unwrap();
        assert!(db.verify("alice", "s3cret"));
        assert!(!db.verify("alice", "wrong"));
        assert!(db.verify("bob", "hunter2"));
        assert!(!db.verify("carol", "hunter2"));
    }

    #[test]
    fn rejects_bad_lines() {
        let b = "$2b$04$abcdefghijklmnopqrstuu5Ux4u2r9R0oQm7R4bC4a1KX2cJHjM2y";
        let cases = [
            ("alice".to_string(), "line 1: expected user:hash"),
            ("alice:plaintext".into(), "line 1: hash for alice is not argon2"),
            (format!("# c\n:{b}"), "line 2: empty user name"),
            (format!("alice:{b}\nalice:{b}"), "line 2: alice is listed twice"),
            (format!("alice:{b}:"), "line 1: senders of alice: empty entry"),
            (format!("alice:{b}:alice@example.org,bob"), "line 1: senders of alice: \"bob\" is neither"),
            (format!("alice:{b}:@bad domain"), "line 1: senders of alice: \"@bad domain\""),
        ];
        for (text, want) in cases {
            let e = AuthDb::parse(&text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn sender_lists_are_optional_per_user() {
        let b = bcrypt::hash("pw", 4).unwrap();
        let db = AuthDb::parse(&format!("alice:{b}:alice@example.org, @alice.test\nbob:{b}\n")).unwrap();
        assert_eq!(db.len(), 2);
        let alice = db.senders("alice").expect("alice has a list");
        assert!(alice.owns("alice@example.org") && alice.owns("x@alice.test") && !alice.owns("bob@example.org"));
        assert!(db.senders("bob").is_none(), "no third field: any sender");
        assert!(db.senders("carol").is_none());
        assert!(db.verify("alice", "pw"), "the third field is not part of the hash");
    }
}
