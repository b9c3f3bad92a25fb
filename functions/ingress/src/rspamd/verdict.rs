//! rspamd's answer to `/checkv2` and what it means for the message (pure, table-tested).
//!
//! The answer is JSON: `action`, `score`, `required_score`, `messages.smtp_message` (the text
//! for a refusal), `subject` (for `rewrite subject`) and `milter` with `add_headers` (name →
//! value, `{value, order}` or a list of those) and `remove_headers` (name → index; every field
//! of that name is removed here, whatever the index). An answer that cannot be read counts as
//! rspamd not answering.

use serde::Deserialize;
use serde_json::Value;
use shared::Reply;

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Accept,
    TempFail(Reply),
    Reject(Reply),
}

/// rspamd's judgement, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub disposition: Disposition,
    /// `add header` / `rewrite subject`: mark it `X-Spam: Yes`.
    pub spam: bool,
    pub subject: Option<String>,
    /// Whole fields to add at the top (`Name: value`), `X-Spam-Score` first.
    pub add: Vec<String>,
    /// Names of fields to remove (every field of each name) before adding.
    pub remove: Vec<String>,
    pub score: f64,
    /// rspamd's action, for logs.
    pub action: String,
}

#[derive(Debug, Deserialize)]
struct Answer {
    action: String,
    #[serde(default)]
    score: f64,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    messages: Option<Value>,
    #[serde(default)]
    milter: Option<Milter>,
}

#[derive(Debug, Deserialize, Default)]
struct Milter {
    #[serde(default)]
    add_headers: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    remove_headers: Option<serde_json::Map<String, Value>>,
}

/// A header value we can write: no CR, LF or NUL (rspamd's values are its own, but a field
/// must never smuggle a line break into the stored message).
fn clean(v: &str) -> String {
    v.chars().map(|c| if c == '\r' || c == '\n' || c == '\0' { ' ' } else { c }).collect()
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// The values of one `add_headers` entry, in order.
fn values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Object(o) => o.get("value").and_then(Value::as_str).map(|s| vec![s.to_string()]).unwrap_or_default(),
        Value::Array(a) => a.iter().flat_map(values).collect(),
        _ => Vec::new(),
    }
}

/// Read rspamd's answer and map it; `Err` when it is not an answer.
pub fn map(body: &[u8]) -> Result<Mapped, String> {
    let a: Answer = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    let smtp_message = a
        .messages
        .as_ref()
        .and_then(|m| m.get("smtp_message"))
        .and_then(Value::as_str)
        .map(|s| clean(s).trim().to_string())
        .filter(|s| !s.is_empty());
    let (disposition, spam) = match a.action.as_str() {
        "reject" => (
            Disposition::Reject(Reply::new(
                554,
                "5.7.1",
                smtp_message.unwrap_or_else(|| "Spam message rejected".into()),
            )),
            false,
        ),
        "soft reject" | "greylist" => (
            Disposition::TempFail(Reply::new(451, "4.7.1", smtp_message.unwrap_or_else(|| "Try again later".into()))),
            false,
        ),
        "add header" | "rewrite subject" => (Disposition::Accept, true),
        "no action" => (Disposition::Accept, false),
        other => return Err(format!("unknown action {other:?}")),
    };
    let milter = a.milter.unwrap_or_default();
    // Our own score replaces any the sender wrote.
    let mut remove = vec!["X-Spam-Score".to_string()];
    for name in milter.remove_headers.iter().flat_map(|m| m.keys()) {
        if valid_name(name) && !remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            remove.push(name.clone());
        }
    }
    let mut add = vec![format!("X-Spam-Score: {:.2}", a.score)];
    for (name, v) in milter.add_headers.iter().flat_map(|m| m.iter()) {
        // X-Spam: Yes is the judge's to write (once, on spam), whatever rspamd adds.
        if !valid_name(name) || name.eq_ignore_ascii_case("X-Spam") || name.eq_ignore_ascii_case("X-Spam-Score") {
            continue;
        }
        for value in values(v) {
            add.push(format!("{name}: {}", clean(&value)));
        }
    }
    let subject = if a.action == "rewrite subject" { a.subject.map(|s| clean(&s)) } else { None };
    Ok(Mapped { disposition, spam, subject, add, remove, score: a.score, action: a.action })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        let cases = [
            (
                r#"{"action":"reject","score":1000,"messages":{"smtp_message":"Gtube pattern"}}"#,
                "554 5.7.1 Gtube pattern",
                false,
            ),
            (r#"{"action":"reject","score":20}"#, "554 5.7.1 Spam message rejected", false),
            (
                r#"{"action":"soft reject","score":1,"messages":{"smtp_message":"Try again later"}}"#,
                "451 4.7.1 Try again later",
                false,
            ),
            (r#"{"action":"greylist","score":4}"#, "451 4.7.1 Try again later", false),
            (r#"{"action":"add header","score":7.5}"#, "accept", true),
            (r#"{"action":"rewrite subject","score":9,"subject":"*** SPAM *** hi"}"#, "accept", true),
            (r#"{"action":"no action","score":-0.1}"#, "accept", false),
        ];
        for (json, want, spam) in cases {
            let m = map(json.as_bytes()).unwrap();
            let got = match &m.disposition {
                Disposition::Accept => "accept".to_string(),
                Disposition::TempFail(r) | Disposition::Reject(r) => r.one_line(),
            };
            assert_eq!((got.as_str(), m.spam), (want, spam), "{json}");
        }
        for bad in [r#"{"action":"discard"}"#, "not json", r#"{"score":1}"#] {
            assert!(map(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_subject_and_score() {
        let m = map(br#"{"action":"rewrite subject","score":9.256,"subject":"[SPAM] hi\r\nBcc: x",
            "milter":{"add_headers":{"X-Rspamd-Server":"r1","X-Spam":{"value":"Yes","order":0},
              "X-Spamd-Result":[{"value":"a","order":0},{"value":"b\nX-Evil: 1","order":1}],"Bad Name":"x"},
              "remove_headers":{"X-Spam":1,"x-spam-score":0}}}"#)
        .unwrap();
        assert_eq!(m.subject.as_deref(), Some("[SPAM] hi  Bcc: x"), "no line break smuggled into the subject");
        assert_eq!(m.remove, vec!["X-Spam-Score", "X-Spam"]);
        let mut add = m.add.clone();
        add[1..].sort();
        assert_eq!(
            add,
            vec!["X-Spam-Score: 9.26", "X-Rspamd-Server: r1", "X-Spamd-Result: a", "X-Spamd-Result: b X-Evil: 1"]
        );
        // The subject is rspamd's only under rewrite subject.
        let m = map(br#"{"action":"add header","score":6,"subject":"ignored"}"#).unwrap();
        assert_eq!(m.subject, None);
        assert_eq!((m.add, m.remove), (vec!["X-Spam-Score: 6.00".to_string()], vec!["X-Spam-Score".to_string()]));
    }
}
