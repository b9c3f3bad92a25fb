//! The header fields a signature covers (`h=`), for the relay's DKIM signatures and the
//! ingress's ARC message signatures alike (RFC 6376 §5.4; RFC 8617 §4.1.2 asks the same of an
//! AMS). Never Received, Return-Path or other trace fields, which change in transit.

/// Signed when present: RFC 6376 §5.4.1, then Message-ID and the MIME fields.
const SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Named once more in `h=` than present (present or not), so that added copies break the signature.
const OVERSIGNED: &[&str] = &["From", "Subject", "To", "Date"];

/// The names for `h=` of a message whose header fields are named `present`, in mail-auth's
/// terms: a name listed once signs every instance the message has (or, absent, one empty
/// instance); listing a present name twice adds one empty instance.
pub fn signed_fields(present: &[&str]) -> Vec<&'static str> {
    let mut h = Vec::new();
    for &name in SIGNED {
        let is_present = present.iter().any(|p| p.eq_ignore_ascii_case(name));
        match (OVERSIGNED.contains(&name), is_present) {
            (true, true) => h.extend([name, name]),
            (true, false) | (false, true) => h.push(name),
            (false, false) => {}
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_fields_are_signed_and_the_oversigned_once_more() {
        let h = signed_fields(&["Received", "from", "To", "Message-ID", "X-Mailer", "List-Unsubscribe"]);
        assert_eq!(h, ["From", "From", "Subject", "Date", "To", "To", "List-Unsubscribe", "Message-ID"]);
        assert_eq!(signed_fields(&[]), ["From", "Subject", "Date", "To"], "absent ones are signed empty");
    }
}
