//! The `ikkyu` binary: set up logging, run the command line, print the
//! whole error chain on failure.

use std::process::ExitCode;

use clap::Parser;

/// What is logged unless `IKKYU_LOG` says otherwise: ikkyu's own news,
/// and warnings from the libraries it uses, except two kinds of matrix-sdk
/// noise a healthy bot makes. Its complaint on every sync that no room-key
/// backup is set up (the bot never sets one up; its keys live in its own
/// store). And its ERROR line for every request that failed, written
/// before the caller sees the answer: at start-up the SDK asks for account
/// data the bot never stored and takes the 404 as "none"; a failure that
/// matters is reported by whoever made the request (the sync loop, the
/// outbox), with what it was for.
const DEFAULT_LOG: &str =
    "warn,ikkyu=info,matrix_sdk_crypto::backups=error,matrix_sdk::http_client=off";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IKKYU_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal; none in a log file or journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = ikkyu::cli::Cli::parse();
    if cli.maps_code_page_by_page() {
        ikkyu::code_pages::map_only_what_runs();
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // As a task rather than `block_on`'s own future, so that a panic in it
    // ends in the one-line error below like any other failure.
    let ran = runtime.block_on(async { tokio::spawn(ikkyu::cli::run(cli)).await });
    match ran {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: ikkyu stopped unexpectedly: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One thread runs everything async unless `TOKIO_WORKER_THREADS` asks
/// for a pool of workers (tokio reads the count itself).
///
/// A bot's work is many short steps that each wake the next: a sync
/// response, a command, a commit, a reply. With a pool, each wake-up
/// tends to land on another worker, which costs a futex wake and a
/// context switch; measured over Matrix that was most of the bot's
/// kernel time. Nothing async here needs a second core: plugin calls
/// yield at every epoch tick, compiles run in a child process, and SQLite
/// statements (ours and matrix-sdk's, see `vendor/README.md`) take
/// microseconds and run in place.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}
