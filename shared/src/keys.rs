//! The spool bucket's key layout.
//!
//! * `spool/<hh>/<queue id>.eml` — a message exactly as it will be sent (trace header included),
//!   `hh` the first byte of SHA-256(queue id) in hex ([`message_key`]). The only job of a message
//!   deletes it when it is done (the free completion marker); the bucket is versioned, so the
//!   deleted message stays readable as a noncurrent version (for `relayctl show` / `trace`)
//!   until the lifecycle rules expire it. Queue ids are ULIDs, which start with their time: keyed
//!   by queue id alone (`spool/<queue id>.eml`, the layout before, [`legacy_message_key`]) every
//!   new message lands at the same end of the key space, the one pattern S3's partitioning
//!   cannot spread. Under 256 hashed folders writes spread evenly, and within a folder keys
//!   still sort by time ([`message_folders`]). A job carries its message's key, so jobs queued
//!   before an upgrade still find their message; readers that start from a queue id try
//!   [`message_keys`] in order.
//! * `state/<queue id>/<domain>.json` — the state of the job for that destination
//!   (`shared::state`), written by the relay only when something other than a first-attempt
//!   completion happens, and by `relayctl cancel` / `retry`.
//! * `records/<queue id>/<recipient>` — legacy (schema-1 jobs) delivery records: still checked
//!   for v1 jobs, no longer written.
//! * `mta-sts/<domain>.json` — the relay's cached MTA-STS policy of a recipient domain (RFC 8461
//!   §3.3), so that it survives a cold start; overwritten when the domain's policy changes.
//!
//! Every prefix is named so the deploy template can expire it with lifecycle rules.

use sha2::{Digest, Sha256};

/// Prefix of spooled messages.
pub const SPOOL_PREFIX: &str = "spool/";
/// Prefix of per-recipient delivery records (legacy, v1 jobs).
pub const RECORDS_PREFIX: &str = "records/";
/// Prefix of per-job state objects.
pub const STATE_PREFIX: &str = "state/";

/// Prefix of cached MTA-STS policies.
pub const MTA_STS_PREFIX: &str = "mta-sts/";

/// Key of the spooled message with this queue id: `spool/<hh>/<queue id>.eml`, `hh` the first
/// byte of SHA-256 of the queue id, in lower-case hex (any language can compute it).
pub fn message_key(queue_id: &str) -> String {
    let hash = Sha256::digest(queue_id.as_bytes());
    format!("{SPOOL_PREFIX}{:02x}/{queue_id}.eml", hash[0])
}

/// Key of a message stored before the hashed layout (`spool/<queue id>.eml`).
pub fn legacy_message_key(queue_id: &str) -> String {
    format!("{SPOOL_PREFIX}{queue_id}.eml")
}

/// Every key the message `queue_id` may be stored under, the current layout first.
pub fn message_keys(queue_id: &str) -> [String; 2] {
    [message_key(queue_id), legacy_message_key(queue_id)]
}

/// The queue id of a message key of either layout; `None` for any other key.
pub fn queue_id_of(key: &str) -> Option<&str> {
    let name = key.strip_prefix(SPOOL_PREFIX)?.strip_suffix(".eml")?;
    match name.split_once('/') {
        None => Some(name),
        Some((_, id)) if message_key(id) == key => Some(id),
        Some(_) => None,
    }
}

/// The 256 folders of the current layout (`spool/00/` … `spool/ff/`); within each, keys sort by
/// queue id, hence by time. Legacy keys are the objects directly under [`SPOOL_PREFIX`].
pub fn message_folders() -> impl Iterator<Item = String> {
    (0..=255u8).map(|b| format!("{SPOOL_PREFIX}{b:02x}/"))
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
        assert_eq!(message_key("01JD0000000000000000000000"), "spool/db/01JD0000000000000000000000.eml");
        assert_eq!(message_key("01ABC"), "spool/76/01ABC.eml");
        assert_eq!(message_keys("Q"), ["spool/4a/Q.eml".to_string(), "spool/Q.eml".to_string()]);
        assert_eq!(record_key("01ABC", "Bob@Example.COM"), "records/01ABC/bob@example.com");
        assert_eq!(record_key("01ABC", "\"a b\"/x@ex.org"), "records/01ABC/%22a%20b%22%2Fx@ex.org");
        assert_eq!(record_key("Q", "jörg@ex.de"), "records/Q/j%C3%B6rg@ex.de");
        assert_eq!(state_key("01ABC", "Example.NET"), "state/01ABC/example.net.json");
        assert_eq!(state_key("Q", "bücher.de"), "state/Q/b%C3%BCcher.de.json");
        assert!(state_key("Q", "x").starts_with(&state_prefix("Q")));
        assert_eq!(mta_sts_key("Example.COM."), "mta-sts/example.com.json");
        assert_eq!(mta_sts_key("bücher.de"), "mta-sts/b%C3%BCcher.de.json");
    }

    #[test]
    fn both_layouts_map_back_to_the_queue_id() {
        for id in ["01JD0000000000000000000000", "Q"] {
            for key in message_keys(id) {
                assert_eq!(queue_id_of(&key), Some(id), "{key}");
            }
        }
        for other in ["spool/00/01ABC.eml", "spool/76/01ABC.json", "state/01ABC/x.json", "spool/7/01ABC.eml"] {
            assert_eq!(queue_id_of(other), None, "{other}");
        }
        let folders: Vec<String> = message_folders().collect();
        assert_eq!((folders.len(), folders[0].as_str(), folders[255].as_str()), (256, "spool/00/", "spool/ff/"));
        assert!(folders.iter().any(|f| message_key("01ABC").starts_with(f.as_str())));
    }

    #[test]
    fn keys_spread_evenly_over_the_folders() {
        // 25 600 queue ids made one millisecond apart (their time prefixes nearly equal): every
        // folder gets some, none more than twice its share.
        let mut counts = [0u32; 256];
        let start = ulid::Ulid::from_parts(1_700_000_000_000, 0);
        for i in 0..25_600u64 {
            let id = ulid::Ulid::from_parts(start.timestamp_ms() + i, i as u128 * 7919).to_string();
            let key = message_key(&id);
            let folder = u8::from_str_radix(&key[SPOOL_PREFIX.len()..SPOOL_PREFIX.len() + 2], 16).unwrap();
            counts[folder as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 0 && *max < 200, "min {min}, max {max} (mean 100)");
    }
}
