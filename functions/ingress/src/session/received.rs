//! The `Received:` trace field the ingress prepends to every message (RFC 5321 §4.4).

use std::net::IpAddr;

use chrono::{DateTime, Utc};

/// What the trace field records about one transaction.
pub struct Trace<'a> {
    pub helo: &'a str,
    pub client_ip: IpAddr,
    pub hostname: &'a str,
    /// `with` protocol per RFC 3848 / RFC 6531: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS, ...
    pub protocol: String,
    pub queue_id: &'a str,
    /// TLS version and cipher suite, when the session is encrypted.
    pub tls: Option<(&'a str, &'a str)>,
    /// The recipient, named only when there is exactly one (others stay private).
    pub single_rcpt: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// The `with` keyword for this session.
pub fn protocol(esmtp: bool, utf8: bool, tls: bool, auth: bool) -> String {
    let base = match (esmtp, utf8) {
        (false, _) => "SMTP",
        (true, false) => "ESMTP",
        (true, true) => "UTF8SMTP",
    };
    format!("{base}{}{}", if tls && esmtp { "S" } else { "" }, if auth && esmtp { "A" } else { "" })
}

impl Trace<'_> {
    /// The field, folded, CRLF-terminated.
    pub fn render(&self) -> Vec<u8> {
        let helo: String = self.helo.chars().filter(|c| !c.is_control()).take(255).collect();
        let mut s = format!(
            "Received: from {helo} ([{}])\r\n\tby {} (smtp-relay) with {} id {}",
            self.client_ip, self.hostname, self.protocol, self.queue_id
        );
        if let Some((version, cipher)) = self.tls {
            s.push_str(&format!("\r\n\t(using {version} with cipher {cipher})"));
        }
        if let Some(r) = self.single_rcpt {
            s.push_str(&format!("\r\n\tfor <{r}>"));
        }
        s.push_str(&format!(";\r\n\t{}\r\n", self.now.to_rfc2822()));
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renders_a_folded_field() {
        let t = Trace {
            helo: "client.example\r\nX-Evil: 1",
            client_ip: "192.0.2.1".parse().unwrap(),
            hostname: "mx.example.test",
            protocol: protocol(true, false, true, false),
            queue_id: "01JD",
            tls: Some(("TLSv1_3", "TLS13_AES_256_GCM_SHA384")),
            single_rcpt: Some("bob@example.test"),
            now: Utc.with_ymd_and_hms(2026, 11, 29, 5, 0, 0).unwrap(),
        };
        let s = String::from_utf8(t.render()).unwrap();
        assert_eq!(
            s,
            "Received: from client.exampleX-Evil: 1 ([192.0.2.1])\r\n\tby mx.example.test (smtp-relay) with ESMTPS id 01JD\r\n\t(using TLSv1_3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\tfor <bob@example.test>;\r\n\tSun, 29 Nov 2026 05:00:00 +0000\r\n"
        );
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol(false, false, false, false), "SMTP");
        assert_eq!(protocol(true, false, false, false), "ESMTP");
        assert_eq!(protocol(true, false, true, true), "ESMTPSA");
        assert_eq!(protocol(true, true, true, false), "UTF8SMTPS");
    }
}
