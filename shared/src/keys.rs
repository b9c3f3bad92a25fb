//! The spool bucket's key layout.
//!
//! * `spool/<queue id>.eml` — a message exactly as it will be sent (trace header included).
//!   The only job of a message deletes it when it is done (the free completion marker); the
//!   bucket is versioned, so the deleted message stays readable as a noncurrent version (for
//!   `relayctl show` / `trace`) until the lifecycle rules expire it.
//! * `state/<queue id>/<domain>.json` — the state of the job for that destination
//!   (`shared::state`), written by the relay only when something other than a first-attempt
//!   completion happens, and by `relayctl cancel` / `retry`.
//! * `records/<queue id>/<recipient>` — legacy (schema-1 jobs) delivery records: still checked
//!   for v1 jobs, no longer written.
//! * `mta-sts/<domain>.json` — the relay's cached MTA-STS policy of a recipient domain (RFC 8461
//!   §3.3), so that it survives a cold start; overwritten when the domain's policy changes.
//!
//! Every prefix is named so the deploy template can expire it with lifecycle rules.

/// Prefix of spooled messages.
pub const SPOOL_PREFIX: &str = "spool/";
/// Prefix of per-recipient delivery records (legacy, v1 jobs).
pub const RECORDS_PREFIX: &str = "records/";
/// Prefix of per-job state objects.
pub const STATE_PREFIX: &str = "state/";

/// Prefix of cached MTA-STS policies.
pub const MTA_STS_PREFIX: &str = "mta-sts/";

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
    push_encoded(&mut key, recipient);
    key
}

/// The folder of every state object of the message `queue_id` (for listing).
pub fn state_prefix(queue_id: &str) -> String {
    format!("{STATE_PREFIX}{queue_id}/")
}

/// Key of the state object of the job of `queue_id` for `domain` (lower-cased and encoded
/// like a record key, so an internationalised domain maps to one safe key).
pub fn state_key(queue_id: &str, domain: &str) -> String {
    let mut key = state_prefix(queue_id);
    push_encoded(&mut key, domain);
    key.push_str(".json");
    key
}

/// Key of the cached MTA-STS policy of `domain` (lower-cased, encoded like [`record_key`]).
pub fn mta_sts_key(domain: &str) -> String {
    let mut key = MTA_STS_PREFIX.to_string();
    push_encoded(&mut key, domain.trim_end_matches('.'));
    key.push_str(".json");
    key
}

/// Lower-case `text` and percent-encode it outside a conservative set of key characters.
fn push_encoded(key: &mut String, text: &str) {
    for b in text.to_lowercase().bytes() {
        if b.is_ascii_alphanumeric() || b"@._+-".contains(&b) {
            key.push(b as char);
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
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
        assert_eq!(state_key("01ABC", "Example.NET"), "state/01ABC/example.net.json");
        assert_eq!(state_key("Q", "bücher.de"), "state/Q/b%C3%BCcher.de.json");
        assert!(state_key("Q", "x").starts_with(&state_prefix("Q")));
        assert_eq!(mta_sts_key("Example.COM."), "mta-sts/example.com.json");
        assert_eq!(mta_sts_key("bücher.de"), "mta-sts/b%C3%BCcher.de.json");
    }
}
