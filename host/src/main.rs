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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The command runs as a task on a worker, not on this thread: the sync
    // loop would otherwise hand every event it wakes over to another thread
    // (a futex wake-up and a context switch each), where on a worker the
    // woken task usually runs next on the same thread.
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
