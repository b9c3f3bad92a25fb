//! The 8-bit to 7-bit conversion: the result is 7-bit, decodes to the same text and leaves
//! everything that needed no conversion byte for byte.

use mail_parser::{MessageParser, MimeHeaders};

use super::seven_bit;

fn convert(m: &str) -> String {
    let out = seven_bit(m.as_bytes());
    assert!(out.is_ascii(), "not 7-bit:\n{}", String::from_utf8_lossy(&out));
    String::from_utf8(out.into_owned()).unwrap()
}

/// Text bodies of the parsed message, decoded.
fn texts(m: &[u8]) -> Vec<String> {
    let msg = MessageParser::new().parse(m).unwrap();
    (0..msg.text_body_count()).map(|i| msg.body_text(i).unwrap().into_owned()).collect()
}

#[test]
fn seven_bit_messages_are_borrowed_untouched() {
    let m = b"Subject: hi\r\n\r\nplain ascii\r\n";
    assert!(matches!(seven_bit(m), std::borrow::Cow::Borrowed(b) if b == m));
}

#[test]
fn single_part_gets_quoted_printable_and_a_rewritten_header() {
    let m = "From: a@a.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\
             MIME-Version: 1.0\r\nSubject: x\r\n\r\nGrüße aus Köln\r\n.\r\nline = two\r\n";
    let out = convert(m);
    assert_eq!(
        out,
        "From: a@a.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\
         MIME-Version: 1.0\r\nSubject: x\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln\r\n.\r\nline =3D two\r\n"
    );
    assert_eq!(texts(out.as_bytes()), ["Grüße aus Köln\r\n.\r\nline = two\r\n"]);
}

#[test]
fn header_is_added_before_the_empty_line_with_mime_version_when_missing() {
    let out = convert("Subject: x\r\n\r\nnaïve\r\n");
    assert_eq!(
        out,
        "Subject: x\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve\r\n"
    );
}

#[test]
fn cte_as_the_last_header_keeps_the_empty_line() {
    let out = convert("Subject: x\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\né\r\n");
    assert_eq!(out, "Subject: x\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n");
}

#[test]
fn long_lines_get_soft_breaks_and_decode_back() {
    let line = "é".repeat(60);
    let out = convert(&format!("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{line}\r\n"));
    assert!(out.lines().all(|l| l.len() <= 78), "{out}");
    assert!(out.contains("=\r\n"), "soft line breaks expected");
    assert_eq!(texts(out.as_bytes()), [format!("{line}\r\n")]);
}

const MULTIPART: &str = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
    preamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
    Café crème\r\n--b1\r\nContent-Type: text/plain\r\n\r\nascii part\r\n--b1\r\n\
    Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b1\r\n\
    Content-Type: application/x-raw\r\n\r\n\u{ff}\u{fe}bytes\r\n--b1--\r\n";

#[test]
fn multipart_converts_only_the_8bit_leaves() {
    let out = convert(MULTIPART);
    assert!(out.starts_with(
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\n"
    ));
    assert!(
        out.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 cr=C3=A8me\r\n--b1\r\n"),
        "{out}"
    );
    assert!(out.contains("--b1\r\nContent-Type: text/plain\r\n\r\nascii part\r\n--b1\r\n"), "untouched: {out}");
    assert!(out.contains("Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b1\r\n"), "untouched: {out}");
    assert!(out.contains("Content-Type: application/x-raw\r\nContent-Transfer-Encoding: base64\r\n\r\n"), "{out}");
    assert!(out.ends_with("--b1--\r\n"));
    let msg = MessageParser::new().parse(out.as_bytes()).unwrap();
    // The line break before a boundary belongs to the boundary, not to the part.
    assert_eq!(msg.body_text(0).unwrap(), "Café crème");
    let raw = msg.attachments().find(|a| a.content_type().is_some_and(|c| c.subtype() == Some("x-raw"))).unwrap();
    assert_eq!(raw.contents(), "\u{ff}\u{fe}bytes".as_bytes());
}

#[test]
fn nested_message_is_converted_inside() {
    let m = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\n\
             Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nÜber\r\n--o--\r\n";
    let out = convert(m);
    assert!(
        out.contains(
            "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=9Cber\r\n--o--"
        ),
        "{out}"
    );
}

#[test]
fn eight_bit_headers_are_left_alone() {
    let out = seven_bit("Subject: Grüße\r\n\r\nascii\r\n".as_bytes());
    assert_eq!(&*out, "Subject: Grüße\r\n\r\nascii\r\n".as_bytes());
}
