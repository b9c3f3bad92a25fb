//! MTA-STS as data, pure: the `_mta-sts` TXT record (RFC 8461 §3.1), the policy file (§3.2), MX
//! patterns (§4.1), and which of a domain's MX hosts a policy lets mail go to, over what TLS.
//!
//! Our own small parsers rather than mail-auth's: mail-auth 0.13.3 has no parser for the policy
//! file at all (only for the TXT record, and that one accepts a record whose `v=STSv1` is not
//! first and an `id` of any characters), and it would bring a second hickory-resolver (0.26)
//! into the relay for a few lines of work.

use serde::{Deserialize, Serialize};

use crate::vocab::TlsRequirement;

/// The longest `max_age` a policy may have (§3.2: "no greater than 31557600"). A larger value
/// is capped rather than rejected, so a domain's `enforce` policy is not lost to a typo.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a policy asks of senders (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to listed MX hosts over TLS with a valid certificate.
    Enforce,
    /// Deliver as without a policy; failures are worth reporting.
    Testing,
    /// The domain has withdrawn its policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// Seconds the policy may be cached from the time it was fetched.
    pub max_age: u64,
    /// MX patterns, lower case: `mx.example.org` or `*.example.org` (one leftmost label).
    pub mx: Vec<String>,
}

impl Policy {
    /// Whether `host` matches one of the policy's MX patterns (§4.1).
    pub fn lists(&self, host: &str) -> bool {
        self.mx.iter().any(|pattern| mx_matches(pattern, host))
    }
}

/// The policy `id` of a domain's `_mta-sts` TXT records (§3.1): records not starting with
/// `v=STSv1` are someone else's and are ignored; anything but exactly one of ours means the
/// domain has no usable record.
pub fn record_id(records: &[String]) -> Result<String, String> {
    let ours: Vec<&String> = records.iter().filter(|r| version_rest(r).is_some()).collect();
    let [record] = ours[..] else {
        return Err(match ours.len() {
            0 => "no v=STSv1 TXT record".to_string(),
            n => format!("{n} v=STSv1 TXT records (exactly one is allowed)"),
        });
    };
    let rest = version_rest(record).unwrap_or_default();
    let mut id = None;
    for field in rest.split(';').map(|f| f.trim_matches([' ', '\t'])).filter(|f| !f.is_empty()) {
        let Some((name, value)) = field.split_once('=') else {
            return Err(format!("field {field:?} is not name=value"));
        };
        if name == "id" && id.is_none() {
            id = Some(value);
        }
    }
    match id {
        Some(id) if (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) => Ok(id.to_string()),
        Some(id) => Err(format!("id {id:?} is not 1 to 32 letters and digits")),
        None => Err("no id field".to_string()),
    }
}

/// What follows `v=STSv1` in a record of ours (`None`: not ours).
fn version_rest(record: &str) -> Option<&str> {
    let rest = record.strip_prefix("v=STSv1")?;
    rest.trim_start_matches([' ', '\t']).starts_with(';').then_some(rest)
}

/// Parse a policy file (§3.2): `key: value` lines ending in LF or CRLF; `version`, `mode` and
/// `max_age` required, one or more `mx` unless the mode is `none`; unknown keys ignored. Keys and
/// values are case-sensitive (`%s` in the RFC's ABNF). A repeated single-valued key is not
/// allowed by the grammar; the first one counts.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line).trim_end_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {} is not \"key: value\"", n + 1));
        };
        let value = value.trim_start_matches([' ', '\t']);
        match key {
            "version" => {
                version.get_or_insert(value);
            }
            "mode" => {
                mode.get_or_insert(value);
            }
            "max_age" => {
                max_age.get_or_insert(value);
            }
            "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
            _ => {}
        }
    }
    match version {
        Some("STSv1") => {}
        Some(v) => return Err(format!("version {v:?} is not STSv1")),
        None => return Err("no version field".into()),
    }
    let mode = match mode {
        Some("enforce") => Mode::Enforce,
        Some("testing") => Mode::Testing,
        Some("none") => Mode::None,
        Some(m) => return Err(format!("mode {m:?} is not enforce, testing or none")),
        None => return Err("no mode field".into()),
    };
    let max_age = match max_age {
        Some(a) if (1..=10).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_digit()) => {
            a.parse::<u64>().map_err(|e| e.to_string())?.min(MAX_AGE_LIMIT)
        }
        Some(a) => return Err(format!("max_age {a:?} is not a number of seconds")),
        None => return Err("no max_age field".into()),
    };
    if let Some(bad) = mx.iter().find(|p| !valid_pattern(p)) {
        return Err(format!("mx {bad:?} is not a host name or *.domain pattern"));
    }
    if mx.is_empty() && mode != Mode::None {
        return Err(format!("mode {} needs at least one mx field", mode.as_str()));
    }
    Ok(Policy { mode, max_age, mx })
}

fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    shared::config::valid_hostname(name)
}

/// §4.1: a pattern matches a host of the same name, ignoring case and a trailing dot; `*.d`
/// matches a host of exactly one more label than `d` (`mx.d`, not `d`, not `a.mx.d`).
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(first, rest)| {
            !first.is_empty() && !first.contains('*') && rest.eq_ignore_ascii_case(parent)
        }),
        None => host.eq_ignore_ascii_case(pattern),
    }
}

/// The MX hosts mail may go to under a policy, and what their sessions must prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The hosts to try, in their MX order.
    pub hosts: Vec<String>,
    /// Hosts the policy does not list (dropped under `enforce`, kept and reported under `testing`).
    pub unlisted: Vec<String>,
    pub tls: TlsRequirement,
}

/// Apply `policy` (none, or one in mode `none`, changes nothing) to a domain's MX `hosts`.
pub fn select(policy: Option<&Policy>, hosts: Vec<String>) -> Selection {
    let Some(policy) = policy.filter(|p| p.mode != Mode::None) else {
        return Selection { hosts, unlisted: Vec::new(), tls: TlsRequirement::Default };
    };
    let (listed, unlisted): (Vec<String>, Vec<String>) = hosts.iter().cloned().partition(|h| policy.lists(h));
    match policy.mode {
        Mode::Enforce => Selection { hosts: listed, unlisted, tls: TlsRequirement::Verified },
        _ => Selection { hosts, unlisted, tls: TlsRequirement::Report },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn txt_records() {
        let ok = [
            (&["v=STSv1; id=20160831085700Z;"][..], "20160831085700Z"),
            (&["v=STSv1;id=abc123"], "abc123"),
            (&["v=STSv1 ; id=x ; ext=whatever"], "x"),
            (&["v=spf1 -all", "v=STSv1; id=one", "something else"], "one"),
            (&["v=STSv1; id=first; id=second"], "first"),
        ];
        for (recs, id) in ok {
            assert_eq!(record_id(&records(recs)), Ok(id.to_string()), "{recs:?}");
        }
        let bad = [
            (&[][..], "no v=STSv1"),
            (&["v=spf1 -all"], "no v=STSv1"),
            (&["v=STSv1; id=a", "v=STSv1; id=b"], "2 v=STSv1 TXT records"),
            (&["v=STSv1"], "no v=STSv1"),
            (&["v=STSv10; id=a"], "no v=STSv1"),
            (&[" v=STSv1; id=a"], "no v=STSv1"),
            (&["v=STSv1; ext=1"], "no id"),
            (&["v=STSv1; id="], "not 1 to 32"),
            (&["v=STSv1; id=has-dash"], "not 1 to 32"),
            (&["v=STSv1; id=123456789012345678901234567890123"], "not 1 to 32"),
            (&["v=STSv1; junk"], "not name=value"),
        ];
        for (recs, why) in bad {
            let e = record_id(&records(recs)).unwrap_err();
            assert!(e.contains(why), "{recs:?}: {e}");
        }
    }

    #[test]
    fn policy_files() {
        let p = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 86400\r\n",
        )
        .unwrap();
        assert_eq!(
            p,
            Policy { mode: Mode::Enforce, max_age: 86400, mx: vec!["mail.example.com".into(), "*.example.net".into()] }
        );
        // LF endings, no final newline, extra blanks, unknown keys, fields in any order.
        let p =
            parse_policy("mode:testing\nmax_age:   604800  \nmx: mx.b.test\nfuture_key: 1\nversion: STSv1").unwrap();
        assert_eq!((p.mode, p.max_age, p.mx.len()), (Mode::Testing, 604800, 1));
        let none = parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").unwrap();
        assert_eq!((none.mode, none.max_age, none.mx.len()), (Mode::None, 0, 0));
        let capped = parse_policy("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 9999999999\n").unwrap();
        assert_eq!(capped.max_age, MAX_AGE_LIMIT);
        let first = parse_policy("version: STSv1\nmode: testing\nmode: enforce\nmx: a.test\nmax_age: 5\n").unwrap();
        assert_eq!(first.mode, Mode::Testing);

        let bad = [
            ("mode: enforce\nmx: a.test\nmax_age: 1\n", "no version"),
            ("version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", "not STSv1"),
            ("version: STSv1\nmx: a.test\nmax_age: 1\n", "no mode"),
            ("version: STSv1\nmode: Enforce\nmx: a.test\nmax_age: 1\n", "not enforce, testing or none"),
            ("version: STSv1\nmode: enforce\nmx: a.test\n", "no max_age"),
            ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n", "not a number"),
            ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 12345678901\n", "not a number"),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "at least one mx"),
            ("version: STSv1\nmode: enforce\nmx: bad host\nmax_age: 1\n", "not a host name"),
            ("version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n", "not a host name"),
            ("<html>not a policy</html>", "line 1"),
        ];
        for (text, why) in bad {
            let e = parse_policy(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn mx_patterns() {
        let cases = [
            ("mail.example.com", "mail.example.com", true),
            ("mail.example.com", "MAIL.Example.com.", true),
            ("mail.example.com", "mail2.example.com", false),
            ("*.example.com", "mx1.example.com", true),
            ("*.example.com", "MX1.EXAMPLE.COM.", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "mx1.example.org", false),
            ("*.example.com", "*.example.com", false),
        ];
        for (pattern, host, expected) in cases {
            assert_eq!(mx_matches(pattern, host), expected, "{pattern} vs {host}");
        }
    }

    #[test]
    fn selection_by_mode() {
        let policy = |mode| Policy { mode, max_age: 60, mx: vec!["*.b.test".into()] };
        let hosts = || vec!["mx1.b.test".to_string(), "backup.elsewhere.test".to_string(), "mx2.b.test".to_string()];
        let unlisted = vec!["backup.elsewhere.test".to_string()];

        let s = select(Some(&policy(Mode::Enforce)), hosts());
        assert_eq!(s.hosts, ["mx1.b.test", "mx2.b.test"], "enforce keeps listed hosts in their order");
        assert_eq!((s.unlisted, s.tls), (unlisted.clone(), TlsRequirement::Verified));

        let s = select(Some(&policy(Mode::Testing)), hosts());
        assert_eq!((s.hosts, s.unlisted, s.tls), (hosts(), unlisted, TlsRequirement::Report));

        for p in [None, Some(policy(Mode::None))] {
            let s = select(p.as_ref(), hosts());
            assert_eq!((s.hosts, s.unlisted, s.tls), (hosts(), vec![], TlsRequirement::Default));
        }

        let s = select(Some(&policy(Mode::Enforce)), vec!["other.test".into()]);
        assert!(s.hosts.is_empty() && s.tls == TlsRequirement::Verified);
    }
}
