//! The envelope as S3 user metadata on the message object, so `relayctl trace` can show a
//! message nobody has touched yet, or one completed on its first attempt (which leaves no state
//! object), without any extra request on the delivery path.
//!
//! Keys (S3 adds `x-amz-meta-`): `sender`, `received` (Unix seconds), `size` (when known when
//! the object is created), `jobs`, `rcpts`
//! (comma-separated) and, when the list did not fit, `rcpts-omitted` (how many were left out).
//! S3 allows 2 KB of user metadata (keys and values); [`encode`] stays under
//! [`MAX_METADATA_BYTES`] by truncating the recipient list. Values are percent-encoded outside
//! printable ASCII (and `%`, `,`), since header values cannot carry UTF-8 addresses.

use std::collections::HashMap;

/// Budget for all user metadata, keys with their `x-amz-meta-` prefix included (S3: 2048).
pub const MAX_METADATA_BYTES: usize = 2000;

const PREFIX_LEN: usize = "x-amz-meta-".len();

/// What the metadata says about a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageMeta {
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// When the message was accepted (Unix seconds).
    pub received: i64,
    pub size: u64,
    /// How many jobs were queued for it.
    pub jobs: u32,
    /// Recipients (all jobs), as many as fit.
    pub recipients: Vec<String>,
    /// Recipients left out of `recipients` for lack of room.
    pub omitted: usize,
}

/// Percent-encode outside printable ASCII, and `%` and `,` (the list separator).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' && b != b',' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn dec(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The metadata pairs for `meta` (its `omitted` is recomputed), within [`MAX_METADATA_BYTES`].
pub fn encode(meta: &MessageMeta) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("sender".to_string(), enc(&meta.sender)),
        ("received".to_string(), meta.received.to_string()),
        ("jobs".to_string(), meta.jobs.to_string()),
    ];
    // A streamed message's metadata is written before its size is known (0: left out).
    if meta.size > 0 {
        pairs.push(("size".to_string(), meta.size.to_string()));
    }
    let size = |pairs: &[(String, String)]| pairs.iter().map(|(k, v)| PREFIX_LEN + k.len() + v.len()).sum::<usize>();
    let total = meta.recipients.len() + meta.omitted;
    // Room for the list, keeping space for an `rcpts-omitted` pair with the largest count.
    let reserve = PREFIX_LEN + "rcpts-omitted".len() + total.to_string().len();
    let room = MAX_METADATA_BYTES.saturating_sub(size(&pairs) + PREFIX_LEN + "rcpts".len() + reserve);
    let mut list = String::new();
    let mut kept = 0;
    for r in &meta.recipients {
        let e = enc(r);
        let extra = e.len() + usize::from(!list.is_empty());
        if list.len() + extra > room {
            break;
        }
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(&e);
        kept += 1;
    }
    pairs.push(("rcpts".to_string(), list));
    if kept < total {
        pairs.push(("rcpts-omitted".to_string(), (total - kept).to_string()));
    }
    pairs
}

/// Read metadata back (keys as S3 returns them, without the prefix); `None` when the object
/// carries none of ours (written before this schema, or by something else).
pub fn decode(map: &HashMap<String, String>) -> Option<MessageMeta> {
    let get = |k: &str| map.get(k).map(String::as_str);
    let received = get("received")?.parse().ok()?;
    Some(MessageMeta {
        sender: dec(get("sender").unwrap_or_default()),
        received,
        size: get("size").and_then(|v| v.parse().ok()).unwrap_or_default(),
        jobs: get("jobs").and_then(|v| v.parse().ok()).unwrap_or_default(),
        recipients: get("rcpts").unwrap_or_default().split(',').filter(|s| !s.is_empty()).map(dec).collect(),
        omitted: get("rcpts-omitted").and_then(|v| v.parse().ok()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(rcpts: Vec<String>) -> MessageMeta {
        MessageMeta {
            sender: "alice@example.org".into(),
            received: 1_800_000_000,
            size: 42,
            jobs: 2,
            recipients: rcpts,
            omitted: 0,
        }
    }

    fn round_trip(m: &MessageMeta) -> MessageMeta {
        decode(&encode(m).into_iter().collect()).unwrap()
    }

    #[test]
    fn round_trips_odd_addresses() {
        let m = MessageMeta {
            sender: "jörg@bücher.de".into(),
            ..meta(vec!["\"a,b\"@x.test".into(), "100%@y.test".into(), "plain@z.test".into()])
        };
        let pairs = encode(&m);
        assert!(pairs.iter().all(|(_, v)| v.bytes().all(|b| (0x21..=0x7e).contains(&b) || v.is_empty())), "{pairs:?}");
        assert_eq!(round_trip(&m), m);
        assert_eq!(round_trip(&MessageMeta { sender: String::new(), ..meta(vec![]) }).sender, "");
    }

    #[test]
    fn long_lists_are_truncated_with_a_count_and_stay_under_the_limit() {
        let rcpts: Vec<String> = (0..500).map(|i| format!("recipient-number-{i}@example.test")).collect();
        let pairs = encode(&meta(rcpts.clone()));
        let bytes: usize = pairs.iter().map(|(k, v)| PREFIX_LEN + k.len() + v.len()).sum();
        assert!(bytes <= MAX_METADATA_BYTES, "{bytes}");
        let back = round_trip(&meta(rcpts.clone()));
        assert!(back.recipients.len() > 10 && back.recipients.len() < 500);
        assert_eq!(back.recipients.len() + back.omitted, 500);
        assert_eq!(back.recipients[..], rcpts[..back.recipients.len()]);
        assert_eq!(round_trip(&meta(rcpts[..3].to_vec())).omitted, 0, "short lists are whole");
    }

    #[test]
    fn objects_without_our_metadata_read_as_none() {
        assert_eq!(decode(&HashMap::new()), None);
        assert_eq!(dec("50%25%2"), "50%%2", "a stray % stays");
    }
}
