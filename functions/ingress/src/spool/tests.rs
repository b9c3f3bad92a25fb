//! Jobs per domain, and the hand-off's failure paths against a scripted S3 + SQS endpoint
//! (plain HTTP on loopback, spoken to by the real SDK clients): refused SQS entries are sent
//! again, the message is withdrawn only when no job went out, and a multipart upload is
//! completed with every part's checksum — or aborted when any step of it fails; a stored
//! message's header section is replaced by one PUT, or by a new first part and the rest copied
//! inside S3, and the old version deleted only once the new one exists.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::{Credentials, Region};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::session::Envelope;
use crate::session::budget::MemoryBudget;
use shared::{BodyType, DsnParams, Recipient};

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        queue_id: "01JD0000000000000000000000".into(),
        sender: "alice@example.org".into(),
        recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        dsn: DsnParams::default(),
        body_type: BodyType::EightBitMime,
        smtputf8: false,
        trusted: true,
    }
}

fn incoming(rcpts: &[&str]) -> Incoming {
    Incoming {
        env: envelope(rcpts),
        received_from: "client ([192.0.2.1])".into(),
        client: "192.0.2.1".parse().unwrap(),
        helo: "client".into(),
        content: Content::Whole(b"Subject: x\r\n\r\nhi\r\n".to_vec()),
        size: 18,
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
        assert_eq!(j.message_key, "spool/db/01JD0000000000000000000000.eml");
        assert_eq!((j.first_seen, j.not_before, j.attempt), (1000, 1000, 0));
        assert_eq!(j.size, 18);
        assert_eq!(j.body, BodyType::EightBitMime);
        assert!(j.trusted, "mail of a client allowed to relay is ours to sign");
        assert!(Job::from_json(&j.to_json()).is_ok());
    }
    let mut inbound = incoming(&["b@one.test"]);
    inbound.env.trusted = false;
    assert!(!jobs_for(&inbound, 1000)[0].trusted, "inbound mail is never ours to sign");
}

#[test]
fn metadata_carries_the_envelope_for_trace() {
    let msg = incoming(&["b@one.test", "c@two.test", "d@ONE.test"]);
    let back = shared::meta::decode(&message_metadata(&msg.env, 1000)).unwrap();
    assert_eq!((back.sender.as_str(), back.received, back.jobs), ("alice@example.org", 1000, 2));
    assert_eq!(back.jobs as usize, jobs_for(&msg, 1000).len(), "the count the jobs carry");
    assert_eq!(back.recipients, ["b@one.test", "d@ONE.test", "c@two.test"], "in job order");
    let many: Vec<String> = (0..200).map(|i| format!("user{i}@example.test")).collect();
    let env = envelope(&many.iter().map(String::as_str).collect::<Vec<_>>());
    let back = shared::meta::decode(&message_metadata(&env, 1000)).unwrap();
    assert_eq!(back.recipients.len() + back.omitted, 200);
    assert!(back.omitted > 0, "2 KB cannot hold 200 addresses");
}

/// One SendMessageBatch answer: the entry ids to refuse, and whether as the sender's fault.
type Refusals = (&'static [&'static str], bool);

/// A loopback endpoint playing S3 (PUT, DELETE, GET of a byte range answered with that many
/// `b`s, and the multipart calls CREATE, PART n, COPY n, COMPLETE n,m,..., ABORT: all succeed
/// unless named in `s3_failures`; with `versioned`, writes answer a version id) and SQS
/// (SendMessageBatch answered from `script` in order, everything accepted once it runs out).
/// `calls` logs what was asked; `heads` keeps each request's head.
struct FakeAws {
    url: String,
    calls: Arc<Mutex<Vec<String>>>,
    heads: Arc<Mutex<Vec<String>>>,
}

/// What the fake is scripted to do.
#[derive(Clone)]
struct Script {
    sqs: Arc<Mutex<std::vec::IntoIter<Refusals>>>,
    /// S3 calls (as logged) to answer with a non-retryable error.
    s3_failures: Arc<Vec<&'static str>>,
    /// Answer PUT and COMPLETE with `x-amz-version-id: v-new`, as a versioned bucket does.
    versioned: bool,
}

impl FakeAws {
    async fn start(script: Vec<Refusals>) -> Self {
        Self::scripted(script, &[]).await
    }

    async fn scripted(sqs: Vec<Refusals>, s3_failures: &[&'static str]) -> Self {
        Self::serve(sqs, s3_failures, false).await
    }

    async fn serve(sqs: Vec<Refusals>, s3_failures: &[&'static str], versioned: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (calls, heads) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (log, heads_log) = (calls.clone(), heads.clone());
        let script = Script {
            sqs: Arc::new(Mutex::new(sqs.into_iter())),
            s3_failures: Arc::new(s3_failures.to_vec()),
            versioned,
        };
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let (log, heads_log, script) = (log.clone(), heads_log.clone(), script.clone());
                tokio::spawn(async move {
                    while let Some((head, body)) = read_request(&mut sock).await {
                        heads_log.lock().unwrap().push(head.clone());
                        let (status, headers, reply) = answer(&head, &body, &log, &script);
                        let http =
                            format!("HTTP/1.1 {status}\r\n{headers}content-length: {}\r\n\r\n{reply}", reply.len());
                        sock.write_all(http.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        Self { url, calls, heads }
    }

    /// The head of the first request whose log entry starts with `call`.
    fn head_of(&self, call: &str) -> String {
        let calls = self.calls();
        let i = calls.iter().position(|c| c.starts_with(call)).unwrap_or_else(|| panic!("no {call} in {calls:?}"));
        self.heads.lock().unwrap()[i].to_ascii_lowercase()
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
            clients: Clients {
                s3: aws_sdk_s3::Client::from_conf(s3),
                sqs: aws_sdk_sqs::Client::from_conf(sqs),
                dynamodb: aws_sdk_dynamodb::Client::from_conf(
                    aws_sdk_dynamodb::Config::builder().behavior_version_latest().build(),
                ),
            },
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

/// The value of header `name` (lower case) in a request head.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// (status line, extra headers, body) for one request.
fn answer(head: &str, body: &[u8], log: &Mutex<Vec<String>>, script: &Script) -> (String, String, String) {
    let mut words = head.split(' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    if method == "POST" && target == "/" {
        return ("200 OK".into(), "content-type: application/x-amz-json-1.0\r\n".into(), answer_sqs(body, log, script));
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
    let text = String::from_utf8_lossy(body);
    let call = match (method, param("uploadId"), param("partNumber")) {
        ("POST", None, _) if query.starts_with("uploads") => "CREATE".to_string(),
        ("PUT", Some(_), Some(n)) => match header(head, "x-amz-copy-source") {
            Some(source) => {
                format!("COPY {n} {} of {source}", header(head, "x-amz-copy-source-range").unwrap_or("all"))
            }
            None => format!("PART {n}"),
        },
        ("GET", None, _) => format!("GET {}", header(head, "range").unwrap_or("all")),
        ("DELETE", None, _) if param("versionId").is_some() => format!("DELETE {}", param("versionId").unwrap()),
        ("POST", Some(_), _) => {
            let numbers: Vec<&str> = text.split("<PartNumber>").skip(1).filter_map(|p| p.split('<').next()).collect();
            let checksums = text.matches("<ChecksumCRC32>").count();
            format!("COMPLETE {} (checksums: {checksums})", numbers.join(","))
        }
        ("DELETE", Some(_), _) => "ABORT".to_string(),
        (m, _, _) => m.to_string(),
    };
    log.lock().unwrap().push(call.clone());
    if script.s3_failures.iter().any(|f| call.starts_with(f)) {
        let error = "<Error><Code>InvalidRequest</Code><Message>scripted failure</Message></Error>";
        return ("400 Bad Request".into(), "content-type: application/xml\r\n".into(), error.into());
    }
    let xml = "content-type: application/xml\r\n".to_string();
    let version = if script.versioned { "x-amz-version-id: v-new\r\n" } else { "" };
    match call.split(' ').next().unwrap_or_default() {
        "CREATE" => (
            "200 OK".into(),
            xml,
            "<InitiateMultipartUploadResult><Bucket>spool</Bucket><Key>k</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>".into(),
        ),
        "PART" => {
            // Like S3: the part's ETag, and the checksum the request carried.
            let crc = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-amz-checksum-crc32:").map(|v| v.trim().to_string()))
                .unwrap_or_default();
            ("200 OK".into(), format!("etag: \"etag-{}\"\r\nx-amz-checksum-crc32: {crc}\r\n", &call[5..]), String::new())
        }
        "COPY" => (
            "200 OK".into(),
            xml,
            "<CopyPartResult><ETag>\"copied\"</ETag><ChecksumCRC32>AAAAAA==</ChecksumCRC32></CopyPartResult>".into(),
        ),
        "GET" => {
            let range = call.strip_prefix("GET bytes=").and_then(|r| r.split_once('-')).expect("a ranged GET");
            let (from, to): (usize, usize) = (range.0.parse().unwrap(), range.1.parse().unwrap());
            let headers = format!("content-range: bytes {from}-{to}/*\r\n");
            ("206 Partial Content".into(), headers, "b".repeat(to - from + 1))
        }
        "PUT" => ("200 OK".into(), version.into(), String::new()),
        "COMPLETE" => (
            "200 OK".into(),
            format!("{xml}{version}"),
            "<CompleteMultipartUploadResult><Bucket>spool</Bucket><Key>k</Key><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>".into(),
        ),
        "ABORT" | "DELETE" => ("204 No Content".into(), String::new(), String::new()),
        _ => ("200 OK".into(), String::new(), String::new()),
    }
}

fn answer_sqs(body: &[u8], log: &Mutex<Vec<String>>, script: &Script) -> String {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap();
    let ids: Vec<String> =
        request["Entries"].as_array().unwrap().iter().map(|e| e["Id"].as_str().unwrap().into()).collect();
    log.lock().unwrap().push(format!("SEND {}", ids.join(",")));
    let (refused, sender_fault) = script.sqs.lock().unwrap().next().unwrap_or((&[], false));
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

/// A message of two parts: the upload opened and its first part uploaded through the spool.
async fn two_part_message(spool: &AwsSpool) -> Incoming {
    let env = envelope(&["b@one.test"]);
    let upload = spool.begin(&env).await.unwrap();
    assert_eq!(upload.key, "spool/db/01JD0000000000000000000000.eml");
    let part = Part { upload: upload.clone(), number: 1, bytes: vec![b'a'; 64] };
    let tag = spool.upload_part(part).await.unwrap();
    assert_eq!(tag.etag, "\"etag-1\"");
    assert!(tag.crc32.is_some(), "the part's checksum is kept for the completion");
    Incoming {
        env,
        received_from: "client ([192.0.2.1])".into(),
        client: "192.0.2.1".parse().unwrap(),
        helo: "client".into(),
        content: Content::Multipart { upload, parts: vec![tag], last: b"tail\r\n".to_vec() },
        size: 70,
        reservation: MemoryBudget::new(1 << 20).reservation(),
    }
}

#[tokio::test]
async fn a_multipart_message_is_completed_with_every_parts_checksum_then_queued() {
    let aws = FakeAws::start(vec![]).await;
    let spool = aws.spool();
    let msg = two_part_message(&spool).await;
    spool.store(msg).await.unwrap();
    assert_eq!(aws.calls(), ["CREATE", "PART 1", "PART 2", "COMPLETE 1,2 (checksums: 2)", "SEND j0"]);
    let create = aws.head_of("CREATE");
    assert!(create.contains("content-type: message/rfc822"), "{create}");
    assert!(create.contains("x-amz-checksum-algorithm: crc32"), "{create}");
    assert!(aws.head_of("PART 2").contains("x-amz-checksum-crc32:"));
}

/// Store a two-part message against an endpoint scripted with these failures and refusals.
async fn store_two_parts(s3_failures: &[&'static str], sqs: Vec<Refusals>) -> (Vec<String>, Result<(), String>) {
    let aws = FakeAws::scripted(sqs, s3_failures).await;
    let spool = aws.spool();
    let msg = two_part_message(&spool).await;
    let result = spool.store(msg).await;
    (aws.calls(), result)
}

#[tokio::test]
async fn a_failed_last_part_aborts_the_upload() {
    let (calls, result) = store_two_parts(&["PART 2"], vec![]).await;
    assert!(result.unwrap_err().contains("upload part 2"));
    assert_eq!(calls, ["CREATE", "PART 1", "PART 2", "ABORT"], "no completion, no job");
}

#[tokio::test]
async fn a_failed_completion_aborts_and_withdraws_the_key() {
    let (calls, result) = store_two_parts(&["COMPLETE"], vec![]).await;
    assert!(result.unwrap_err().contains("S3 complete"));
    assert_eq!(calls, ["CREATE", "PART 1", "PART 2", "COMPLETE 1,2 (checksums: 2)", "ABORT", "DELETE"]);
}

#[tokio::test]
async fn a_multipart_message_whose_jobs_all_fail_is_withdrawn() {
    let refuse_all: Refusals = (&["j0"], false);
    let (calls, result) = store_two_parts(&[], vec![refuse_all; 3]).await;
    assert!(result.unwrap_err().contains("try again"));
    assert_eq!(calls[calls.len() - 4..], ["SEND j0", "SEND j0", "SEND j0", "DELETE"]);
}

#[tokio::test]
async fn failures_to_open_upload_a_part_or_abort_are_reported_or_logged() {
    let aws = FakeAws::scripted(vec![], &["CREATE", "PART", "ABORT"]).await;
    let spool = aws.spool();
    let err = spool.begin(&envelope(&["b@one.test"])).await.unwrap_err();
    assert!(err.contains("S3 create upload spool/db/01JD0000000000000000000000.eml"), "{err}");
    let upload = Upload { queue_id: "Q".into(), key: "spool/Q.eml".into(), id: "up-1".into() };
    let err = spool.upload_part(Part { upload: upload.clone(), number: 3, bytes: vec![1] }).await.unwrap_err();
    assert!(err.contains("upload part 3 of spool/Q.eml"), "{err}");
    spool.abort(upload).await; // logged, not returned: the lifecycle rule is the backstop
    assert_eq!(aws.calls(), ["CREATE", "PART 3", "ABORT"]);
}

/// A stored message of `size` bytes whose 50-byte header section becomes `NEW_HEADER`, against
/// a versioned bucket that fails the calls named: the calls made and what came of it.
async fn replace_header(size: u64, s3_failures: &[&'static str]) -> (FakeAws, Result<Stored, String>) {
    let aws = FakeAws::serve(vec![], s3_failures, true).await;
    let stored = Stored { key: "spool/k.eml".into(), version: Some("v-old".into()), size };
    let change = crate::judge::HeaderChange { old_len: 50, new: NEW_HEADER.to_vec() };
    let result = aws.spool().replace_header(&envelope(&["b@one.test"]), stored, change).await;
    (aws, result)
}

const NEW_HEADER: &[u8] = b"Authentication-Results: mx.test; spf=pass\r\nSubject: hi\r\n\r\n";

#[tokio::test]
async fn a_header_over_a_small_body_is_replaced_by_one_put_then_the_old_version_deleted() {
    let (aws, result) = replace_header(50 + 100, &[]).await;
    assert!(aws.head_of("PUT").starts_with("put /spool/spool/k.eml?"), "the same key");
    assert_eq!(aws.calls(), ["GET bytes=50-149", "PUT", "DELETE v-old"]);
    let stored = result.unwrap();
    assert_eq!((stored.version.as_deref(), stored.size), (Some("v-new"), NEW_HEADER.len() as u64 + 100));
}

#[tokio::test]
async fn a_header_over_a_large_body_is_a_new_first_part_and_the_rest_copied_inside_s3() {
    let size = 50 + MIN_PART + 1000;
    let (aws, result) = replace_header(size, &[]).await;
    assert!(aws.head_of("CREATE").starts_with("post /spool/spool/k.eml?uploads"), "the same key");
    let first_end = 50 + MIN_PART - 1;
    assert_eq!(
        aws.calls(),
        [
            format!("GET bytes=50-{first_end}"),
            "CREATE".into(),
            "PART 1".into(),
            format!("COPY 2 bytes={}-{} of spool/spool/k.eml?versionId=v-old", first_end + 1, size - 1),
            "COMPLETE 1,2 (checksums: 2)".into(),
            "DELETE v-old".into(),
        ]
    );
    let stored = result.unwrap();
    assert_eq!((stored.version.as_deref(), stored.size), (Some("v-new"), NEW_HEADER.len() as u64 + MIN_PART + 1000));
}

#[tokio::test]
async fn a_failed_copy_aborts_the_new_upload_and_keeps_the_old_version() {
    let (aws, result) = replace_header(50 + MIN_PART + 1000, &["COPY"]).await;
    let calls = aws.calls();
    let err = result.unwrap_err();
    assert!(err.contains("S3 copy part 2 of spool/k.eml"), "{err}");
    assert_eq!(calls[1..], ["CREATE", "PART 1", calls[3].as_str(), "ABORT"], "no completion, no delete");
}
