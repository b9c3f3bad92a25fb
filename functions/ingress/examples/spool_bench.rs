//! Raw spool rate: `S3 PUT + SQS SendMessageBatch` per message, through the ingress's own
//! [`AwsSpool`] but without SMTP, at a given concurrency. The ceiling the ingress with S3 is
//! measured against (tests/bench_ingress.sh).
//!
//! `cargo run --release -p ingress --example spool_bench -- COUNT CONCURRENCY SIZE`
//! with SPOOL_BUCKET, SPOOL_QUEUE_URL and the AWS variables set.

use std::sync::Arc;
use std::time::Instant;

use ingress::session::budget::MemoryBudget;
use ingress::session::{Envelope, Incoming};
use ingress::spool::upload::Content;
use ingress::spool::{AwsSpool, Spool};
use shared::{BodyType, DsnParams, Recipient};

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (count, concurrency, size) = match args[..] {
        [c, p, s] => (c, p, s),
        _ => (2000, 20, 2000),
    };
    let spool = Arc::new(AwsSpool {
        clients: shared::aws::clients().await,
        bucket: std::env::var("SPOOL_BUCKET").expect("SPOOL_BUCKET"),
        queue_url: std::env::var("SPOOL_QUEUE_URL").expect("SPOOL_QUEUE_URL"),
    });
    let budget = MemoryBudget::new(u64::MAX / 2);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (spool, budget, next) = (spool.clone(), budget.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    let msg = Incoming {
                        env: Envelope {
                            queue_id: shared::queue_id::new_queue_id(),
                            sender: "bench@example.org".into(),
                            recipients: vec![Recipient::new("sink@example.test")],
                            dsn: DsnParams::default(),
                            body_type: BodyType::SevenBit,
                            smtputf8: false,
                            trusted: false,
                        },
                        received_from: "bench ([127.0.0.1])".into(),
                        client: std::net::Ipv4Addr::LOCALHOST.into(),
                        helo: "bench".into(),
                        content: Content::Whole(vec![b'x'; size]),
                        size: size as u64,
                        reservation: budget.reservation(),
                    };
                    let t = Instant::now();
                    spool.store(msg).await.expect("store");
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "raw S3 PUT + SQS send: {} messages, concurrency {concurrency}: {:.0} msg/s, p50 {:.1} ms, p99 {:.1} ms",
        all.len(),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
}
