//! The feedback domain (`FEEDBACK_DOMAIN`): where reports about our mail come back.
//!
//! The relay sends mail of our own with a per-message return path in that domain (VERP,
//! [`token::ReturnPath`]) and a reference header carrying the same token, so an asynchronous
//! bounce (sent to the return path) and a complaint (which quotes the headers) name the message
//! they are about; the ingress accepts mail for the domain and verifies the token. The token is
//! the queue id with an HMAC of it, under a key both programs read at start from the state table
//! ([`key`]), so nobody can make up a token for a message of ours — and a forged report
//! suppresses nobody.

use crate::config::{ConfigError, Reader, err, valid_hostname};
use crate::table::StateTable;

pub mod key;
pub mod token;

pub use token::{REF_HEADER, ReturnPath};

/// `FEEDBACK_DOMAIN`, both programs: lower case, no trailing dot.
pub fn read_domain(r: &Reader) -> Result<Option<String>, ConfigError> {
    const VAR: &str = "FEEDBACK_DOMAIN";
    let Some(v) = r.opt(VAR) else { return Ok(None) };
    let d = v.trim_end_matches('.').to_ascii_lowercase();
    let hyphen_edge = d.split('.').any(|l| l.starts_with('-') || l.ends_with('-'));
    if !valid_hostname(&d) || !d.contains('.') || hyphen_edge {
        return Err(err(VAR, format!("{v:?} is not a domain name (e.g. feedback.example.org)")));
    }
    Ok(Some(d))
}

/// The return paths of `domain` with the key from `table`, read (or made) at start; `None` when
/// `FEEDBACK_DOMAIN` is unset, or `STATE_TABLE` is (no key: the feedback domain is off, and a
/// warning says so).
pub async fn return_path(
    table: Option<&StateTable>,
    domain: Option<&str>,
    now: i64,
) -> Result<Option<ReturnPath>, String> {
    match (table, domain) {
        (Some(t), Some(d)) => Ok(Some(ReturnPath::new(d, &key::load_or_create(t, now).await?))),
        (None, Some(d)) => {
            tracing::warn!(
                event = "feedback_domain",
                domain = d,
                "FEEDBACK_DOMAIN needs STATE_TABLE (its key lives there): off"
            );
            Ok(None)
        }
        (_, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vars_with_spool;

    #[test]
    fn the_domain_variable() {
        let read = |v: &str| read_domain(&Reader(&vars_with_spool(&[("FEEDBACK_DOMAIN", v)])));
        assert_eq!(read("Feedback.Example.ORG.").unwrap().as_deref(), Some("feedback.example.org"));
        assert_eq!(read("").unwrap(), None);
        for bad in ["localhost", "bad domain.org", "-x.example.org", "a@b.org"] {
            assert_eq!(read(bad).unwrap_err().var, "FEEDBACK_DOMAIN", "{bad}");
        }
    }
}
