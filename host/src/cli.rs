//! The `ikkyu` command line: parse arguments, load the config, run one
//! subcommand. Everything here is glue; errors carry context for the
//! operator and are printed with their whole chain by `main`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::bot::{Bot, redact};
use crate::chat::console::{self, WriterSink};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::store::Db;
use crate::transcript::{Setup, Transcript};

/// ikkyu: a ChatOps bot whose commands are WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        global = true,
        env = "IKKYU_CONFIG",
        default_value = "ikkyu.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bot on the Matrix homeserver of the config's [matrix] section.
    Run,
    /// Set up cross-signing for the bot's Matrix device and print the keys
    /// people compare to verify it. Run it while the bot is stopped.
    Verify,
    /// Chat with the bot in this terminal (or through a pipe) as one user.
    Console {
        /// The user you type as; `/as @other:server` switches.
        #[arg(long = "as", default_value = "@alice:local")]
        user: String,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Replay chat transcripts (`*.chat`) through the host; exit 1 on failure.
    Test {
        /// Transcript files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Folder of `<name>.wasm` plugins (default: the config's plugins folder).
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Database URL (default: a fresh SQLite file per transcript).
        #[arg(long, env = "IKKYU_TEST_DATABASE_URL")]
        database: Option<String>,
    },
    /// Show the last audited actions.
    Audit {
        /// How many.
        #[arg(short, default_value_t = 20)]
        n: i64,
    },
    /// Show recent jobs, or one job with the last lines of its output.
    Jobs {
        /// A job number.
        id: Option<i64>,
    },
    /// Compile the plugin on stdin into the cache: what the bot runs in a
    /// child process for each plugin it has not compiled before.
    #[command(name = "compile-plugin", hide = true)]
    CompilePlugin {
        /// The compiled plugins' folder.
        #[arg(long)]
        cache_dir: PathBuf,
        /// The bot's `runtime.max_concurrent_calls`.
        #[arg(long)]
        slots: u32,
        /// The bot's `runtime.memory_limit_mb`, in bytes.
        #[arg(long)]
        memory_bytes: usize,
    },
}

/// Loads the config, or the defaults when the default file is absent.
/// Plugins are compiled by a child process of this executable (see
/// `runtime::compiler`).
fn load_config(path: &Path, explicit: bool) -> anyhow::Result<Config> {
    let mut config = if !explicit && !path.exists() {
        tracing::info!("no {path:?}; using the built-in defaults");
        let base = std::env::current_dir().context("reading the current directory")?;
        Config::parse("", path, &base)?
    } else {
        let path = std::path::absolute(path).with_context(|| format!("resolving {path:?}"))?;
        Config::load(&path)?
    };
    config.runtime.compiler = std::env::current_exe().ok();
    Ok(config)
}

fn matrix_section(config: &Config) -> anyhow::Result<&crate::config::MatrixConfig> {
    config.matrix.as_ref().context(
        "the config has no [matrix] section: add one with homeserver and password (see ikkyu.toml), or try the bot without a server with `ikkyu console`",
    )
}

/// The main job: the bot on Matrix until Ctrl-C or SIGTERM.
async fn run_matrix(config: Config, clock: SharedClock) -> anyhow::Result<()> {
    use crate::chat::matrix::{MatrixChat, Syncer, connect};
    let matrix = matrix_section(&config)?.clone();
    let web = crate::web::bind(&config.web).await?;
    let client = connect(&config, &matrix).await?;
    let chat = Arc::new(MatrixChat::new(client.clone()));
    let direct_joins = chat.direct_joins();
    let bot = Arc::new(Bot::start(&config, chat, clock).await?);
    let _watch = if config.runtime.watch {
        Some(crate::watch::start(bot.clone(), &config.plugins_dir())?)
    } else {
        None
    };
    tracing::info!(
        user = %config.bot.user_id,
        homeserver = %matrix.homeserver,
        plugins = bot.plugins().len(),
        "ikkyu is running on Matrix"
    );
    let syncer = Arc::new(Syncer::new(client, bot.clone(), matrix, direct_joins)?);
    // Start-up is done: what it read ahead of the executable and does not
    // run again need not be mapped around the faults of what does.
    crate::code_pages::forget_unmapped();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let result = tokio::select! {
        r = syncer.clone().run() => r,
        () = bot.run_schedules() => Ok(()),
        () = bot.run_delivery() => Ok(()),
        () = bot.run_jobs() => Ok(()),
        r = serve_web(web, bot.clone()) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
    };
    tracing::info!("stopping");
    syncer.save_answered().await;
    bot.shutdown().await;
    result
}

/// Serves the web entry point on `listener`, or waits forever when it is
/// off, so it can sit in the same `select!` as the bot's other loops.
async fn serve_web(listener: Option<tokio::net::TcpListener>, bot: Arc<Bot>) -> anyhow::Result<()> {
    match listener {
        Some(l) => crate::web::Web::new(bot)?.serve(l).await,
        None => std::future::pending().await,
    }
}

impl Cli {
    /// Whether this process maps its machine code page by page
    /// ([`crate::code_pages`]): the long-running bot, whose memory is worth
    /// a page read for each page of code it runs, unless
    /// `IKKYU_CODE_PAGES=kernel` leaves it to the kernel.
    pub fn maps_code_page_by_page(&self) -> bool {
        matches!(self.command, Command::Run)
            && std::env::var_os("IKKYU_CODE_PAGES").is_none_or(|v| v != "kernel")
    }
}

/// Runs the command line; the exit code tells scripts what happened.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let explicit = std::env::var_os("IKKYU_CONFIG").is_some()
        || std::env::args().any(|a| a == "--config" || a == "-c" || a.starts_with("--config="));
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command {
        Command::Run => {
            let config = load_config(&cli.config, explicit)?;
            run_matrix(config, clock).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let config = load_config(&cli.config, explicit)?;
            let matrix = matrix_section(&config)?;
            let client = crate::chat::matrix::connect(&config, matrix).await?;
            let id = crate::chat::matrix::bootstrap(&client, matrix).await?;
            println!("user:        {}", id.user_id);
            println!("device:      {}", id.device_id);
            println!("session key: {}", id.ed25519);
            println!(
                "cross-signing: {}",
                if id.cross_signed {
                    "set up; this device is signed"
                } else {
                    "incomplete"
                }
            );
            println!(
                "To trust the bot, open its profile in your client, pick the device {} and verify it by comparing the session key above (\"manually verify by text\").",
                id.device_id
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Console { user } => {
            anyhow::ensure!(
                crate::roles::is_user_id(&user),
                "--as {user:?} is not a user id like @alice:local"
            );
            let config = load_config(&cli.config, explicit)?;
            // Trying the bot in a terminal must not fail for a port another
            // program (or another console) holds: it runs without the web.
            let web = crate::web::bind(&config.web).await.unwrap_or_else(|e| {
                eprintln!("ikkyu console: no web entry point: {e:#}");
                None
            });
            let sink = Arc::new(WriterSink::new(tokio::io::stdout()));
            let bot = Arc::new(Bot::start(&config, sink, clock.clone()).await?);
            // The terminal is the chat network, and it is here.
            bot.link().up();
            let _watch = if config.runtime.watch {
                Some(crate::watch::start(bot.clone(), &config.plugins_dir())?)
            } else {
                None
            };
            let names: Vec<String> = bot
                .plugins()
                .iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect();
            eprintln!(
                "ikkyu console: you are {user}; plugins: {}. Type {}help, /as @user:server to switch, /quit to leave.",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
                config.bot.prefix
            );
            // Schedules and jobs go on between lines; what they end with is
            // printed when it is delivered.
            let schedules = tokio::spawn({
                let bot = bot.clone();
                async move {
                    let web = async {
                        if let Err(e) = serve_web(web, bot.clone()).await {
                            tracing::error!("{e:#}");
                        }
                    };
                    tokio::join!(bot.run_schedules(), bot.run_jobs(), bot.run_delivery(), web);
                }
            });
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            let bot = &bot;
            console::run(
                input,
                user,
                || clock.now_ms(),
                |msg| async move {
                    // One failed line (say, the database briefly away) must
                    // not end the session; it is not marked processed, so
                    // typing it again retries it.
                    if let Err(e) = bot.handle(&msg).await {
                        tracing::error!("handling {:?} failed: {e:#}", msg.body);
                        eprintln!("error: {e:#}");
                    }
                    Ok(())
                },
            )
            .await?;
            schedules.abort();
            // Wait until it has stopped, so no pass runs on a closed pool.
            let _ = schedules.await;
            bot.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::CompilePlugin {
            cache_dir,
            slots,
            memory_bytes,
        } => {
            crate::runtime::compiler::child_main(&cache_dir, slots, memory_bytes)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = load_config(&cli.config, explicit)?;
            let url = config.database_url()?;
            Db::open(&url)
                .await
                .with_context(|| format!("migrating {}", redact(&url)))?;
            println!("database {} is up to date", redact(&url));
            Ok(ExitCode::SUCCESS)
        }
        Command::Test {
            files,
            plugins,
            database,
        } => {
            let plugins_dir = match plugins {
                Some(dir) => dir,
                None => load_config(&cli.config, explicit)?.plugins_dir(),
            };
            let plugins_dir = std::path::absolute(&plugins_dir)?;
            let setup = Setup {
                plugins_dir,
                database_url: database,
            };
            let mut failed = 0;
            for file in &files {
                match async { Transcript::load(file)?.run(&setup).await }.await {
                    Ok(steps) => println!("ok   {} ({steps} steps)", file.display()),
                    Err(e) => {
                        failed += 1;
                        println!("FAIL {e}");
                    }
                }
            }
            println!("{} passed, {failed} failed", files.len() - failed);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Jobs { id } => {
            let config = load_config(&cli.config, explicit)?;
            let db = Db::open(&config.database_url()?).await?;
            let now = clock.now_ms();
            let text = match id {
                None => crate::jobs::show::list(&db.jobs_recent(50).await?, now),
                Some(id) => match db.job(id).await? {
                    Some(job) => crate::jobs::show::detail(&job, now),
                    None => anyhow::bail!("there is no job {id}"),
                },
            };
            // Plugins and jobs wrote parts of this: nothing reaches the
            // terminal that could move its cursor.
            for line in text.lines() {
                println!("{}", crate::text::one_line(line));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { n } => {
            let config = load_config(&cli.config, explicit)?;
            let db = Db::open(&config.database_url()?).await?;
            for e in db.audit_recent(n).await?.into_iter().rev() {
                let when = chrono::DateTime::from_timestamp_millis(e.at_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                // Chat and plugins wrote these fields: no control
                // character reaches the terminal.
                let show = crate::text::one_line;
                println!(
                    "{when} {:<8} {:<20} {:<10} {:<8} {:<8} {:>7.1}ms {} {}",
                    show(&e.kind),
                    show(&e.actor),
                    show(e.plugin.as_deref().unwrap_or("-")),
                    e.decision,
                    e.outcome,
                    e.duration_us as f64 / 1000.0,
                    show(e.room.as_deref().unwrap_or("-")),
                    show(&e.command)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
