//! Sender ownership: which addresses an authenticated user may send as.
//!
//! An `INGRESS_AUTH_FILE` line may carry a third field, `user:<PHC hash>:<senders>`, a comma list
//! of addresses and `@domain` entries (Postfix's `smtpd_sender_login_maps`, seen from the user's
//! side). For a user with a list:
//!
//! * `MAIL FROM` must be owned, else `553 5.7.1 <addr>: Sender address rejected: not owned by
//!   user <user>` (Postfix's `reject_sender_login_mismatch` reply). The null sender `<>` is
//!   allowed, as today: it is what bounces and auto-replies use, and it names nobody.
//! * at the end of the message, **every** address of **every** `From:` header field must be owned,
//!   else `550 5.7.1`. A message without a `From:` field, or whose `From:` holds no parseable
//!   address (a bare name, an empty group), is refused too: the relay signs mail with the keys
//!   of its `From:` domain, so a user restricted to their own addresses must not be able to send
//!   a message whose author nobody checked. This applies whatever the envelope sender, `<>`
//!   included.
//!
//! Users without a list, and unauthenticated clients, are not checked (as before).
//!
//! Lookups are case-insensitive in the local part as well as the domain, as Postfix's table
//! lookups are: ownership is an authorisation check on a mailbox name a user typed into a mail
//! client, and `Alice@` and `alice@` are the same mailbox at every provider a user would send
//! as. A listed address also owns its `+detail` forms (`alice+news@` for `alice@`).
//!
//! The `From:` check is a pure function over the message's header section, parsed by
//! mail-parser; the rest of the message is never looked at.

use mail_parser::{HeaderName, HeaderValue, MessageParser};
use shared::Reply;

use super::addresses::{AddressSet, LocalCase};
use crate::session::replies;

/// The addresses one user may send as.
#[derive(Debug, Clone)]
pub struct SenderList(AddressSet);

impl SenderList {
    /// A comma list of addresses and `@domain` entries; at least one.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut set = AddressSet::new(LocalCase::Fold);
        for entry in list.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!("empty entry in the sender list {list:?}"));
            }
            set.insert(entry)?;
        }
        Ok(Self(set))
    }

    /// True when the user may send as `address`.
    pub fn owns(&self, address: &str) -> bool {
        self.0.contains(address)
    }
}

/// `MAIL FROM:<address>` from `user` (`""` is the null sender).
pub fn check_mail_from(user: &str, senders: &SenderList, address: &str) -> Result<(), Reply> {
    if address.is_empty() || senders.owns(address) { Ok(()) } else { Err(replies::sender_not_owned(address, user)) }
}

/// The `From:` header fields of a message from `user`, given its header section (the bytes up
/// to, and optionally including, the empty line that ends it).
pub fn check_from_header(user: &str, senders: &SenderList, header: &[u8]) -> Result<(), Reply> {
    // Only From: is parsed as addresses; every other field stays raw (cheap: a message may carry
    // fifty Received: fields).
    let parser = MessageParser::new().header_address(HeaderName::From);
    let message = parser.parse_headers(header).ok_or_else(|| replies::from_missing(user))?;
    let mut fields = message.header_values(HeaderName::From).peekable();
    if fields.peek().is_none() {
        return Err(replies::from_missing(user));
    }
    for field in fields {
        let HeaderValue::Address(list) = field else { return Err(replies::from_missing(user)) };
        let mut seen = 0;
        for addr in list.iter() {
            let address = addr.address.as_deref().unwrap_or_default();
            if !address.contains('@') {
                return Err(replies::from_missing(user));
            }
            if !senders.owns(address) {
                return Err(replies::from_not_owned(address, user));
            }
            seen += 1;
        }
        if seen == 0 {
            return Err(replies::from_missing(user));
        }
    }
    Ok(())
}

/// The header section of a whole message: up to and including the empty line that ends it, or
/// everything when there is none. `message` has CRLF line endings (the ingress normalises them).
pub fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &message[..2];
    }
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(i) => &message[..i + 4],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> SenderList {
        SenderList::parse("alice@example.org, Alice.Smith@Example.ORG,@alice.test").unwrap()
    }

    #[test]
    fn sender_list_parsing() {
        assert!(alice().owns("alice@example.org"));
        assert!(SenderList::parse("").unwrap_err().contains("empty entry"));
        assert!(SenderList::parse("a@example.org,,b@example.org").unwrap_err().contains("empty entry"));
        assert!(SenderList::parse("a@example.org,bob").unwrap_err().contains("\"bob\""));
    }

    #[test]
    fn mail_from_table() {
        let s = alice();
        let cases: &[(&str, Option<&str>)] = &[
            ("alice@example.org", None),
            ("ALICE@EXAMPLE.ORG", None),
            ("alice.smith@example.org", None),
            ("alice+lists@example.org", None),
            ("anything@alice.test", None),
            ("anything@ALICE.test.", None),
            ("", None),
            ("bob@example.org", Some("553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice")),
            ("alice@sub.alice.test", Some("553 5.7.1 <alice@sub.alice.test>: Sender")),
            ("alice@example.org.evil.test", Some("553 5.7.1")),
            ("alice", Some("553 5.7.1 <alice>:")),
        ];
        for (addr, want) in cases {
            let got = check_mail_from("alice", &s, addr);
            match want {
                None => assert!(got.is_ok(), "{addr}: {got:?}"),
                Some(w) => {
                    let r = got.unwrap_err().to_string();
                    assert!(r.starts_with(w), "{addr}: {r}");
                }
            }
        }
    }

    #[test]
    fn from_header_table() {
        let s = alice();
        let owned = Ok(());
        let not_owned =
            |a: &str| Err(format!("550 5.7.1 <{a}>: From: header address rejected: not owned by user alice"));
        let missing =
            Err("550 5.7.1 No From: header address; user alice may send only as its own addresses".to_string());
        let cases: Vec<(&str, Result<(), String>)> = vec![
            ("From: alice@example.org\r\n\r\n", owned.clone()),
            ("From: Alice <ALICE@example.org>\r\nSubject: x\r\n\r\n", owned.clone()),
            ("From: \"Alice\" <alice+x@example.org>, <boss@alice.test>\r\n\r\n", owned.clone()),
            ("from:\r\n  =?utf-8?q?Al=C3=AFce?= <alice@example.org>\r\n\r\n", owned.clone()),
            ("Team: alice@example.org, x@alice.test;\r\n", missing.clone()),
            ("From: Team: alice@example.org, x@alice.test;\r\n", owned.clone()),
            ("Subject: no body\r\nFrom: alice@example.org\r\n", owned.clone()),
            ("From: bob@example.org\r\n\r\n", not_owned("bob@example.org")),
            ("From: alice@example.org, bob@example.org\r\n\r\n", not_owned("bob@example.org")),
            ("From: \"alice@example.org\" <bob@example.org>\r\n\r\n", not_owned("bob@example.org")),
            ("From: alice@example.org\r\nFrom: eve@evil.test\r\n\r\n", not_owned("eve@evil.test")),
            ("From: Team: alice@example.org, eve@evil.test;\r\n", not_owned("eve@evil.test")),
            ("Subject: no From\r\n\r\n", missing.clone()),
            ("From: Alice Without Address\r\n\r\n", missing.clone()),
            ("From: undisclosed:;\r\n\r\n", missing.clone()),
            ("From:\r\n\r\n", missing.clone()),
            ("\r\n", missing.clone()),
            ("", missing.clone()),
        ];
        for (header, want) in cases {
            let got = check_from_header("alice", &s, header.as_bytes()).map_err(|r| r.one_line());
            assert_eq!(got, want, "{header:?}");
        }
    }

    #[test]
    fn from_in_the_body_is_not_a_header() {
        let msg = b"Received: from x\r\n\tby y\r\nFrom: bob@example.org\r\n\r\nFrom: alice@example.org\r\n";
        let header = header_section(msg);
        assert!(header.ends_with(b"bob@example.org\r\n\r\n"));
        let r = check_from_header("alice", &alice(), header).unwrap_err();
        assert_eq!(r.code, 550);
    }

    #[test]
    fn header_section_bounds() {
        assert_eq!(header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\n"), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_section(b"\r\nFrom: a@b\r\n"), b"\r\n");
    }
}
