//! SMTP replies as data: a code, an optional RFC 3463 enhanced status code and text lines.
//!
//! The ingress renders them onto the wire; the relay records remote replies in this form, so a
//! DSN can quote the remote's enhanced status code and the last reply a recipient got.

use std::fmt;

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code such as `5.7.1`, without the trailing space.
    pub status: Option<String>,
    /// One entry per line; at least one.
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply with an enhanced status code.
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Self {
        Self { code, status: Some(status.to_string()), lines: vec![text.into()] }
    }

    /// A reply with several lines, each carrying the same enhanced code.
    pub fn multi(code: u16, status: Option<&str>, lines: Vec<String>) -> Self {
        Self { code, status: status.map(str::to_string), lines }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Parse a reply's text as received (`250-first\r\n250 last\r\n`); the enhanced status code is
    /// taken from the first line when it has one of the right class.
    pub fn parse(code: u16, text: &str) -> Self {
        let mut status = None;
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let mut line = raw.trim_end_matches('\r');
            if let Some((first, rest)) = line.split_once(' ')
                && is_enhanced_status(first, code)
            {
                if i == 0 {
                    status = Some(first.to_string());
                }
                line = rest;
            }
            lines.push(line.to_string());
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
        Self { code, status, lines }
    }

    /// The whole reply on one line, for logs and DSN diagnostic codes.
    pub fn one_line(&self) -> String {
        let mut s = self.code.to_string();
        if let Some(st) = &self.status {
            s.push(' ');
            s.push_str(st);
        }
        for l in &self.lines {
            s.push(' ');
            s.push_str(l);
        }
        s
    }
}

/// True when `s` is `class.subject.detail` whose class agrees with the reply code.
pub fn is_enhanced_status(s: &str, code: u16) -> bool {
    let mut parts = s.split('.');
    let (Some(c), Some(sub), Some(det), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let num = |p: &str, max: usize| !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit());
    num(c, 1) && num(sub, 3) && num(det, 3) && c.parse::<u16>().ok() == Some(code / 100)
}

impl fmt::Display for Reply {
    /// Wire form, CRLF-terminated, continuation lines with `-`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            match &self.status {
                Some(st) => write!(f, "{}{sep}{st} {line}\r\n", self.code)?,
                None => write!(f, "{}{sep}{line}\r\n", self.code)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_single_and_multi_line() {
        assert_eq!(Reply::new(250, "2.0.0", "Ok").to_string(), "250 2.0.0 Ok\r\n");
        let r = Reply::multi(250, None, vec!["mx.example".into(), "PIPELINING".into()]);
        assert_eq!(r.to_string(), "250-mx.example\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn parses_enhanced_codes() {
        let r = Reply::parse(550, "5.1.1 No such user\r\n5.1.1 really");
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!(r.lines, vec!["No such user", "really"]);
        assert!(r.is_permanent());
        // A code of the wrong class is text, not a status.
        let r = Reply::parse(450, "5.1.1 odd");
        assert_eq!(r.status, None);
        assert_eq!(r.one_line(), "450 5.1.1 odd");
        assert!(!is_enhanced_status("2.0", 250));
        assert!(!is_enhanced_status("4.7.1000", 421));
    }
}
