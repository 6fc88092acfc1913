//! Every `.chat` transcript, on SQLite and on PostgreSQL, with the fake
//! issue trackers running (`${JIRA}`, `${GITLAB}`, … in a transcript are
//! their origins; see `ikkyu_e2e::trackers`) and `${SCRIPTS}` the folder
//! of the test jobs' scripts.

use ikkyu::transcript::{Failure, Setup, Transcript};
use ikkyu_e2e::trackers::Trackers;
use ikkyu_e2e::{TempPostgres, plugins_dir, postgres_url, transcripts};

fn load(path: &std::path::Path, trackers: &Trackers) -> Result<Transcript, Failure> {
    let scripts = ikkyu_e2e::scripts_dir().display().to_string();
    let text = trackers
        .substitute(&Transcript::read(path)?)
        .replace("${SCRIPTS}", &scripts);
    Transcript::parse(path, &text)
}

async fn run_all(database: Option<&str>) -> anyhow::Result<usize> {
    let plugins = plugins_dir()?.to_path_buf();
    let files = transcripts()?;
    let trackers = Trackers::start().await?;
    assert!(files.len() >= 5, "transcripts went missing: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let temp = match database {
            Some(admin) => Some(TempPostgres::create(admin).await?),
            None => None,
        };
        let setup = Setup {
            plugins_dir: plugins.clone(),
            database_url: temp.as_ref().map(|t| t.url.clone()),
        };
        let result = match load(file, &trackers) {
            Ok(t) => t.run(&setup).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            failures.push(e.to_string());
        }
        if let Some(t) = temp {
            t.drop_db().await?;
        }
    }
    assert!(
        failures.is_empty(),
        "{} transcript(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    Ok(files.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_pass_on_sqlite() -> anyhow::Result<()> {
    run_all(None).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_pass_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres_url("transcripts") else {
        return Ok(());
    };
    run_all(Some(&url)).await.map(|_| ())
}

/// The runner itself must fail on a wrong reply and on an extra reply,
/// or every transcript above proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_rejects_wrong_and_unexpected_replies() -> anyhow::Result<()> {
    let setup = Setup {
        plugins_dir: plugins_dir()?.to_path_buf(),
        database_url: None,
    };
    let path = std::path::Path::new("inline.chat");
    let wrong = Transcript::parse(path, "> @a:local !points\n< 99 points\n")?;
    let err = wrong.run(&setup).await.expect_err("wrong reply must fail");
    assert!(
        err.message
            .contains("expected a reply matching /99 points/"),
        "{err}"
    );
    let extra = Transcript::parse(path, "> @a:local !points\n> @a:local !points\n< points\n")?;
    let err = extra
        .run(&setup)
        .await
        .expect_err("unmatched reply must fail");
    assert!(err.message.contains("unexpected reply"), "{err}");
    let missing = Transcript::parse(path, "> @a:local hello\n< anything\n")?;
    let err = missing.run(&setup).await.expect_err("no reply must fail");
    assert!(err.message.contains("there was none"), "{err}");
    Ok(())
}
