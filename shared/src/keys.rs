//! The spool bucket's key layout.
//!
//! * `spool/<queue id>.eml` — a message exactly as it will be sent (trace header included).
//! * `records/<queue id>/<recipient>` — a delivery record, written with `If-None-Match: *`
//!   right after the remote server accepted that recipient; its existence means "never send
//!   this message to this recipient again".
//!
//! Both prefixes are named so the deploy template can expire them with lifecycle rules.

/// Prefix of spooled messages.
pub const SPOOL_PREFIX: &str = "spool/";
/// Prefix of per-recipient delivery records.
pub const RECORDS_PREFIX: &str = "records/";

/// Key of the spooled message with this queue id.
pub fn message_key(queue_id: &str) -> String {
    format!("{SPOOL_PREFIX}{queue_id}.eml")
}

/// Key of the delivery record of `recipient` for the message `queue_id`.
///
/// The address is lower-cased (mailbox local parts are case-sensitive in theory, but a
/// record is only a guard against re-sending, so folding errs on the side of not duplicating)
/// and percent-encoded outside a conservative set, so any address maps to one safe key.
pub fn record_key(queue_id: &str, recipient: &str) -> String {
    let mut key = format!("{RECORDS_PREFIX}{queue_id}/");
    for b in recipient.to_lowercase().bytes() {
        if b.is_ascii_alphanumeric() || b"@._+-".contains(&b) {
            key.push(b as char);
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(message_key("01ABC"), "spool/01ABC.eml");
        assert_eq!(record_key("01ABC", "Bob@Example.COM"), "records/01ABC/bob@example.com");
        assert_eq!(record_key("01ABC", "\"a b\"/x@ex.org"), "records/01ABC/%22a%20b%22%2Fx@ex.org");
        assert_eq!(record_key("Q", "jörg@ex.de"), "records/Q/j%C3%B6rg@ex.de");
    }
}
