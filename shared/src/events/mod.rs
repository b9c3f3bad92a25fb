//! Delivery events: JSON documents in the shape of Amazon SES event publishing, so tools written
//! for SES (dashboards, suppression lists, bounce handlers) read them as they are. Both programs
//! publish them to `RELAY_EVENTS_QUEUE_URL` through [`sink`]: the relay one per recipient outcome
//! (`decide/events.rs` builds them), the ingress one per report that comes back through the
//! feedback domain (an asynchronous bounce, a complaint).
//!
//! The SES shape, where it applies:
//! * `eventType`: `Delivery`, `Bounce`, `DeliveryDelay` or `Complaint`;
//! * `mail`: `timestamp` (when the ingress accepted the message), `messageId` (the queue id),
//!   `source` (the envelope sender, empty for a bounce), `sourceIp` (the submitting client, when
//!   known) and `destination` (the recipients concerned — at most [`MAX_DESTINATION`]);
//! * `delivery`: `timestamp`, `processingTimeMillis` (accepted → delivered), `recipients`,
//!   `smtpResponse`, `remoteMtaIp`, `reportingMTA`;
//! * `bounce`: `bounceType` (always `Permanent`: the relay has given up, or the remote said so
//!   after accepting), `bounceSubType` ([`bounce_sub_type`], or `OnAccountSuppressionList` for a
//!   recipient the relay did not attempt), `bouncedRecipients[].{emailAddress, action, status,
//!   diagnosticCode}`, `timestamp`, `feedbackId` (asynchronous bounces: the report's own queue
//!   id), `remoteMtaIp`, `reportingMTA`;
//! * `deliveryDelay`: `timestamp`, `delayType`, `expirationTime` (when the message will bounce),
//!   `delayedRecipients[].{emailAddress, status, diagnosticCode}`, `remoteMtaIp`, `reportingMTA`,
//!   and, beyond SES, `nextAttemptTime` and `attempt` (attempts made so far);
//! * `complaint`: `complainedRecipients[].emailAddress`, `timestamp`, `feedbackId`,
//!   `complaintFeedbackType` (the ARF `Feedback-Type`), `userAgent`, `arrivalDate`.
//!
//! SES's account fields (`sendingAccountId`, `sourceArn`, `headers`, `tags`) have no
//! counterpart here and are left out. Timestamps are ISO 8601 in UTC with milliseconds.

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

pub mod sink;

pub use sink::{EventSink, MemoryEvents, SqsEvents};

/// At most this many addresses in `mail.destination` (SES lists at most 50 recipients per
/// message too); the cap keeps an event of a job with thousands of recipients small.
pub const MAX_DESTINATION: usize = 50;

/// The `bounceSubType` of a recipient that was not attempted because it is suppressed.
pub const ON_SUPPRESSION_LIST: &str = "OnAccountSuppressionList";

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "eventType")]
pub enum Event {
    Delivery {
        mail: Mail,
        delivery: Delivery,
    },
    Bounce {
        mail: Mail,
        bounce: Bounce,
    },
    DeliveryDelay {
        mail: Mail,
        #[serde(rename = "deliveryDelay")]
        delivery_delay: DeliveryDelay,
    },
    Complaint {
        mail: Mail,
        complaint: Complaint,
    },
}

/// The message an event is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mail {
    pub timestamp: String,
    pub message_id: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    pub destination: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub processing_time_millis: i64,
    pub recipients: Vec<String>,
    pub smtp_response: String,
    #[serde(flatten)]
    pub report: Report,
}

/// The members every event's own object has: when, where the attempt ended, who reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_mta_ip: Option<String>,
    #[serde(rename = "reportingMTA")]
    pub reporting_mta: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounce {
    pub bounce_type: &'static str,
    pub bounce_sub_type: &'static str,
    pub bounced_recipients: Vec<BouncedRecipient>,
    /// The queue id of the report an asynchronous bounce came in (SES: the notification's id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_id: Option<String>,
    #[serde(flatten)]
    pub report: Report,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BouncedRecipient {
    pub email_address: String,
    pub action: &'static str,
    pub status: String,
    pub diagnostic_code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDelay {
    pub delay_type: &'static str,
    pub expiration_time: String,
    pub delayed_recipients: Vec<DelayedRecipient>,
    #[serde(flatten)]
    pub report: Report,
    pub next_attempt_time: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayedRecipient {
    pub email_address: String,
    pub status: String,
    pub diagnostic_code: String,
}

/// A recipient reported our message as spam (an ARF report, RFC 5965).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Complaint {
    pub complained_recipients: Vec<ComplainedRecipient>,
    pub timestamp: String,
    /// The queue id of the report it came in.
    pub feedback_id: String,
    /// The report's `Feedback-Type`: `abuse`, `fraud`, `virus` or `other`.
    pub complaint_feedback_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// When the reporter received our message (the report's `Arrival-Date`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrival_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplainedRecipient {
    pub email_address: String,
}

impl Event {
    /// The recipient was delivered: a fact whatever happens next (see the relay's handler).
    pub fn is_delivery(&self) -> bool {
        matches!(self, Event::Delivery { .. })
    }

    /// The queue id of the message.
    pub fn queue_id(&self) -> &str {
        match self {
            Event::Delivery { mail, .. }
            | Event::Bounce { mail, .. }
            | Event::DeliveryDelay { mail, .. }
            | Event::Complaint { mail, .. } => &mail.message_id,
        }
    }

    /// The document as published.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serialises")
    }
}

/// An ISO 8601 UTC timestamp with milliseconds, as SES writes them.
pub fn iso(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// SES's `bounceSubType` from the RFC 3463 status of a permanent failure. `NoEmail` is exactly
/// the set [`crate::suppression::classify`] reads as "the mailbox does not exist".
pub fn bounce_sub_type(status: &str) -> &'static str {
    let detail = status.split_once('.').map_or("", |(_, d)| d);
    match detail {
        d if crate::suppression::classify::NO_EMAIL.contains(&d) => "NoEmail",
        "2.2" => "MailboxFull",
        "2.3" | "3.4" => "MessageTooLarge",
        _ => "General",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_complaint_in_the_ses_shape() {
        let e = Event::Complaint {
            mail: Mail {
                timestamp: iso(1_800_000_000),
                message_id: "01JQUEUEID0000000000000000".into(),
                source: "alice@a.test".into(),
                source_ip: None,
                destination: vec!["bob@b.test".into()],
            },
            complaint: Complaint {
                complained_recipients: vec![ComplainedRecipient { email_address: "bob@b.test".into() }],
                timestamp: iso(1_800_000_090),
                feedback_id: "01JREPORT00000000000000000".into(),
                complaint_feedback_type: "abuse".into(),
                user_agent: Some("Yahoo!-Mail-Feedback/2.0".into()),
                arrival_date: None,
            },
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"eventType": "Complaint",
                "mail": {"timestamp": "2027-01-15T08:00:00.000Z", "messageId": "01JQUEUEID0000000000000000",
                         "source": "alice@a.test", "destination": ["bob@b.test"]},
                "complaint": {"complainedRecipients": [{"emailAddress": "bob@b.test"}],
                              "timestamp": "2027-01-15T08:01:30.000Z", "feedbackId": "01JREPORT00000000000000000",
                              "complaintFeedbackType": "abuse", "userAgent": "Yahoo!-Mail-Feedback/2.0"}})
        );
        assert_eq!(e.queue_id(), "01JQUEUEID0000000000000000");
        assert!(!e.is_delivery());
    }

    #[test]
    fn sub_types() {
        let cases = [
            ("5.1.1", "NoEmail"),
            ("5.1.10", "NoEmail"),
            ("5.1.6", "NoEmail"),
            ("5.1.7", "General"),
            ("5.2.2", "MailboxFull"),
            ("5.3.4", "MessageTooLarge"),
            ("5.7.1", "General"),
            ("4.4.7", "General"),
        ];
        for (status, want) in cases {
            assert_eq!(bounce_sub_type(status), want, "{status}");
        }
    }
}
