//! The relay's own delivery rate: the real handler, MX/smarthost routing and SMTP client, run
//! the way one `relay poll` worker runs them (batches of 10, one after the other), with the
//! in-memory spool and queue in place of S3 and SQS. tests/bench_relay.sh sets it beside
//! `relay poll` on LocalStack and Postfix's smtp client, all into the same smtp-sink.
//!
//! `cargo run --release -p relay --example engine_bench -- COUNT MESSAGE_FILE` with the relay's
//! variables set (RELAY_SMARTHOST, RELAY_HELO_NAME, …; SPOOL_* must be set but are unused).
//! Exits non-zero unless every job completed (its message deleted, no state written) and nothing
//! was re-enqueued.
//! Sessions are reused as in production (`RELAY_DESTINATION_CONCURRENCY` and friends apply);
//! `RELAY_MAX_MESSAGES_PER_CONNECTION=1` measures one session per job.
//!
//! With `RELAY_DKIM_KEYS` set (and the message's `From:` domain among them), every delivery is
//! signed as in production. `engine_bench COUNT MESSAGE_FILE --sign-only` times the signing step
//! alone instead: COUNT signatures of the message on one thread, its CPU time per message printed
//! (a separate run, so that the delivery run's CPU holds only what deliveries cost).

use std::time::Instant;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::Message;
use relay::config::RelayConfig;
use relay::deliver::SmtpTransport;
use relay::dkim::Signer;
use relay::handler::{Deps, SystemClock, handle};
use relay::route::HickoryResolver;
use relay::route::mta_sts::{HttpsFetcher, MtaSts};
use relay::store::memory::{MemoryEvents, MemoryQueue, MemorySpool};
use shared::{Job, Recipient, keys, queue_id};

#[tokio::main]
async fn main() {
    shared::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (count, file, sign_only) = match &args[..] {
        [count, file] => (count, file, false),
        [count, file, flag] if flag == "--sign-only" => (count, file, true),
        _ => panic!("usage: engine_bench COUNT MESSAGE_FILE [--sign-only]"),
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let message = std::fs::read(file).expect("MESSAGE_FILE is readable");
    let config = RelayConfig::from_env().expect("relay configuration");
    let clients = shared::aws::clients().await;
    let dkim = relay::dkim::load::load(&config.dkim_keys, &clients.s3).await.expect("RELAY_DKIM_KEYS");
    if sign_only {
        time_signing(&dkim, &message, count);
        return;
    }
    let (spool, queue) = (MemorySpool::default(), MemoryQueue::default());
    let jobs: Vec<Job> = (0..count).map(|i| job(i, &message, &spool)).collect();
    let deps = Deps {
        resolver: Box::new(HickoryResolver::new(&config.dns_servers).expect("resolver")),
        transport: Box::new(SmtpTransport::new(&config).expect("transport").with_dkim(dkim)),
        mta_sts: MtaSts::new(
            Box::new(spool.clone()),
            Box::new(HttpsFetcher::new(relay::deliver::tls::roots(None).expect("web PKI roots"))),
        ),
        spool: Box::new(spool.clone()),
        queue: Box::new(queue.clone()),
        clock: Box::new(SystemClock),
        // Events are built and counted as in production; only their queue is in memory.
        events: Some(Box::new(MemoryEvents::default())),
        metrics: shared::metrics::Metrics::memory(relay::metrics::SERVICE, relay::metrics::METRICS).0,
        suppression: None,
        leases: None,
        config,
    };
    let started = Instant::now();
    for batch in jobs.chunks(10) {
        let failed = handle(event(batch), &deps).await.batch_item_failures;
        assert!(failed.is_empty(), "batch item failures: {}", failed.len());
    }
    let secs = started.elapsed().as_secs_f64();
    deps.transport.shutdown().await; // QUIT the idle sessions, as `relay poll` does on SIGTERM
    let objects = spool.0.lock().unwrap();
    let sent = jobs.iter().filter(|j| !objects.contains_key(&j.message_key)).count();
    let states = objects.keys().filter(|k| k.starts_with(keys::STATE_PREFIX)).count();
    drop(objects);
    let requeued = queue.0.lock().unwrap().len();
    println!("{count} jobs in {secs:.2}s = {:.0}/s; {sent} sent, {requeued} re-enqueued", count as f64 / secs);
    if sent != count || requeued != 0 || states != 0 {
        std::process::exit(1);
    }
}

/// The pure signing step, `count` times over `message`: wall time, and this thread's CPU time
/// (Linux's per-thread schedstat, in nanoseconds), which other load on the machine does not inflate.
fn time_signing(dkim: &Signer, message: &[u8], count: usize) {
    let keys: Vec<String> = dkim.keys_for(message).iter().map(|k| format!("{}/{}", k.domain, k.selector)).collect();
    assert!(!keys.is_empty(), "RELAY_DKIM_KEYS has no key for the message's From: domain");
    let (started, cpu0) = (Instant::now(), thread_cpu_ns());
    for _ in 0..count {
        let signatures = dkim.sign(message).expect("signing");
        std::hint::black_box(signatures);
    }
    let cpu_us = (thread_cpu_ns() - cpu0) as f64 / 1e3 / count as f64;
    let wall_us = started.elapsed().as_secs_f64() * 1e6 / count as f64;
    println!(
        "dkim: {count} messages signed, {cpu_us:.1} us CPU per message ({wall_us:.1} us wall; {})",
        keys.join(", ")
    );
}

fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat (Linux)");
    stat.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat's first field")
}

/// A first-attempt job for one recipient, its message stored under its own key: submitted mail
/// (`trusted`), so the DKIM runs sign it.
fn job(i: usize, message: &[u8], spool: &MemorySpool) -> Job {
    let id = queue_id::new_queue_id();
    spool.0.lock().unwrap().insert(keys::message_key(&id), message.to_vec());
    let rcpt = Recipient::new(format!("r{i}@example.test"));
    let now = chrono::Utc::now().timestamp();
    Job {
        trusted: true,
        ..Job::first_attempt(&id, "bench@example.org", "example.test", vec![rcpt], message.len() as u64, now)
    }
}

/// The SQS event the Lambda service would deliver for these jobs, built as `relay poll` builds it.
fn event(jobs: &[Job]) -> SqsEvent {
    let messages: Vec<Message> =
        jobs.iter().map(|j| Message::builder().message_id(&j.queue_id).body(j.to_json()).build()).collect();
    relay::poll::to_event(&messages)
}
