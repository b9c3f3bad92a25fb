//! Delivery events of the relay: one per recipient outcome, in the SES shape of
//! [`shared::events`] (which describes every field). Pure: built from what the handler already
//! has — the job, the attempt's verdicts and the plan — and published by the edge in
//! [`shared::events::sink`]. A recipient the relay did not attempt because it is on the
//! suppression list bounces with `bounceSubType` `OnAccountSuppressionList`.

use shared::Job;
pub use shared::events::{
    Bounce, BouncedRecipient, DelayedRecipient, Delivery, DeliveryDelay, Event, MAX_DESTINATION, Mail,
    ON_SUPPRESSION_LIST, Report, iso,
};

use crate::config::RelayConfig;
use crate::decide::plan::Plan;
use crate::vocab::{Attempt, Verdict};

/// One event per recipient outcome of `attempt`, in the order of the plan's log.
pub fn build(job: &Job, attempt: &Attempt, plan: &Plan, now: i64, cfg: &RelayConfig) -> Vec<Event> {
    let remote = attempt.remote.as_ref();
    let remote_ip = remote.and_then(|r| r.addr).map(|a| a.ip().to_string());
    let mail = Mail {
        timestamp: iso(job.first_seen),
        message_id: job.queue_id.clone(),
        source: job.sender.clone(),
        source_ip: source_ip(&job.received_from),
        destination: job.recipients.iter().take(MAX_DESTINATION).map(|r| r.address.clone()).collect(),
    };
    let report = Report { timestamp: iso(now), remote_mta_ip: remote_ip, reporting_mta: cfg.helo_name.clone() };
    let mut events = Vec::with_capacity(plan.log.len());
    for line in &plan.log {
        let Some((_, verdict)) = attempt.outcomes.iter().find(|(a, _)| *a == line.recipient) else { continue };
        let mail = mail.clone();
        let report = report.clone();
        let event = match line.status {
            "sent" => Event::Delivery {
                mail,
                delivery: Delivery {
                    processing_time_millis: (now - job.first_seen).max(0) * 1000,
                    recipients: vec![line.recipient.clone()],
                    smtp_response: verdict.text(),
                    report,
                },
            },
            "bounced" => Event::Bounce {
                mail,
                bounce: Bounce {
                    bounce_type: "Permanent",
                    bounce_sub_type: if verdict.suppressed {
                        ON_SUPPRESSION_LIST
                    } else {
                        shared::events::bounce_sub_type(&verdict.status)
                    },
                    bounced_recipients: vec![BouncedRecipient {
                        email_address: line.recipient.clone(),
                        action: "failed",
                        status: verdict.status.clone(),
                        diagnostic_code: diagnostic_code(verdict, &line.reply),
                    }],
                    feedback_id: None,
                    // SES names the reporting MTA as a DSN does (RFC 3464 §2.2.2).
                    report: Report { reporting_mta: format!("dns; {}", report.reporting_mta), ..report },
                },
            },
            _ => Event::DeliveryDelay {
                mail,
                delivery_delay: DeliveryDelay {
                    delay_type: delay_type(verdict),
                    expiration_time: iso(job.first_seen + cfg.queue_lifetime.as_secs() as i64),
                    delayed_recipients: vec![DelayedRecipient {
                        email_address: line.recipient.clone(),
                        status: verdict.status.clone(),
                        diagnostic_code: diagnostic_code(verdict, &line.reply),
                    }],
                    report,
                    next_attempt_time: iso(now + line.delay.unwrap_or(0) as i64),
                    attempt: job.attempt + 1,
                },
            },
        };
        events.push(event);
    }
    events
}

/// The address in `helo ([ip])` or `name [ip]`, the forms the ingress writes.
fn source_ip(received_from: &str) -> Option<String> {
    let inner = received_from.rsplit_once('[')?.1.split_once(']')?.0;
    inner.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
}

/// RFC 3464 `Diagnostic-Code` as SES writes it: `smtp; <reply>` for a remote's reply, our own
/// description otherwise (`line` carries the planner's note, e.g. an expired queue lifetime).
fn diagnostic_code(verdict: &Verdict, line: &str) -> String {
    match verdict.reply {
        Some(_) => format!("smtp; {line}"),
        None => line.to_string(),
    }
}

/// SES's `delayType`: a reply of the remote server, or our failure to reach one.
fn delay_type(verdict: &Verdict) -> &'static str {
    match (&verdict.reply, verdict.status.as_str()) {
        (Some(_), "4.2.2") => "MailboxFull",
        (Some(_), _) => "RecipientServerError",
        (None, _) => "TransientCommunicationFailure",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use shared::Reply;

    use super::*;
    use crate::decide::plan::plan;
    use crate::testkit;
    use crate::vocab::Remote;

    const T0: i64 = 1_800_000_000;

    fn reply(code: u16, text: &str) -> Verdict {
        Verdict::from_reply(Reply::parse(code, text))
    }

    /// Events of one attempt with these verdicts, 90 s after the message arrived.
    fn events_of(verdicts: &[(&str, Verdict)], attempt_no: u32) -> Vec<Value> {
        let cfg = testkit::config(&[("RELAY_RETRY_SCHEDULE", "1m,10m"), ("RELAY_QUEUE_LIFETIME", "5d")]);
        let rcpts: Vec<&str> = verdicts.iter().map(|(a, _)| *a).collect();
        let mut job = testkit::job("b.test", &rcpts, T0);
        job.attempt = attempt_no;
        job.received_from = "client.a.test ([192.0.2.7])".into();
        let attempt = Attempt {
            outcomes: verdicts.iter().map(|(a, v)| (a.to_string(), v.clone())).collect(),
            remote: Some(Remote {
                host: "mx.b.test".into(),
                addr: Some("198.51.100.25:25".parse().unwrap()),
                tls: true,
                ..Remote::default()
            }),
            ..Attempt::default()
        };
        let now = T0 + 90;
        let p = plan(&job, &attempt, now, &cfg);
        build(&job, &attempt, &p, now, &cfg).iter().map(|e| serde_json::from_str(&e.to_json()).unwrap()).collect()
    }

    #[test]
    fn one_event_per_recipient_in_the_ses_shape() {
        let events = events_of(
            &[
                ("ok@b.test", reply(250, "2.0.0 queued as 42")),
                ("later@b.test", reply(451, "4.3.0 try later")),
                ("no@b.test", reply(550, "5.1.1 no such user")),
            ],
            0,
        );
        let mail = json!({
            "timestamp": "2027-01-15T08:00:00.000Z",
            "messageId": testkit::QID,
            "source": "alice@a.test",
            "sourceIp": "192.0.2.7",
            "destination": ["ok@b.test", "later@b.test", "no@b.test"],
        });
        let at = "2027-01-15T08:01:30.000Z";
        assert_eq!(
            events[0],
            json!({"eventType": "Delivery", "mail": mail, "delivery": {
                "timestamp": at, "processingTimeMillis": 90_000, "recipients": ["ok@b.test"],
                "smtpResponse": "250 2.0.0 queued as 42", "remoteMtaIp": "198.51.100.25", "reportingMTA": "relay.test",
            }})
        );
        assert_eq!(
            events[1],
            json!({"eventType": "DeliveryDelay", "mail": mail, "deliveryDelay": {
                "timestamp": at, "delayType": "RecipientServerError", "expirationTime": "2027-01-20T08:00:00.000Z",
                "delayedRecipients": [{"emailAddress": "later@b.test", "status": "4.3.0", "diagnosticCode": "smtp; 451 4.3.0 try later"}],
                "remoteMtaIp": "198.51.100.25", "reportingMTA": "relay.test",
                "nextAttemptTime": "2027-01-15T08:02:30.000Z", "attempt": 1,
            }})
        );
        assert_eq!(
            events[2],
            json!({"eventType": "Bounce", "mail": mail, "bounce": {
                "bounceType": "Permanent", "bounceSubType": "NoEmail",
                "bouncedRecipients": [{"emailAddress": "no@b.test", "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 no such user"}],
                "timestamp": at, "remoteMtaIp": "198.51.100.25", "reportingMTA": "dns; relay.test",
            }})
        );
    }

    #[test]
    fn local_verdicts_and_expiry_say_so() {
        let refused = Verdict::deferred("4.4.1", "connection refused by mx.b.test");
        let [delay] = &events_of(&[("x@b.test", refused.clone())], 3)[..] else { panic!() };
        let d = &delay["deliveryDelay"];
        assert_eq!(d["delayType"], "TransientCommunicationFailure");
        assert_eq!(d["delayedRecipients"][0]["diagnosticCode"], "4.4.1 connection refused by mx.b.test");
        assert_eq!((d["attempt"].as_u64(), d["nextAttemptTime"].as_str()), (Some(4), Some("2027-01-15T08:11:30.000Z")));

        let null_mx = Verdict::failed("5.1.10", "b.test accepts no mail (null MX)");
        let [bounce] = &events_of(&[("x@b.test", null_mx)], 0)[..] else { panic!() };
        assert_eq!(bounce["bounce"]["bounceSubType"], "NoEmail");
        assert_eq!(
            bounce["bounce"]["bouncedRecipients"][0]["diagnosticCode"],
            "5.1.10 b.test accepts no mail (null MX)"
        );
    }

    #[test]
    fn delay_types_and_source_addresses() {
        assert_eq!(delay_type(&reply(452, "4.2.2 mailbox full")), "MailboxFull");
        assert_eq!(source_ip("mail.example ([2001:db8::1])").as_deref(), Some("2001:db8::1"));
        assert_eq!(source_ip("client.example.org [192.0.2.10]").as_deref(), Some("192.0.2.10"));
        assert_eq!(source_ip("relay.test (delivery status notification)"), None);
    }

    #[test]
    fn destination_is_capped() {
        let many: Vec<String> = (0..120).map(|i| format!("r{i}@b.test")).collect();
        let verdicts: Vec<(&str, Verdict)> = many.iter().map(|a| (a.as_str(), reply(250, "ok"))).collect();
        let events = events_of(&verdicts, 0);
        assert_eq!(events.len(), 120, "still one event per recipient");
        assert_eq!(events[119]["mail"]["destination"].as_array().unwrap().len(), MAX_DESTINATION);
        assert_eq!(events[119]["delivery"]["recipients"], json!(["r119@b.test"]));
    }
}
