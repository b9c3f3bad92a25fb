//! The relay recipient table (`INGRESS_RECIPIENTS_FILE`): who exists in the relay domains.
//!
//! One address or `@domain` per line; `#` starts a comment (whole-line or after an entry);
//! blank lines are ignored. When the table is set, [`super::Policy::check_rcpt`] answers
//! `550 5.1.1 ... User unknown in relay recipient table` (Postfix's `relay_recipient_maps`
//! wording) to any recipient of a `RELAY_DOMAINS` domain the table does not hold — at RCPT, so
//! mail to a non-existent address is refused while the client is still connected and no bounce
//! to a possibly forged sender is ever generated (backscatter). A relay domain with no line in
//! the table accepts no one; `@domain` accepts the whole domain. Local parts compare as the file
//! spells them, plus the `+detail` form of a listed address ([`super::addresses`]).

use std::path::Path;

use super::addresses::{AddressSet, LocalCase};

/// The valid recipients of the relay domains.
#[derive(Debug, Clone)]
pub struct RecipientTable(AddressSet);

impl RecipientTable {
    /// Read and parse the file; the error names the variable, the file and the line.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("INGRESS_RECIPIENTS_FILE: {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("INGRESS_RECIPIENTS_FILE: {}: {e}", path.display()))
    }

    /// Parse the file's text; errors say which line is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut set = AddressSet::new(LocalCase::Exact);
        for (n, line) in text.lines().enumerate() {
            let entry = line.split_once('#').map_or(line, |(before, _)| before).trim();
            if entry.is_empty() {
                continue;
            }
            if entry.split_whitespace().nth(1).is_some() {
                return Err(format!("line {}: one address or @domain per line, got {entry:?}", n + 1));
            }
            set.insert(entry).map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(Self(set))
    }

    /// True when the recipient `local@domain` exists (the local part as the client spelled it).
    pub fn accepts(&self, local: &str, domain: &str) -> bool {
        self.0.contains_parts(local, domain)
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_comments_and_blank_lines() {
        let t = RecipientTable::parse(
            "# valid recipients\n\nbob@example.test\n  Carol@Example.Test   # the boss\n@catchall.test\r\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert!(t.accepts("bob", "example.test"));
        assert!(t.accepts("bob+lists", "EXAMPLE.test"));
        assert!(t.accepts("Carol", "example.test"));
        assert!(!t.accepts("carol", "example.test"), "local parts as the file spells them");
        assert!(t.accepts("whoever", "catchall.test"));
        assert!(!t.accepts("alice", "example.test"));
        assert!(RecipientTable::parse("# nobody\n").unwrap().is_empty());
    }

    #[test]
    fn errors_carry_the_line_number() {
        let cases: &[(&str, &str)] = &[
            ("bob@example.test\nbob\n", "line 2: \"bob\" is neither an address"),
            ("\n\nbob@example.test carol@example.test\n", "line 3: one address or @domain per line"),
            ("bob@exa mple.test\n", "line 1: one address"),
            ("ok@example.test\n@\n", "line 2: \"@\": \"\" is not a valid domain"),
            ("x@-bad.test", "line 1: \"x@-bad.test\": \"-bad.test\" is not a valid domain"),
        ];
        for (text, want) in cases {
            let e = RecipientTable::parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn load_names_the_variable_and_the_file() {
        let e = RecipientTable::load(Path::new("/nonexistent/recipients")).unwrap_err();
        assert!(e.starts_with("INGRESS_RECIPIENTS_FILE: /nonexistent/recipients: "), "{e}");
        let dir = std::env::temp_dir().join(format!("recipients-test-{}", std::process::id()));
        std::fs::write(&dir, "bob@example.test\nnot an address\n").unwrap();
        let e = RecipientTable::load(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(e.contains(": line 2: "), "{e}");
    }
}
