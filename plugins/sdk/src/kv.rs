//! The plugin's key-value namespace, with JSON values.
//!
//! Writes are buffered by the host and committed atomically when the call
//! succeeds; reads see the call's own writes. Values that fail to decode are
//! reported as errors rather than treated as absent, so corrupt state is
//! never silently overwritten.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::ikkyu::plugin::kv as raw;

/// The value under `key`, decoded from JSON.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, String> {
    raw::get(key).map(|bytes| decode(key, &bytes)).transpose()
}

/// Stores `value` under `key` as JSON.
pub fn set<T: Serialize>(key: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| format!("cannot encode {key:?}: {e}"))?;
    raw::set(key, &bytes);
    Ok(())
}

/// Removes `key`.
pub fn delete(key: &str) {
    raw::delete(key);
}

/// Every entry under `prefix`, sorted by key, decoded from JSON.
pub fn list<T: DeserializeOwned>(prefix: &str) -> Result<Vec<(String, T)>, String> {
    raw::scan(prefix)
        .into_iter()
        .map(|(key, bytes)| decode(&key, &bytes).map(|v| (key, v)))
        .collect()
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("stored value {key:?} is not valid: {e}"))
}
