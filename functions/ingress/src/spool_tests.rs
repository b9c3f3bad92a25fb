//! Jobs per domain, and the hand-off's failure paths against a scripted S3 + SQS endpoint
//! (plain HTTP on loopback, spoken to by the real SDK clients): refused SQS entries are sent
//! again, and the message is withdrawn only when no job went out.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::{Credentials, Region};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::budget::MemoryBudget;
use crate::session::Envelope;
use shared::{BodyType, DsnParams, Recipient};

fn incoming(rcpts: &[&str]) -> Incoming {
    Incoming {
        env: Envelope {
            queue_id: "01JD0000000000000000000000".into(),
            sender: "alice@example.org".into(),
            recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
            dsn: DsnParams::default(),
            body_type: BodyType::EightBitMime,
            smtputf8: false,
        },
        received_from: "client ([192.0.2.1])".into(),
        message: b"Subject: x\r\n\r\nhi\r\n".to_vec(),
        reservation: MemoryBudget::new(1 << 20).reservation(),
    }
}

#[test]
fn one_job_per_domain_carrying_the_envelope() {
    let jobs = jobs_for(&incoming(&["b@one.test", "c@two.test", "d@ONE.test"]), 1000);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].domain, "one.test");
    let addrs: Vec<_> = jobs[0].recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(addrs, ["b@one.test", "d@ONE.test"]);
    assert_eq!(jobs[1].domain, "two.test");
    assert_ne!(jobs[0].job_id, jobs[1].job_id, "each job has its own id");
    for j in &jobs {
        assert_eq!(j.jobs, 2, "each job knows it shares the message");
        assert_eq!(j.message_key, "spool/01JD0000000000000000000000.eml");
        assert_eq!((j.first_seen, j.not_before, j.attempt), (1000, 1000, 0));
        assert_eq!(j.size, 18);
        assert_eq!(j.body, BodyType::EightBitMime);
        assert!(Job::from_json(&j.to_json()).is_ok());
    }
}

#[test]
fn metadata_carries_the_envelope_for_trace() {
    let jobs = jobs_for(&incoming(&["b@one.test", "c@two.test", "d@ONE.test"]), 1000);
    let m = message_metadata(&jobs, 18, 1000);
    let back = shared::meta::decode(&m).unwrap();
    assert_eq!((back.sender.as_str(), back.received, back.size, back.jobs), ("alice@example.org", 1000, 18, 2));
    assert_eq!(back.recipients, ["b@one.test", "d@ONE.test", "c@two.test"], "in job order");
    let many: Vec<String> = (0..200).map(|i| format!("user{i}@example.test")).collect();
    let jobs = jobs_for(&incoming(&many.iter().map(String::as_str).collect::<Vec<_>>()), 1000);
    let back = shared::meta::decode(&message_metadata(&jobs, 18, 1000)).unwrap();
    assert_eq!(back.recipients.len() + back.omitted, 200);
    assert!(back.omitted > 0, "2 KB cannot hold 200 addresses");
}

/// One SendMessageBatch answer: the entry ids to refuse, and whether as the sender's fault.
type Refusals = (&'static [&'static str], bool);

/// A loopback endpoint playing S3 (PUT, DELETE: 200) and SQS (SendMessageBatch answered from
/// `script` in order, everything accepted once it runs out). `calls` logs what was asked.
struct FakeAws {
    url: String,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeAws {
    async fn start(script: Vec<Refusals>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (log, script) = (calls.clone(), Arc::new(Mutex::new(script.into_iter())));
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let (log, script) = (log.clone(), script.clone());
                tokio::spawn(async move {
                    while let Some((head, body)) = read_request(&mut sock).await {
                        let reply = answer(&head, &body, &log, &script);
                        let http = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        sock.write_all(http.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        Self { url, calls }
    }

    fn spool(&self) -> AwsSpool {
        let creds = Credentials::new("test", "test", None, None, "test");
        let region = Region::new("us-east-1");
        let http = shared::aws::https_client();
        let s3 = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(region.clone())
            .credentials_provider(creds.clone())
            .endpoint_url(&self.url)
            .force_path_style(true)
            .http_client(http.clone())
            .build();
        let sqs = aws_sdk_sqs::Config::builder()
            .behavior_version_latest()
            .region(region)
            .credentials_provider(creds)
            .endpoint_url(&self.url)
            .http_client(http)
            .build();
        AwsSpool {
            clients: Clients { s3: aws_sdk_s3::Client::from_conf(s3), sqs: aws_sdk_sqs::Client::from_conf(sqs) },
            bucket: "spool".into(),
            queue_url: format!("{}/000000000000/jobs", self.url),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

/// Request head and body, or None when the client closed the connection.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = sock.read(&mut chunk).await.ok()?;
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

fn answer(head: &str, body: &[u8], log: &Mutex<Vec<String>>, script: &Mutex<std::vec::IntoIter<Refusals>>) -> String {
    let method = head.split(' ').next().unwrap_or_default().to_string();
    if method != "POST" {
        log.lock().unwrap().push(method);
        return String::new();
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap();
    let ids: Vec<String> =
        request["Entries"].as_array().unwrap().iter().map(|e| e["Id"].as_str().unwrap().into()).collect();
    log.lock().unwrap().push(format!("SEND {}", ids.join(",")));
    let (refused, sender_fault) = script.lock().unwrap().next().unwrap_or((&[], false));
    let ok: Vec<_> = ids
        .iter()
        .filter(|id| !refused.contains(&id.as_str()))
        .map(|id| serde_json::json!({"Id": id, "MessageId": format!("m-{id}"), "MD5OfMessageBody": "0"}))
        .collect();
    let failed: Vec<_> = refused
        .iter()
        .filter(|id| ids.iter().any(|i| i == *id))
        .map(|id| serde_json::json!({"Id": id, "SenderFault": sender_fault, "Code": "InternalError", "Message": "try again"}))
        .collect();
    serde_json::json!({"Successful": ok, "Failed": failed}).to_string()
}

const TWO_DOMAINS: &[&str] = &["b@one.test", "c@two.test"];

#[tokio::test]
async fn a_refused_entry_is_sent_again_and_then_the_message_is_accepted() {
    let aws = FakeAws::start(vec![(&["j1"], false)]).await;
    aws.spool().store(incoming(TWO_DOMAINS)).await.unwrap();
    assert_eq!(aws.calls(), ["PUT", "SEND j0,j1", "SEND j1"]);
}

#[tokio::test]
async fn nothing_queued_means_the_message_is_withdrawn() {
    let refuse_all: Refusals = (&["j0", "j1"], false);
    let aws = FakeAws::start(vec![refuse_all; 3]).await;
    let err = aws.spool().store(incoming(TWO_DOMAINS)).await.unwrap_err();
    assert!(err.contains("try again"), "{err}");
    assert_eq!(aws.calls(), ["PUT", "SEND j0,j1", "SEND j0,j1", "SEND j0,j1", "DELETE"]);
}

#[tokio::test]
async fn partly_queued_keeps_the_message_for_the_jobs_that_went_out() {
    let refuse_one: Refusals = (&["j1"], false);
    let aws = FakeAws::start(vec![refuse_one; 3]).await;
    let err = aws.spool().store(incoming(TWO_DOMAINS)).await.unwrap_err();
    assert!(err.contains("entry j1 failed"), "{err}");
    assert_eq!(aws.calls(), ["PUT", "SEND j0,j1", "SEND j1", "SEND j1"], "no DELETE: j0 needs the message");
}

#[tokio::test]
async fn a_sender_fault_is_not_retried() {
    let aws = FakeAws::start(vec![(&["j0", "j1"], true)]).await;
    aws.spool().store(incoming(TWO_DOMAINS)).await.unwrap_err();
    assert_eq!(aws.calls(), ["PUT", "SEND j0,j1", "DELETE"]);
}
