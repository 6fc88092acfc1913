//! End-to-end tests of ikkyu: the real host, real plugins, real databases.
//! One binary, one module per area (ripgrep's layout).

/// Two tests of `$name(db_url, data_dir)`: on SQLite, and on PostgreSQL in
/// a database of its own (skipped, saying so, without a server).
macro_rules! on_both {
    ($name:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() -> anyhow::Result<()> {
            let data = tempfile::tempdir()?;
            $name(&ikkyu_e2e::sqlite_url(data.path()), data.path()).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() -> anyhow::Result<()> {
            let Some(url) = ikkyu_e2e::postgres_url(stringify!($name)) else {
                return Ok(());
            };
            let data = tempfile::tempdir()?;
            let db = ikkyu_e2e::TempPostgres::create(&url).await?;
            let result = $name(&db.url, data.path()).await;
            db.drop_db().await?;
            result
        }
    };
}

mod build;
mod concurrency;
mod containment;
mod delivery;
mod deploy;
mod hostile;
mod http;
mod jobs;
mod lifecycle;
mod matrix;
mod outage;
mod poison;
mod release;
mod schedules;
mod transcripts;
mod web;
