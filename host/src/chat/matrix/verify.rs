//! `ikkyu verify`: set up cross-signing for the bot and show what people
//! compare to trust its device.

use anyhow::Context as _;
use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::api::client::uiaa;

use crate::config::MatrixConfig;

/// What the operator reads to verify the bot by hand.
#[derive(Debug)]
pub struct DeviceIdentity {
    /// The bot account.
    pub user_id: String,
    /// The bot's device.
    pub device_id: String,
    /// The device's signing key, as clients show it ("session key").
    pub ed25519: String,
    /// Whether the account's cross-signing keys exist and sign this device.
    pub cross_signed: bool,
}

/// Uploads the device's keys, creates the account's cross-signing keys if
/// there are none (the homeserver asks for the password to allow it), and
/// returns the identity to compare.
pub async fn bootstrap(client: &Client, matrix: &MatrixConfig) -> anyhow::Result<DeviceIdentity> {
    // One sync uploads the device keys of a new device.
    client
        .sync_once(SyncSettings::default())
        .await
        .context("syncing once with the homeserver")?;
    let encryption = client.encryption();
    if let Err(e) = encryption.bootstrap_cross_signing_if_needed(None).await {
        let Some(uiaa_info) = e.as_uiaa_response() else {
            return Err(e).context("setting up cross-signing");
        };
        let password = match &matrix.password {
            Some(p) => p.resolve("matrix.password")?,
            None => anyhow::bail!(
                "the homeserver wants the bot's password to set up cross-signing; set matrix.password for this command"
            ),
        };
        let user = client.user_id().context("not logged in")?;
        let mut auth = uiaa::Password::new(
            uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(user.to_string())),
            password,
        );
        auth.session = uiaa_info.session.clone();
        encryption
            .bootstrap_cross_signing(Some(uiaa::AuthData::Password(auth)))
            .await
            .context("setting up cross-signing with the password")?;
    }
    let status = encryption.cross_signing_status().await;
    Ok(DeviceIdentity {
        user_id: client
            .user_id()
            .map(ToString::to_string)
            .unwrap_or_default(),
        device_id: client
            .device_id()
            .map(ToString::to_string)
            .unwrap_or_default(),
        ed25519: encryption.ed25519_key().await.unwrap_or_default(),
        cross_signed: status.is_some_and(|s| s.is_complete()),
    })
}
