//! A set of `local@domain` and `@domain` entries, and how an address is looked up in it.
//!
//! Both tables the ingress keeps are such sets: the relay recipient table
//! (`INGRESS_RECIPIENTS_FILE`, [`super::recipients`]) and each user's sender list (the third
//! field of an `INGRESS_AUTH_FILE` line, [`super::senders`]). A lookup tries, in order, as
//! Postfix's table lookups with `recipient_delimiter = +` do:
//!
//! 1. the address itself (`bob+news@example.org`),
//! 2. the address without its `+detail` (`bob@example.org`), when the part before the first `+`
//!    is not empty,
//! 3. the whole domain (`@example.org`).
//!
//! Domains always compare case-insensitively (and without a trailing dot). Local parts compare
//! as the set says: exactly as spelled for recipients (RFC 5321 §2.4: only the receiving host
//! may interpret a local part, and a mailbox server may well distinguish `Bob` from `bob`), or
//! case-insensitively for sender lists (see [`super::senders`]).

use std::collections::HashSet;
use std::fmt;

use super::valid_domain;

/// How local parts compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalCase {
    /// Exactly as spelled.
    Exact,
    /// Case-insensitively (Unicode lower case).
    Fold,
}

/// `local@domain` and `@domain` entries.
#[derive(Clone)]
pub struct AddressSet {
    case: LocalCase,
    /// `local@domain`, the domain lower-cased, the local part folded when `case` says so.
    addresses: HashSet<String>,
    /// Lower-cased domains whose every address is in the set.
    domains: HashSet<String>,
}

impl AddressSet {
    pub fn new(case: LocalCase) -> Self {
        Self { case, addresses: HashSet::new(), domains: HashSet::new() }
    }

    /// Add one entry: `local@domain`, or `@domain` for the whole domain. The error says what is
    /// wrong with it (the caller adds where it was).
    pub fn insert(&mut self, entry: &str) -> Result<(), String> {
        let (local, domain) =
            entry.rsplit_once('@').ok_or_else(|| format!("{entry:?} is neither an address nor an @domain entry"))?;
        let domain = normal_domain(domain);
        if !valid_domain(&domain) {
            return Err(format!("{entry:?}: {domain:?} is not a valid domain"));
        }
        if local.is_empty() {
            self.domains.insert(domain);
            return Ok(());
        }
        if local.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>') {
            return Err(format!("{entry:?}: the local part holds a space, a control character or <>"));
        }
        self.addresses.insert(format!("{}@{domain}", self.fold(local)));
        Ok(())
    }

    /// Entries held (addresses and domains).
    pub fn len(&self) -> usize {
        self.addresses.len() + self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `address` (`local@domain`) is in the set: itself, without its `+detail`, or
    /// through its domain. An address without `@` is in no set.
    pub fn contains(&self, address: &str) -> bool {
        let Some((local, domain)) = address.rsplit_once('@') else { return false };
        self.contains_parts(local, domain)
    }

    /// [`Self::contains`] for an address already split (the local part as the client gave it).
    pub fn contains_parts(&self, local: &str, domain: &str) -> bool {
        if local.is_empty() {
            return false;
        }
        let domain = normal_domain(domain);
        let local = self.fold(local);
        let has = |l: &str| self.addresses.contains(&format!("{l}@{domain}"));
        has(&local)
            || local.split_once('+').is_some_and(|(base, _)| !base.is_empty() && has(base))
            || self.domains.contains(&domain)
    }

    fn fold(&self, local: &str) -> String {
        match self.case {
            LocalCase::Exact => local.to_string(),
            LocalCase::Fold => local.to_lowercase(),
        }
    }
}

/// Only the size: the entries are people's addresses, not something logs need.
impl fmt::Debug for AddressSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddressSet({} entries)", self.len())
    }
}

/// A domain as compared: lower case, no trailing dot.
fn normal_domain(domain: &str) -> String {
    domain.trim_end_matches('.').to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(case: LocalCase, entries: &[&str]) -> AddressSet {
        let mut s = AddressSet::new(case);
        for e in entries {
            s.insert(e).unwrap();
        }
        s
    }

    #[test]
    fn lookup_table() {
        let exact =
            set(LocalCase::Exact, &["bob@Example.TEST", "Carol@example.test", "@catchall.test", "dan+x@example.test"]);
        let fold = set(LocalCase::Fold, &["bob@Example.TEST", "Carol@example.test", "@catchall.test"]);
        let cases: &[(&str, bool, bool)] = &[
            // (address, in the exact set, in the folded set)
            ("bob@example.test", true, true),
            ("bob@EXAMPLE.test.", true, true),
            ("Bob@example.test", false, true),
            ("carol@example.test", false, true),
            ("Carol@example.test", true, true),
            ("bob+news@example.test", true, true),
            ("bob+@example.test", true, true),
            ("bob+a+b@example.test", true, true),
            ("+bob@example.test", false, false),
            ("bobby@example.test", false, false),
            ("dan+x@example.test", true, false),
            ("dan@example.test", false, false),
            ("dan+y@example.test", false, false),
            ("anyone@catchall.test", true, true),
            ("anyone+x@CatchAll.test", true, true),
            ("bob@other.test", false, false),
            ("bob", false, false),
            ("@example.test", false, false),
            ("", false, false),
        ];
        for (addr, in_exact, in_fold) in cases {
            assert_eq!(exact.contains(addr), *in_exact, "exact {addr}");
            assert_eq!(fold.contains(addr), *in_fold, "fold {addr}");
        }
        assert_eq!(exact.len(), 4);
    }

    #[test]
    fn bad_entries_say_why() {
        let mut s = AddressSet::new(LocalCase::Exact);
        assert!(s.insert("bob").unwrap_err().contains("neither an address"));
        assert!(s.insert("bob@").unwrap_err().contains("not a valid domain"));
        assert!(s.insert("@bad_domain.test").unwrap_err().contains("not a valid domain"));
        assert!(s.insert("b\tob@example.test").unwrap_err().contains("local part"));
        assert!(s.insert("<bob>@example.test").unwrap_err().contains("local part"));
        assert!(s.is_empty());
    }
}
