//! `cargo bench -p ikkyu-e2e`: the numbers in BENCHMARKS.md.
//!
//! Measures, through the real host and real plugins: the whole `!points`
//! path on SQLite and PostgreSQL (latency percentiles and sustained rate),
//! instantiate+call of an empty command, plugin load with and without the
//! compiled cache, the scheduler with 1,000 schedules, and the host's
//! resident memory. Prints Markdown.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ikkyu::bot::Bot;
use ikkyu::chat::console::{Console, RecordingSink};
use ikkyu::config::Config;
use ikkyu::directory::Directory;
use ikkyu::runtime::Runtime;
use ikkyu::runtime::bindings::Invocation;
use ikkyu::store::Db;
use ikkyu_e2e::{TempPostgres, plugins_dir, sqlite_url, start_bot};

const WARMUP: usize = 500;
const SAMPLES: usize = 5_000;
const SUSTAIN: Duration = Duration::from_secs(5);

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let total: Duration = samples.iter().sum();
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: total / samples.len() as u32,
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Sequential latency, then the rate sustained by `workers` concurrent
/// senders for SUSTAIN.
async fn points_path(
    bot: Arc<Bot>,
    sink: &RecordingSink,
    workers: usize,
) -> anyhow::Result<(Stats, f64)> {
    let console = Arc::new(Console::new(7));
    for i in 0..WARMUP {
        bot.handle(&console.message(&format!("@u{}:local", i % 50), "!points", 0))
            .await?;
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let msg = console.message(&format!("@u{}:local", i % 50), "!points", 0);
        let t = Instant::now();
        bot.handle(&msg).await?;
        samples.push(t.elapsed());
    }
    sink.take();
    let (done, rate) = sustained(&bot, &console, workers, SUSTAIN).await?;
    assert_eq!(sink.take().len() as u64, done, "one reply per command");
    Ok((stats(samples), rate))
}

/// `workers` senders, each sending `!points` and waiting for its answer,
/// for `how_long`: commands answered and their rate per second.
async fn sustained(
    bot: &Arc<Bot>,
    console: &Arc<Console>,
    workers: usize,
    how_long: Duration,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let until = started + how_long;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (bot, console) = (bot.clone(), console.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                bot.handle(&console.message(&format!("@w{w}:local"), "!points", 0))
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    Ok((done, done as f64 / started.elapsed().as_secs_f64()))
}

/// `IKKYU_BENCH_SUSTAIN=<seconds>`: only the sustained `!points` phase
/// after a warm-up, announced on stderr as it starts, so a profiler
/// attached then (`perf record -p`, `strace -p`) sees nothing else. On
/// SQLite with 4 senders, or with `IKKYU_BENCH_SUSTAIN_POSTGRES=<url>` on
/// a new database there with 8, as the full bench runs each.
async fn sustain_only(seconds: u64) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let pg = match std::env::var("IKKYU_BENCH_SUSTAIN_POSTGRES") {
        Ok(url) => Some(TempPostgres::create(&url).await?),
        Err(_) => None,
    };
    let (url, senders) = match &pg {
        Some(pg) => (pg.url.clone(), 8),
        None => (sqlite_url(data.path()), 4),
    };
    let (bot, sink) = start_bot(&url, data.path(), "quarantine_after = 1000000").await?;
    let (bot, console) = (Arc::new(bot), Arc::new(Console::new(7)));
    sustained(&bot, &console, senders, Duration::from_secs(2)).await?;
    sink.take();
    eprintln!("sustaining for {seconds} s, pid {}", std::process::id());
    let (done, rate) = sustained(&bot, &console, senders, Duration::from_secs(seconds)).await?;
    anyhow::ensure!(sink.take().len() as u64 == done, "one reply per command");
    println!("{done} `!points` in {seconds} s from {senders} senders: {rate:.0}/s");
    bot.shutdown().await;
    if let Some(pg) = pg {
        pg.drop_db().await?;
    }
    Ok(())
}

/// `!release request` against the loopback fake Jira: two fetches (the
/// ticket, its links), five signs, one commit; each a new ticket, so the
/// queue grows while it is measured, as it would in a busy week.
async fn release_requests(db_url: &str, data: &Path) -> anyhow::Result<Stats> {
    const RELEASE_WARMUP: usize = 50;
    const RELEASE_SAMPLES: usize = 500;
    let trackers = ikkyu_e2e::trackers::Trackers::start().await?;
    let jira = &trackers.jira.origin;
    let extra = format!(
        "quarantine_after = 1000000\n\
         [plugins.release]\n\
         grants = [\"chat\", \"kv\", \"events\", \"schedule\", \"directory\", \"config\", \"log\", \"http\"]\n\
         http = [{{ origin = {jira:?}, allow_private = true }}]\n\
         [plugins.release.config]\nremind_after = \"1d\"\n\
         [plugins.release.config.tracker]\nkind = \"jira\"\nurl = {jira:?}\n"
    );
    let (bot, sink) = start_bot(db_url, data, &extra).await?;
    let console = Console::new(11);
    let mut samples = Vec::with_capacity(RELEASE_SAMPLES);
    for i in 0..(RELEASE_WARMUP + RELEASE_SAMPLES) {
        let msg = console.message("@ann:local", &format!("!dobro R{i}-1 --no-admin"), 0);
        let t = Instant::now();
        bot.handle(&msg).await?;
        let took = t.elapsed();
        let replies = sink.take();
        anyhow::ensure!(
            replies.iter().any(|r| r.contains("is in the queue")),
            "request {i} was not queued: {replies:?}"
        );
        if i >= RELEASE_WARMUP {
            samples.push(took);
        }
    }
    bot.shutdown().await;
    Ok(stats(samples))
}

async fn empty_call(bot: &Bot) -> anyhow::Result<Stats> {
    let table = bot.registry().current();
    let plugin = table
        .plugin("misbehave")
        .expect("misbehave is loaded")
        .clone();
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..(WARMUP + SAMPLES) {
        let inv = Invocation {
            message_id: format!("bench-{i}"),
            sender: "@a:local".into(),
            room: "!r:local".into(),
            roles: vec![],
            now_ms: 0,
        };
        let t = Instant::now();
        let out = bot
            .runtime()
            .command(&plugin, inv, "noop".into(), vec![])
            .await;
        let elapsed = t.elapsed();
        out.result
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    Ok(stats(samples))
}

async fn cold_load(data: &Path) -> anyhow::Result<(Duration, Duration)> {
    let config = Config::parse(
        "[runtime]\ncache_dir = \"compiled\"\n",
        Path::new("b.toml"),
        data,
    )?;
    let db = Db::open(&sqlite_url(data)).await?;
    let runtime = Runtime::new(
        &config,
        db.clone(),
        Directory::new(db, Default::default()),
        Arc::new(ikkyu::clock::SystemClock),
    )?;
    let wasm = std::fs::read(plugins_dir()?.join("points.wasm"))?;
    let t = Instant::now();
    runtime.compile(&wasm)?;
    let miss = t.elapsed();
    let mut hits = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        runtime.compile(&wasm)?;
        hits.push(t.elapsed());
    }
    Ok((miss, stats(hits).p50))
}

/// The scheduler with 1,000 announcements: the cost of a pass that finds
/// nothing due (the loop makes one at least every 30 s), and how fast due
/// runs are fired and committed.
async fn schedules() -> anyhow::Result<(Duration, f64)> {
    const N: usize = 1_000;
    let data = tempfile::tempdir()?;
    // 2026-11-23 00:00:30 UTC: the every-minute schedules are due at 00:01.
    let start = 1_795_392_030_000;
    let clock = Arc::new(ikkyu::clock::ManualClock::new(start));
    let (bot, sink) =
        ikkyu_e2e::start_bot_at(&sqlite_url(data.path()), data.path(), "", clock.clone()).await?;
    let console = Console::new(start);
    for i in 0..N {
        let text = format!("!announce every \"* * * * *\" !ops:local tick {i}");
        bot.handle(&console.message("@root:local", &text, start))
            .await?;
    }
    sink.take();
    let mut idle = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        bot.run_due_schedules().await?;
        idle.push(t.elapsed());
    }
    clock.set(start + 30_000);
    let t = Instant::now();
    let pass = bot.run_due_schedules().await?;
    let took = t.elapsed();
    anyhow::ensure!(pass.fired == N, "fired {} of {N}", pass.fired);
    anyhow::ensure!(sink.take().len() == N, "every run posted once");
    bot.shutdown().await;
    Ok((stats(idle).p50, N as f64 / took.as_secs_f64()))
}

/// Deploys of 100 hosts in batches of 10 with a job that exits at once,
/// through the running bot's own loops (jobs, delivery): the host's
/// overhead between batches (the last job of a batch ended → the first of
/// the next started, from the jobs' own records) and each rollout's wall
/// time.
async fn deploy_overhead(data: &Path) -> anyhow::Result<(Stats, Stats)> {
    const ROLLOUTS: usize = 10;
    let hosts: Vec<String> = (0..100).map(|n| format!("\"h{n:03}\"")).collect();
    let extra = format!(
        "quarantine_after = 1000000\n\
         [jobs.noop]\nargv = [\"/bin/true\"]\n\
         [plugins.deploy]\ngrants = [\"chat\", \"kv\", \"events\", \"schedule\", \"jobs\", \"config\", \"log\"]\n\
         jobs = [\"noop\"]\nrooms = [\"*\"]\n\
         [plugins.deploy.config.services.big]\n\
         datacenters = [{{ name = \"dc1\", hosts = [{}] }}]\nstep = 10\njobs = {{ batch = \"noop\" }}\n",
        hosts.join(", ")
    );
    let (bot, sink) = start_bot(&sqlite_url(data), data, &extra).await?;
    let bot = Arc::new(bot);
    let loops = tokio::spawn({
        let bot = bot.clone();
        async move { tokio::join!(bot.run_jobs(), bot.run_delivery()) }
    });
    let console = Console::new(23);
    let mut walls = Vec::new();
    for n in 1..=ROLLOUTS {
        let t = Instant::now();
        bot.answer(&console.message("@ann:local", &format!("!deploy big 1.{n}"), 0))
            .await?;
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let seen = sink.take().join("\n");
            if seen.contains("✅ done (100/100 hosts done)") {
                break;
            }
            anyhow::ensure!(!seen.contains("failed"), "rollout {n} failed: {seen}");
            anyhow::ensure!(Instant::now() < until, "rollout {n} did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        walls.push(t.elapsed());
    }
    loops.abort();
    let jobs = bot.db.jobs_recent(10_000).await?;
    let mut gaps = Vec::new();
    for n in 1..=ROLLOUTS as u64 {
        let mut rows: Vec<(i64, i64, i64)> = jobs
            .iter()
            .filter(|j| j.tag == format!("deploy/{n}"))
            .filter_map(|j| Some((j.id, j.started_ms?, j.ended_ms?)))
            .collect();
        // Numbered in the order they were committed: ten per batch.
        rows.sort();
        anyhow::ensure!(rows.len() == 100, "rollout {n} ran {} jobs", rows.len());
        for pair in rows.chunks(10).collect::<Vec<_>>().windows(2) {
            let ended = pair[0].iter().map(|r| r.2).max().unwrap_or(0);
            let started = pair[1].iter().map(|r| r.1).min().unwrap_or(0);
            gaps.push(Duration::from_millis(
                u64::try_from(started - ended).unwrap_or(0),
            ));
        }
    }
    bot.shutdown().await;
    Ok((stats(gaps), stats(walls)))
}

/// The store alone: `n` commits of what a `!points` command writes (its
/// marker, reply and audit record) from `callers` concurrent callers, no
/// plugin and no delivery: how many commits per second the group commit
/// takes in.
async fn group_commit(db_url: &str, callers: usize, n: usize) -> anyhow::Result<f64> {
    use ikkyu::store::{Commit, OutMessage, Target};
    let db = Arc::new(Db::open(db_url).await?);
    let commit = |i: usize| {
        let audit = ikkyu_e2e::command_record(&format!("@u{}:local", i % 50), "points", 1_000);
        let reply = OutMessage::to(Target::Room("!r:local".into()), format!("reply {i}"));
        Commit::only_audit(Some(format!("$bench-{i}")), audit, vec![reply])
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let db = db.clone();
        let mine: Vec<Commit> = (c..n).step_by(callers).map(commit).collect();
        tasks.push(tokio::spawn(async move {
            for one in &mine {
                db.commit(one).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    db.close().await;
    Ok(rate)
}

/// `IKKYU_BENCH_COUNT=<n>`: only `COUNT_WARMUP` + n sequential `!points`
/// on SQLite in the folder `IKKYU_BENCH_DATA` (its compiled-plugin cache
/// kept, its database started afresh), nothing else. Run under
/// `valgrind --tool=callgrind` with two values of n, the difference of the
/// totals divided by the difference of n is the instructions one command
/// costs, a number that does not move with the machine's load, so two
/// builds can be compared to within a percent (BENCHMARKS.md).
async fn count_points(n: usize) -> anyhow::Result<()> {
    const COUNT_WARMUP: usize = 100;
    let data = std::path::PathBuf::from(std::env::var("IKKYU_BENCH_DATA")?);
    std::fs::create_dir_all(&data)?;
    for file in ["ikkyu.db", "ikkyu.db-wal", "ikkyu.db-shm"] {
        let _ = std::fs::remove_file(data.join(file));
    }
    let (bot, sink) = start_bot(&sqlite_url(&data), &data, "quarantine_after = 1000000").await?;
    let console = Console::new(7);
    for i in 0..COUNT_WARMUP + n {
        bot.handle(&console.message(&format!("@u{}:local", i % 50), "!points", 0))
            .await?;
    }
    anyhow::ensure!(
        sink.take().len() == COUNT_WARMUP + n,
        "one reply per command"
    );
    bot.shutdown().await;
    println!("ran {n} counted `!points` after {COUNT_WARMUP} of warm-up");
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if let Ok(n) = std::env::var("IKKYU_BENCH_COUNT") {
        return count_points(n.parse()?).await;
    }
    if let Ok(s) = std::env::var("IKKYU_BENCH_SUSTAIN") {
        return sustain_only(s.parse()?).await;
    }
    let quiet = "quarantine_after = 1000000";
    let data = tempfile::tempdir()?;
    let rss_start = rss_mib();
    let (bot, sink) = start_bot(&sqlite_url(data.path()), data.path(), quiet).await?;
    let bot = Arc::new(bot);
    let rss_idle = rss_mib();
    println!("| measurement | result |\n|---|---|");
    let (lat, rate) = points_path(bot.clone(), &sink, 4).await?;
    let rss_load = rss_mib();
    println!(
        "| `!points` full path, SQLite: p50 / p99 / mean | {} / {} / {} |",
        us(lat.p50),
        us(lat.p99),
        us(lat.mean)
    );
    println!("| `!points` sustained, SQLite, 4 senders | {rate:.0} commands/s |");
    let mut pings = Vec::new();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        bot.db.ping().await?;
        pings.push(t.elapsed());
    }
    let ping = stats(pings);
    println!(
        "| one SQLite statement through sqlx (`SELECT 1`): p50 / p99 | {} / {} |",
        us(ping.p50),
        us(ping.p99)
    );
    let direct = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("{}?mode=rwc", sqlite_url(data.path())))
        .await?;
    let mut pings = Vec::new();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&direct).await?;
        pings.push(t.elapsed());
    }
    let ping = stats(pings);
    println!(
        "| same through sqlx's SQLite driver directly (no `Any`): p50 / p99 | {} / {} |",
        us(ping.p50),
        us(ping.p99)
    );
    direct.close().await;
    let empty = empty_call(&bot).await?;
    println!(
        "| instantiate + call, empty command: p50 / p99 | {} / {} |",
        us(empty.p50),
        us(empty.p99)
    );
    bot.shutdown().await;

    match std::env::var("IKKYU_TEST_POSTGRES_URL") {
        Ok(url) => {
            let pg = TempPostgres::create(&url).await?;
            let pdata = tempfile::tempdir()?;
            let (bot, sink) = start_bot(&pg.url, pdata.path(), quiet).await?;
            let (lat, rate) = points_path(Arc::new(bot), &sink, 8).await?;
            println!(
                "| `!points` full path, PostgreSQL: p50 / p99 / mean | {} / {} / {} |",
                us(lat.p50),
                us(lat.p99),
                us(lat.mean)
            );
            println!("| `!points` sustained, PostgreSQL, 8 senders | {rate:.0} commands/s |");
            pg.drop_db().await?;
            let pg = TempPostgres::create(&url).await?;
            let rate = group_commit(&pg.url, 64, 20_000).await?;
            println!(
                "| a `!points` commit alone (marker, reply, record), PostgreSQL, 64 callers | {rate:.0} commits/s |"
            );
            pg.drop_db().await?;
        }
        Err(_) => println!("| PostgreSQL | skipped: IKKYU_TEST_POSTGRES_URL is not set |"),
    }

    let gdata = tempfile::tempdir()?;
    let rate = group_commit(&sqlite_url(gdata.path()), 64, 20_000).await?;
    println!(
        "| a `!points` commit alone (marker, reply, record), SQLite, 64 callers | {rate:.0} commits/s |"
    );

    let rdata = tempfile::tempdir()?;
    let release = release_requests(&sqlite_url(rdata.path()), rdata.path()).await?;
    println!(
        "| `!release request`, loopback Jira (2 fetches, 5 signs), SQLite: p50 / p99 | {} / {} |",
        us(release.p50),
        us(release.p99)
    );

    let (idle, rate) = schedules().await?;
    println!(
        "| scheduler pass, 1,000 schedules, none due | {:.2} ms |",
        idle.as_secs_f64() * 1e3
    );
    println!("| scheduled runs fired (announce, SQLite), 1,000 due at once | {rate:.0} runs/s |");

    let ddata = tempfile::tempdir()?;
    let (gap, wall) = deploy_overhead(ddata.path()).await?;
    println!(
        "| deploy, 100 hosts in batches of 10, job exits at once (SQLite): host overhead between batches p50 / p99 | {} / {} |",
        us(gap.p50),
        us(gap.p99)
    );
    println!(
        "| same: wall time of the whole rollout p50 / p99 | {:.0} / {:.0} ms |",
        wall.p50.as_secs_f64() * 1e3,
        wall.p99.as_secs_f64() * 1e3
    );

    let cdata = tempfile::tempdir()?;
    let (miss, hit) = cold_load(cdata.path()).await?;
    println!(
        "| load `points.wasm`: compile (cache miss) / cache hit | {:.1} ms / {:.2} ms ({:.0}×) |",
        miss.as_secs_f64() * 1e3,
        hit.as_secs_f64() * 1e3,
        miss.as_secs_f64() / hit.as_secs_f64()
    );
    println!(
        "| host RSS: before start / idle, all plugins loaded / after load | {rss_start:.0} / {rss_idle:.0} / {rss_load:.0} MiB |"
    );
    Ok(())
}
