//! `ingress`: read the configuration, connect to S3 and SQS, serve until SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use ingress::config::{IngressConfig, SpoolMode};
use ingress::listener::Server;
use ingress::spool::{AwsSpool, DiscardSpool, Spool};

#[tokio::main]
async fn main() -> ExitCode {
    ingress::alloc::return_part_buffers_to_the_system();
    shared::logging::init();
    let cfg = match IngressConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ingress: {e}");
            return ExitCode::from(2);
        }
    };
    let spool: Arc<dyn Spool> = match cfg.spool_mode {
        SpoolMode::S3 => Arc::new(AwsSpool {
            clients: shared::aws::clients().await,
            bucket: cfg.spool.bucket.clone(),
            queue_url: cfg.spool.queue_url.clone(),
        }),
        SpoolMode::Discard => {
            tracing::warn!("INGRESS_SPOOL=discard: accepted mail is dropped (benchmark mode)");
            Arc::new(DiscardSpool)
        }
    };
    let server = match Server::bind(&cfg, spool).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ingress: {e}");
            return ExitCode::from(2);
        }
    };
    server.run(shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// SIGTERM (ECS stopping the task) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
