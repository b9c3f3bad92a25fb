//! `relayctl`: the operator's view of the relay's queue — Postfix's `mailq`, `postcat -q` and
//! `postsuper` for a spool that lives in S3 and SQS — and of its suppression list (`suppress`). Only wiring lives here: arguments (clap),
//! configuration, clients, exit codes.
//!
//! Exit codes: 0 done (also when stdout is a closed pipe), 1 an error (on stderr), 2 a usage or
//! configuration error.

mod commands;
mod config;
mod fence;
mod render;
mod spool;
mod suppress;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::suppression::{DynamoList, Reason};
use shared::table::StateTable;

#[derive(Parser)]
#[command(
    name = "relayctl",
    version,
    about = "Inspect and act on the relay's queue and suppression list (SPOOL_BUCKET, SPOOL_QUEUE_URL, STATE_TABLE, AWS_*)"
)]
struct Cli {
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Jobs queued, in flight, delayed and dead-lettered, and the age of the oldest pending message.
    Queue,
    /// Every recipient of a message: state, attempts, last reply, remote host, next attempt.
    Trace { queue_id: String },
    /// The stored message, byte for byte.
    Show {
        queue_id: String,
        /// Print the envelope (sender, recipients) before the message.
        #[arg(long)]
        envelope: bool,
    },
    /// Move every job in the dead-letter queue back to the queue.
    Redrive,
    /// Stop delivery of a message's pending recipients.
    Cancel {
        queue_id: String,
        /// Send the sender a failure notification for them.
        #[arg(long)]
        bounce: bool,
    },
    /// Attempt a message's deferred recipients now.
    Retry { queue_id: String },
    /// The suppression list (STATE_TABLE): recipients the relay no longer attempts.
    Suppress {
        #[command(subcommand)]
        action: Suppress,
    },
}

#[derive(Subcommand)]
enum Suppress {
    /// Every suppressed address, in address order.
    List {
        /// Stop after this many (the output then says where the next page starts).
        #[arg(long)]
        limit: Option<usize>,
        /// Start after this address.
        #[arg(long)]
        after: Option<String>,
    },
    /// One address's entry; exits 1 when it is not listed.
    Show { address: String },
    /// Put an address on the list (replacing its entry if it has one).
    Add {
        address: String,
        #[arg(long, default_value = "bounce", value_parser = ["bounce", "complaint"])]
        reason: String,
    },
    /// Take an address off the list.
    Remove { address: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match config::CtlConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("relayctl: {e}");
            return ExitCode::from(2);
        }
    };
    let clients = shared::aws::clients().await;
    let store = spool::Store {
        s3: clients.s3.clone(),
        sqs: clients.sqs.clone(),
        bucket: cfg.spool.bucket.clone(),
        queue_url: cfg.spool.queue_url.clone(),
    };
    let out = render::Out::new();
    let now = chrono::Utc::now().timestamp();
    let j = cli.json;
    let done = match &cli.command {
        Command::Queue => commands::queue(&store, &out, j, now).await,
        Command::Trace { queue_id } => commands::trace(&store, checked(queue_id), &out, j, now).await,
        Command::Show { queue_id, envelope } => commands::show(&store, checked(queue_id), *envelope, &out, j).await,
        Command::Redrive => commands::redrive(&store, &out, j).await,
        Command::Cancel { queue_id, bounce } => {
            commands::cancel(&store, &cfg, checked(queue_id), *bounce, &out, j, now).await
        }
        Command::Retry { queue_id } => commands::retry(&store, checked(queue_id), &out, j, now).await,
        Command::Suppress { action } => {
            let Some(name) = cfg.spool.state_table.clone() else {
                eprintln!("relayctl: STATE_TABLE is not set: there is no suppression list");
                return ExitCode::from(2);
            };
            let list = DynamoList { table: StateTable { client: clients.dynamodb.clone(), name } };
            match action {
                Suppress::List { limit, after } => suppress::list(&list, *limit, after.as_deref(), &out, j, now).await,
                Suppress::Show { address } => suppress::show(&list, suppress::checked(address), &out, j, now).await,
                Suppress::Add { address, reason } => {
                    let reason = Reason::parse(reason).expect("clap checked it");
                    suppress::add(&list, suppress::checked(address), reason, &out, j, now).await
                }
                Suppress::Remove { address } => suppress::remove(&list, suppress::checked(address), &out, j).await,
            }
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relayctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A queue id from the command line, or exit 2.
fn checked(id: &str) -> &str {
    if !shared::queue_id::is_queue_id(id) {
        eprintln!("relayctl: {id:?} is not a queue id (26 letters and digits, as in \"queued as …\")");
        std::process::exit(2);
    }
    id
}

/// True when the error is stdout going away (`relayctl … | head`).
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
