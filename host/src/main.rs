//! The `ikkyu` binary: set up logging, run the command line, print the
//! whole error chain on failure.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IKKYU_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ikkyu=info")),
        )
        .with_writer(std::io::stderr)
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
    match runtime.block_on(ikkyu::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
