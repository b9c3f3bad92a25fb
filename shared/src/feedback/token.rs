//! The per-message token of the feedback domain: `<queue id>-<mac>`, all lower case, where
//! `mac` is the first 80 bits of HMAC-SHA256 over the queue id (hex). It appears twice on a
//! message of ours: in the return path, `fb-<token>@<FEEDBACK_DOMAIN>` (50 octets of local part,
//! within SMTP's 64), and in the [`REF_HEADER`] field the relay adds before DKIM signing. Lower
//! case because some servers fold the case of the address they bounce to; the check folds too.
//!
//! Verifying needs the key and nothing else: no request, no state. A token that does not verify
//! is not ours, whatever queue id it names.

use std::fmt;

use ring::hmac;

/// The reference header the relay adds to mail of our own (as KumoMTA's `X-KumoRef`), so a
/// complaint that quotes only the headers still names the message.
pub const REF_HEADER: &str = "X-Relay-Ref";

/// The local part's prefix before the token.
pub const LOCAL_PREFIX: &str = "fb-";

/// Bytes of the MAC kept (80 bits).
const MAC_BYTES: usize = 10;

/// What the MAC covers besides the queue id, so a key could never be confused with another use.
const CONTEXT: &[u8] = b"smtp-relay feedback token v1\0";

/// Makes and checks tokens and return paths of one feedback domain.
#[derive(Clone)]
pub struct ReturnPath {
    domain: String,
    key: hmac::Key,
}

impl fmt::Debug for ReturnPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReturnPath({}, key hidden)", self.domain)
    }
}

impl ReturnPath {
    /// `domain` (lower case) with the secret read from the state table.
    pub fn new(domain: &str, secret: &[u8]) -> Self {
        Self { domain: domain.to_ascii_lowercase(), key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn mac(&self, queue_id: &str) -> String {
        let mut data = CONTEXT.to_vec();
        data.extend_from_slice(queue_id.to_ascii_uppercase().as_bytes());
        let tag = hmac::sign(&self.key, &data);
        tag.as_ref()[..MAC_BYTES].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The token of the message `queue_id`.
    pub fn token(&self, queue_id: &str) -> String {
        format!("{}-{}", queue_id.to_ascii_lowercase(), self.mac(queue_id))
    }

    /// The return path (MAIL FROM) of the message `queue_id`.
    pub fn address(&self, queue_id: &str) -> String {
        format!("{LOCAL_PREFIX}{}@{}", self.token(queue_id), self.domain)
    }

    /// The queue id (upper case, as the ingress made it) a token names, if it is ours.
    pub fn verify(&self, token: &str) -> Option<String> {
        let token = token.trim().to_ascii_lowercase();
        let (id, mac) = token.split_once('-')?;
        if !crate::queue_id::is_queue_id(id) || mac.len() != MAC_BYTES * 2 {
            return None;
        }
        let want = self.mac(id);
        // Constant time: how far a guess matched must not show in the time taken.
        let diff = want.bytes().zip(mac.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then(|| id.to_ascii_uppercase())
    }

    /// The queue id a return-path address names, if it is ours (this domain, our prefix, a
    /// token that verifies).
    pub fn verify_address(&self, address: &str) -> Option<String> {
        let (local, domain) = address.trim().trim_matches(['<', '>']).rsplit_once('@')?;
        if !domain.trim_end_matches('.').eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let token = local.get(..LOCAL_PREFIX.len()).filter(|p| p.eq_ignore_ascii_case(LOCAL_PREFIX))?;
        self.verify(&local[token.len()..])
    }

    /// True when `address` is in the feedback domain (ours or not).
    pub fn in_domain(&self, address: &str) -> bool {
        address.rsplit_once('@').is_some_and(|(_, d)| d.trim_end_matches('.').eq_ignore_ascii_case(&self.domain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QID: &str = "01JQUEUEID0000000000000000";

    fn rp() -> ReturnPath {
        ReturnPath::new("Feedback.Example.ORG", &[7u8; 32])
    }

    #[test]
    fn tokens_name_their_message_and_fit_a_local_part() {
        let rp = rp();
        let address = rp.address(QID);
        let (local, domain) = address.rsplit_once('@').unwrap();
        assert_eq!(domain, "feedback.example.org");
        assert!(local.len() <= 64, "{local}");
        assert_eq!(local, local.to_ascii_lowercase());
        assert!(local.starts_with("fb-01jqueueid"));
        assert_eq!(rp.verify(&rp.token(QID)).as_deref(), Some(QID));
        assert_eq!(rp.verify_address(&address).as_deref(), Some(QID));
        assert_eq!(rp.verify_address(&address.to_uppercase()).as_deref(), Some(QID), "case folded in transit");
        assert_eq!(rp.verify_address(&format!("<{address}>")).as_deref(), Some(QID));
        assert_eq!(rp.token(QID), rp.token(&QID.to_lowercase()), "one token per message");
        assert_ne!(rp.token(QID), rp.token("01JQUEUEID0000000000000001"));
    }

    #[test]
    fn tokens_that_are_not_ours_do_not_verify() {
        let rp = rp();
        let good = rp.token(QID);
        let (id, mac) = good.split_once('-').unwrap();
        let other_key = ReturnPath::new("feedback.example.org", &[8u8; 32]);
        let flipped = format!("{id}-{}{}", if mac.starts_with('0') { '1' } else { '0' }, &mac[1..]);
        let cases = [
            other_key.token(QID),                              // another key
            flipped,                                           // one digit changed
            format!("{}-{mac}", "01JQUEUEID0000000000000001"), // the MAC of another message
            format!("{id}-{}", &mac[..19]),                    // too short
            format!("{id}-{mac}0"),                            // too long
            format!("{id}{mac}"),                              // no separator
            format!("../../x-{mac}"),                          // not a queue id
            String::new(),
        ];
        for t in &cases {
            assert_eq!(rp.verify(t), None, "{t:?}");
        }
        for a in [
            format!("fb-{good}@other.example.org"),
            format!("xx-{good}@feedback.example.org"),
            format!("{good}@feedback.example.org"),
            format!("fb-{good}"),
            "postmaster@feedback.example.org".to_string(),
        ] {
            assert_eq!(rp.verify_address(&a), None, "{a}");
        }
        assert!(rp.in_domain("anyone@FEEDBACK.example.org.") && !rp.in_domain("x@example.org"));
        assert!(!format!("{rp:?}").contains("7"), "the key never shows");
    }
}
