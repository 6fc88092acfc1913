//! `cargo xtask matrix`: a local Synapse with the bot in it, for trying
//! ikkyu by hand with any Matrix client. Everything lives in
//! target/local-matrix and starts fresh each time; Ctrl-C stops it all.

use anyhow::Context as _;
use ikkyu_e2e::matrix::BotProcess;
use ikkyu_e2e::synapse::{SERVER_NAME, Synapse};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().context("the argument is the port, e.g. 8008")?,
        None => 8008,
    };
    let dir = ikkyu_e2e::root().join("target/local-matrix");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("starting Synapse (the first run installs it from PyPI, about a minute)...");
    let synapse = Synapse::start_on(&dir, port).await?;
    let you = synapse.register("you", true).await?;
    let allowed = format!(":{SERVER_NAME}");
    let extra = format!("[roles]\nadmin = [{:?}]", you.user_id);
    let mut bot = BotProcess::new(&synapse, "ikkyu", &dir, &[&allowed], "", &extra).await?;
    bot.start()?;
    println!(
        "\nSynapse is running at {url} (server name {SERVER_NAME}, no federation).\n\
         Log in with any Matrix client (Element, Cinny, iamb, ...) using the homeserver URL {url}:\n\
         \n    user: {user}\n    password: {password}\n\n\
         Create a room (encrypted or not), invite {bot_id} and type !help.\n\
         You are an admin of the bot. Its config: {config}\n\
         Its log: {log}\n\
         Ctrl-C stops the bot and the homeserver.",
        url = synapse.url,
        user = you.user_id,
        password = you.password,
        bot_id = bot.account.user_id,
        config = dir.join("ikkyu.toml").display(),
        log = dir.join("bot-1.log").display(),
    );
    tokio::signal::ctrl_c().await?;
    bot.kill();
    drop(synapse);
    Ok(())
}
