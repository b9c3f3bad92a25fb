//! Queue ids: the name an operator follows through every log line of one message.
//!
//! A ULID: 26 Crockford base-32 characters, sortable by creation time, unique without
//! coordination between ingress tasks, and safe in S3 keys and SMTP replies.

/// A new, unique queue id.
pub fn new_queue_id() -> String {
    ulid::Ulid::new().to_string()
}

/// True when `s` has the shape of a queue id (used to validate ids read back from jobs).
pub fn is_queue_id(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// When the id was made (Unix seconds): a ULID carries its creation time in its first ten
/// characters. `None` for anything that is not a ULID.
pub fn created_at(id: &str) -> Option<i64> {
    ulid::Ulid::from_string(id).ok().map(|u| (u.timestamp_ms() / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let a = new_queue_id();
        let b = new_queue_id();
        assert_ne!(a, b);
        assert!(is_queue_id(&a), "{a}");
        assert!(!is_queue_id("../etc/passwd"));
        let now = chrono::Utc::now().timestamp();
        assert!((created_at(&a).unwrap() - now).abs() <= 1);
        assert_eq!(created_at("not-a-ulid"), None);
    }
}
