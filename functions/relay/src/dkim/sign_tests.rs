//! The signing step: which keys apply, which header fields are signed (and over-signed), and
//! the canonicalization, including the mail-auth 0.13.3 body-hash defect and the way around it.
//! That the signatures verify is proven end to end against dkimpy (tests/test_dkim.py).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;

use super::*;
use shared::signing::pem::parse_pem;

const RSA: &[u8] = include_bytes!("../../../../shared/src/signing/testdata/rsa2048.pem");
const ED25519: &[u8] = include_bytes!("../../../../shared/src/signing/testdata/ed25519.pem");

fn key(domain: &str, selector: &str, pem: &[u8]) -> Key {
    Key { domain: domain.into(), selector: selector.into(), key: parse_pem(pem).unwrap() }
}

fn signer() -> Signer {
    Signer::new(vec![key("a.test", "rsa", RSA), key("a.test", "ed", ED25519), key("b.test", "s1", RSA)])
}

/// Each `DKIM-Signature` field of `fields`, unfolded, as its tags.
fn parse(fields: &[u8]) -> Vec<HashMap<String, String>> {
    let text = String::from_utf8(fields.to_vec()).unwrap();
    let unfolded = text.replace("\r\n\t", " ").replace("\r\n ", " ");
    unfolded
        .lines()
        .map(|line| {
            let value = line.strip_prefix("DKIM-Signature: ").unwrap_or_else(|| panic!("not a DKIM-Signature: {line}"));
            value
                .split(';')
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.chars().filter(|c| !c.is_whitespace()).collect()))
                .collect()
        })
        .collect()
}

fn sha256_b64(canonical_body: &[u8]) -> String {
    B64.encode(ring::digest::digest(&ring::digest::SHA256, canonical_body))
}

const HEAD: &str =
    "From: Alice <alice@A.Test>\r\nTo: bob@x.test\r\nSubject: hi\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\n";

#[test]
fn the_from_domain_picks_the_keys_and_each_key_signs() {
    let s = signer();
    let msg = format!("{HEAD}\r\nbody\r\n");
    let selectors: Vec<_> = s.keys_for(msg.as_bytes()).iter().map(|k| k.selector.as_str()).collect();
    assert_eq!(selectors, ["rsa", "ed"], "every key of a.test, matched without case, in configuration order");

    let out = s.sign(msg.as_bytes()).unwrap();
    let sigs = parse(&out.fields);
    assert_eq!(sigs.len(), 2);
    assert_eq!((sigs[0]["d"].as_str(), sigs[0]["s"].as_str(), sigs[0]["a"].as_str()), ("a.test", "rsa", "rsa-sha256"));
    assert_eq!(
        (sigs[1]["d"].as_str(), sigs[1]["s"].as_str(), sigs[1]["a"].as_str()),
        ("a.test", "ed", "ed25519-sha256")
    );
    assert_eq!(out.signed_by, ["d=a.test s=rsa a=rsa-sha256", "d=a.test s=ed a=ed25519-sha256"]);
    assert_eq!(B64.decode(&sigs[0]["b"]).unwrap().len(), 256, "RSA-2048 signature");
    assert_eq!(B64.decode(&sigs[1]["b"]).unwrap().len(), 64, "Ed25519 signature");

    let cases: &[(&str, &[&str])] = &[
        ("From: carol@b.test\r\n", &["s1"]),
        ("From: x@a.test, y@b.test\r\nSender: x@a.test\r\n", &["rsa", "ed", "s1"]),
        ("From: \"someone@a.test\" <z@c.test>\r\n", &[]),
        ("From: z@sub.a.test\r\n", &[]),
        ("Sender: alice@a.test\r\n", &[]),
    ];
    for (head, want) in cases {
        let m = format!("{head}Subject: s\r\n\r\nbody\r\n");
        let got: Vec<_> = s.keys_for(m.as_bytes()).iter().map(|k| k.selector.as_str()).collect();
        assert_eq!(&got, want, "{head}");
    }
    let unsigned = "From: z@c.test\r\n\r\nbody\r\n";
    assert_eq!(s.sign(unsigned.as_bytes()).unwrap(), Signatures::default());
    assert!(Signer::default().sign(msg.as_bytes()).unwrap().fields.is_empty());
}

#[test]
fn the_recommended_fields_present_are_signed_and_four_are_over_signed() {
    let msg = concat!(
        "Received: from x by y; Mon, 1 Dec 2025 10:00:00 +0000\r\n",
        "From: alice@a.test\r\n",
        "To: bob@x.test\r\n",
        "cc: carol@x.test\r\n",
        "To: dave@x.test\r\n",
        "Message-ID: <1@a.test>\r\n",
        "X-Mailer: test\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain\r\n",
        "Return-Path: <alice@a.test>\r\n",
        "\r\n",
        "body\r\n",
    );
    let sigs = parse(&Signer::new(vec![key("a.test", "s", RSA)]).sign(msg.as_bytes()).unwrap().fields);
    let h: Vec<String> = sigs[0]["h"].split(':').map(str::to_ascii_lowercase).collect();
    let count = |name: &str| h.iter().filter(|n| *n == name).count();
    // Present once: signed once, plus the over-signing extra for From/To/Subject/Date.
    assert_eq!(count("from"), 2);
    assert_eq!(count("to"), 3, "both To fields and one more");
    assert_eq!(count("subject"), 1, "absent, named once so that none can be added");
    assert_eq!(count("date"), 1);
    for name in ["cc", "message-id", "mime-version", "content-type"] {
        assert_eq!(count(name), 1, "{name} is present and signed once");
    }
    for name in ["received", "return-path", "x-mailer", "reply-to", "list-id", "content-transfer-encoding"] {
        assert_eq!(count(name), 0, "{name} is not signed");
    }
    // The instances bottom-up (RFC 6376 §5.4.2), then the names that match nothing here.
    assert_eq!(
        h,
        [
            "content-type",
            "mime-version",
            "message-id",
            "to",
            "cc",
            "to",
            "from", // present
            "from",
            "subject",
            "date",
            "to", // over-signing
        ]
    );
    assert_eq!(sigs[0]["c"], "relaxed/relaxed");
}

/// The correct relaxed body hash of `body` (RFC 6376 §3.4.4), written out by hand in each case.
const BODIES: &[(&str, &str)] = &[
    ("text\r\n", "text\r\n"),
    ("a  b \t\r\n\r\nc\r\n\r\n\r\n", "a b\r\n\r\nc\r\n"),
    // The defect's case: whitespace-only lines at the end.
    ("text\r\n \r\n\t\r\n", "text\r\n"),
    ("text\r\n  \r\n", "text\r\n"),
    ("text \r\n \t \r\n\r\n", "text\r\n"),
    ("text\r\n \r\n  \r\nmore\r\n \r\n", "text\r\n\r\n\r\nmore\r\n"),
    ("text  ", "text\r\n"),
    (" \r\n\t\r\n", ""),
    ("", ""),
];

#[test]
fn mail_auth_0_13_3_hashes_trailing_whitespace_lines_wrongly() {
    // The reason for `signing_view`: given the message as it is, mail-auth gets `bh=` wrong.
    let k = parse_pem(RSA).unwrap();
    let msg = "From: alice@a.test\r\n\r\ntext\r\n \r\n\t\r\n";
    let sig = DkimSigner::from_key(k).domain("a.test").selector("s").headers(["From"]).sign(msg.as_bytes()).unwrap();
    let bh = parse(sig.to_header().as_bytes())[0]["bh"].clone();
    assert_ne!(bh, sha256_b64(b"text\r\n"), "mail-auth 0.13.3 no longer has the defect: signing_view can go");
    assert_eq!(
        bh,
        sha256_b64(b"text\r\n\r\n\r\n"),
        "the known wrong result: the whitespace-only lines kept as empty lines"
    );
}

#[test]
fn every_body_gets_the_correct_relaxed_body_hash() {
    let s = Signer::new(vec![key("a.test", "rsa", RSA), key("a.test", "ed", ED25519)]);
    for (body, canonical) in BODIES {
        let msg = format!("From: alice@a.test\r\nSubject: s\r\n\r\n{body}");
        for sig in parse(&s.sign(msg.as_bytes()).unwrap().fields) {
            assert_eq!(sig["c"], "relaxed/relaxed");
            assert_eq!(sig["bh"], sha256_b64(canonical.as_bytes()), "{body:?} with {}", sig["a"]);
        }
    }
}

#[test]
fn the_view_is_a_prefix_of_the_message_unless_the_last_line_ends_in_whitespace() {
    let cases: &[(&str, &str, bool)] = &[
        ("From: a@a.test\r\n\r\ntext\r\n", "From: a@a.test\r\n\r\ntext\r\n", true),
        ("From: a@a.test\r\n\r\ntext\r\n \r\n\r\n", "From: a@a.test\r\n\r\ntext\r\n", true),
        ("From: a@a.test\r\n\r\ntext \r\n", "From: a@a.test\r\n\r\ntext\r\n", false),
        ("From: a@a.test\r\n\r\ntext", "From: a@a.test\r\n\r\ntext\r\n", false),
        ("From: a@a.test\r\n\r\n \r\n", "From: a@a.test\r\n\r\n", true),
        ("From: a@a.test\r\n", "From: a@a.test\r\n", true),
    ];
    for (msg, want, borrowed) in cases {
        let view = signing_view(msg.as_bytes());
        assert_eq!(String::from_utf8_lossy(&view), *want, "{msg:?}");
        assert_eq!(matches!(view, Cow::Borrowed(_)), *borrowed, "{msg:?}");
    }
}

#[test]
fn signed_prepends_the_fields_and_leaves_unsigned_mail_borrowed() {
    let s = signer();
    let msg = format!("{HEAD}\r\nbody \r\n \r\n");
    let (out, by) = s.signed(Cow::Borrowed(msg.as_bytes())).unwrap();
    assert_eq!(by.len(), 2);
    let text = String::from_utf8(out.into_owned()).unwrap();
    assert!(text.starts_with("DKIM-Signature: v=1; a=rsa-sha256;"), "{text}");
    assert!(text.ends_with(&msg), "the message follows its signatures unchanged");
    assert_eq!(text.matches("DKIM-Signature:").count(), 2);

    let other = b"From: z@c.test\r\n\r\nbody\r\n";
    let (out, by) = s.signed(Cow::Borrowed(&other[..])).unwrap();
    assert!(matches!(out, Cow::Borrowed(_)) && by.is_empty());
}
