//! `ingress`: read the configuration, connect to S3 and SQS (and the state table, `STATE_TABLE`,
//! where the AUTH lockout counts and the feedback domain keeps its key), serve until SIGTERM; SIGHUP re-reads the AUTH file and the
//! recipient table. The metrics are flushed every 10 s while there is
//! activity and once more on the way out. `ingress health` is the container's health check
//! (see `ingress::server::health`).

use std::process::ExitCode;
use std::sync::Arc;

use ingress::config::{IngressConfig, SpoolMode};
use ingress::feedback::Feedback;
use ingress::feedback::origin::S3Origins;
use ingress::judge::authenticate::SealKey;
use ingress::policy::tables::LiveTables;
use ingress::server::listener::Server;
use ingress::spool::{AwsSpool, DiscardSpool, Spool};
use shared::events::{EventSink, SqsEvents};
use shared::metrics::Metrics;
use shared::suppression::DynamoList;
use shared::table::StateTable;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("health") {
        return health().await;
    }
    ingress::alloc::return_part_buffers_to_the_system();
    shared::logging::init();
    let cfg = match IngressConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ingress: {e}");
            return ExitCode::from(2);
        }
    };
    // Before the listeners open: once a client (or a test) can connect, SIGHUP must not be
    // its default action, which ends the process.
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let clients = shared::aws::clients().await;
    // Read once, before serving: a key that cannot be used stops the ingress here.
    let seal_key = match &cfg.arc_seal {
        None => None,
        Some(spec) => match shared::signing::load::load("INGRESS_ARC_SEAL", spec, &clients.s3).await {
            Ok(key) => Some(SealKey { domain: spec.domain.clone(), selector: spec.selector.clone(), key }),
            Err(e) => {
                eprintln!("ingress: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let (spool, state): (Arc<dyn Spool>, _) = match cfg.spool_mode {
        SpoolMode::S3 => {
            let off = "the AUTH lockout counts per task; no feedback domain";
            let state = StateTable::announce(cfg.spool.state_table.as_deref(), &clients.dynamodb, "ingress", off);
            let (bucket, queue_url) = (cfg.spool.bucket.clone(), cfg.spool.queue_url.clone());
            (Arc::new(AwsSpool { clients: clients.clone(), bucket, queue_url }), state)
        }
        SpoolMode::Discard => {
            tracing::warn!("INGRESS_SPOOL=discard: accepted mail is dropped (benchmark mode)");
            (Arc::new(DiscardSpool), None)
        }
    };
    let metrics = Metrics::stdout(&cfg.metrics_namespace, ingress::metrics::SERVICE, ingress::metrics::METRICS);
    tokio::spawn(metrics.clone().run());
    let feedback = match feedback(&cfg, &clients, state.clone(), spool.clone(), metrics.clone()).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ingress: FEEDBACK_DOMAIN: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::bind(&cfg, spool, metrics.clone(), seal_key, feedback, state).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ingress: {e}");
            return ExitCode::from(2);
        }
    };
    let tables = server.tables();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload(tables.clone()).await;
        }
    });
    server.run(shutdown_signal()).await;
    metrics.flush();
    ExitCode::SUCCESS
}

/// The feedback stage, when `FEEDBACK_DOMAIN` and `STATE_TABLE` are both set (its key is read,
/// or made, in the table now: a table that cannot be read stops the ingress here).
async fn feedback(
    cfg: &IngressConfig,
    clients: &shared::aws::Clients,
    table: Option<StateTable>,
    spool: Arc<dyn Spool>,
    metrics: Arc<Metrics>,
) -> Result<Option<Arc<Feedback>>, String> {
    let now = chrono::Utc::now().timestamp();
    let (Some(return_path), Some(table)) =
        (shared::feedback::return_path(table.as_ref(), cfg.feedback_domain.as_deref(), now).await?, table)
    else {
        return Ok(None);
    };
    let events = cfg
        .events_queue_url
        .clone()
        .map(|queue_url| -> Box<dyn EventSink> { Box::new(SqsEvents { client: clients.sqs.clone(), queue_url }) });
    Ok(Some(Arc::new(Feedback {
        return_path,
        origins: Box::new(S3Origins { s3: clients.s3.clone(), bucket: cfg.spool.bucket.clone() }),
        list: Box::new(DynamoList { table }),
        auto: cfg.suppression,
        events,
        spool,
        metrics,
    })))
}

/// `ingress health`: exit 0 when the MTA listener greets, 1 otherwise (one line on stderr).
async fn health() -> ExitCode {
    let probe = match ingress::server::health::Probe::from_vars(&shared::config::ProcessEnv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ingress health: {e}");
            return ExitCode::from(2);
        }
    };
    match ingress::server::health::check(&probe).await {
        Ok(greeting) => {
            eprintln!("ingress health: ok: {greeting}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ingress health: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Re-read the files off the reactor (they are small, but reading is still blocking I/O).
async fn reload(tables: Arc<LiveTables>) {
    tracing::info!(event = "reload", signal = "SIGHUP");
    let _ = tokio::task::spawn_blocking(move || tables.reload()).await;
}

/// SIGTERM (ECS stopping the task) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
