//! `relay`: under AWS Lambda when `AWS_LAMBDA_RUNTIME_API` is set, else `relay poll`.
//! Only wiring lives here; see the library for what the relay does. Metrics are flushed at the
//! end of every Lambda invocation (the process may be frozen or ended right after it), every
//! 10 s while `relay poll` is busy, and when it stops. With `STATE_TABLE` set, delivery leases
//! and destination slots are shared with every other worker (`relay::share`); the smarthost
//! password from `RELAY_SMARTHOST_PASSWORD_SECRET` is read before serving.

use std::process::ExitCode;
use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use relay::config::RelayConfig;
use relay::deliver::SmtpTransport;
use relay::deliver::credentials::Password;
use relay::handler::{Deps, SystemClock, handle_until};
use relay::heartbeat::{self, Visibility};
use relay::route::HickoryResolver;
use relay::route::mta_sts::{HttpsFetcher, MtaSts};
use relay::share::{DynamoTable, Leases, SharedSlots};
use relay::store::secrets::AwsSecret;
use relay::store::{EventSink, S3Spool, SqsEvents, SqsQueue};
use shared::metrics::Metrics;
use shared::suppression::{DynamoList, SuppressionList};
use shared::table::StateTable;

#[tokio::main]
async fn main() -> ExitCode {
    shared::logging::init();
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    if !lambda && std::env::args().nth(1).as_deref() != Some("poll") {
        eprintln!("usage: relay poll    (or run under AWS Lambda with an SQS event source)");
        return ExitCode::from(2);
    }
    let mut config = match RelayConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(2);
        }
    };
    if lambda {
        // The process is frozen between invocations: idle sessions would only time out at the
        // server. The handler's end-of-batch hook closes them instead.
        config.connection_idle = std::time::Duration::ZERO;
    }
    let resolver = match HickoryResolver::new(&config.dns_servers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay: RELAY_DNS_SERVERS: {e}");
            return ExitCode::from(2);
        }
    };
    let transport = match SmtpTransport::new(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(2);
        }
    };
    let policy_roots = match relay::deliver::tls::roots(config.tls_ca.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay: RELAY_TLS_CA: {e}");
            return ExitCode::from(2);
        }
    };
    let clients = shared::aws::clients().await;
    let metrics = Metrics::stdout(&config.metrics_namespace, relay::metrics::SERVICE, relay::metrics::METRICS);
    tokio::spawn(metrics.clone().run());
    let events = config
        .events_queue_url
        .clone()
        .map(|queue_url| -> Box<dyn EventSink> { Box::new(SqsEvents { client: clients.sqs.clone(), queue_url }) });
    // Keys are read once, before serving: one that cannot be used stops the relay here.
    let transport = match relay::dkim::load::load(&config.dkim_keys, &clients.s3).await {
        Ok(signer) => transport.with_dkim(signer),
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(2);
        }
    };
    // So is the smarthost password kept in a secret.
    let secret = config.smarthost.as_ref().and_then(|s| s.password_secret.clone());
    let transport = match secret {
        None => transport,
        Some(secret) => {
            match Password::read(Arc::new(AwsSecret::new(secret, &shared::aws::sdk_config().await))).await {
                Ok(password) => transport.with_smarthost_password(password),
                Err(e) => {
                    eprintln!("relay: RELAY_SMARTHOST_PASSWORD_SECRET: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    // The state table: the suppression list, the feedback domain's key (read, or made, now),
    // delivery leases and the limits every worker shares.
    let off = "no suppression list or feedback domain; delivery leases and destination limits are per worker";
    let table = StateTable::announce(config.spool.state_table.as_deref(), &clients.dynamodb, "relay", off);
    let now = chrono::Utc::now().timestamp();
    let transport = match shared::feedback::return_path(table.as_ref(), config.feedback_domain.as_deref(), now).await {
        Ok(rp) => transport.with_feedback(rp),
        Err(e) => {
            eprintln!("relay: FEEDBACK_DOMAIN: {e}");
            return ExitCode::from(2);
        }
    };
    let suppression = table.clone().map(|table| -> Box<dyn SuppressionList> { Box::new(DynamoList { table }) });
    let shared_table = table.map(|t| -> Arc<dyn relay::share::Table> { Arc::new(DynamoTable(t)) });
    let transport = match &shared_table {
        Some(t) => transport.with_shared_slots(SharedSlots::new(t.clone(), config.destination_concurrency)),
        None => transport,
    };
    let spool = S3Spool { client: clients.s3.clone(), bucket: config.spool.bucket.clone() };
    let deps = Arc::new(Deps {
        mta_sts: MtaSts::new(Box::new(spool.clone()), Box::new(HttpsFetcher::new(policy_roots))),
        spool: Box::new(spool),
        queue: Box::new(SqsQueue { client: clients.sqs.clone(), queue_url: config.spool.queue_url.clone() }),
        resolver: Box::new(resolver),
        transport: Box::new(transport),
        clock: Box::new(SystemClock),
        events,
        metrics: metrics.clone(),
        suppression,
        leases: shared_table.map(Leases::new),
        config,
    });
    if lambda {
        let visibility = Arc::new(Visibility::new(clients.sqs.clone(), deps.config.spool.queue_url.clone()));
        let service = service_fn(move |event: LambdaEvent<SqsEvent>| {
            let (deps, visibility) = (deps.clone(), visibility.clone());
            // The invocation's deadline bounds the store retries after a delivery.
            let left = event.context.deadline().duration_since(std::time::SystemTime::now()).unwrap_or_default();
            let deadline = tokio::time::Instant::now() + left;
            async move {
                let receipts = heartbeat::receipts(&event.payload);
                let work = handle_until(event.payload, &deps, Some(deadline));
                let response = heartbeat::keep_invisible(work, &visibility, &receipts).await;
                deps.metrics.flush();
                Ok::<_, lambda_runtime::Error>(response)
            }
        });
        if let Err(e) = lambda_runtime::run(service).await {
            eprintln!("relay: lambda runtime: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let polled = relay::poll::run(&deps, &clients.sqs).await;
    metrics.flush();
    match polled {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            ExitCode::FAILURE
        }
    }
}
