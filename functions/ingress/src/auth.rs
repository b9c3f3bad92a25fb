//! SMTP AUTH credentials: `user:<PHC hash>` lines from `INGRESS_AUTH_FILE` (argon2 or bcrypt).
//!
//! Hash checks are deliberately slow, so they run on the blocking pool, never on the reactor.

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordVerifier};

#[derive(Debug, Default)]
pub struct AuthDb {
    users: HashMap<String, String>,
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
            let (user, hash) = line.split_once(':').ok_or_else(|| format!("line {}: expected user:hash", n + 1))?;
            if !(hash.starts_with("$argon2") || hash.starts_with("$2")) {
                return Err(format!("line {}: hash for {user} is not argon2 or bcrypt PHC", n + 1));
            }
            if hash.starts_with("$argon2") {
                PasswordHash::new(hash).map_err(|e| format!("line {}: {e}", n + 1))?;
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Self { users })
    }

    /// True when `password` is right for `user`.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else { return false };
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
        assert!(AuthDb::parse("alice").unwrap_err().contains("line 1"));
        assert!(AuthDb::parse("alice:plaintext").unwrap_err().contains("not argon2"));
    }
}
