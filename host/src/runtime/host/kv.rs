//! `kv`: the plugin's own namespace. Reads see the call's writes and are
//! recorded for validation at commit; writes are buffered until then.

use crate::runtime::bindings::ikkyu::plugin::kv::Host;
use crate::runtime::state::{CALL_BUDGET, CallState, MAX_KEY, MAX_VALUE};
use crate::store::{KvRow, MAX_SCAN_ROWS};

impl Host for CallState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.require("kv")?;
        self.charge(key.len(), "kv.get")?;
        check_key(&key)?;
        if let Some(written) = self.kv.writes.get(&key) {
            return Ok(written.clone());
        }
        let row = self.db.kv_get(&self.kv.namespace, &key).await?;
        self.kv
            .reads
            .keys
            .entry(key)
            .or_insert(row.as_ref().map_or(0, |r| r.version));
        Ok(row.map(|r| r.value))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.require("kv")?;
        self.count_effect()?;
        self.charge(key.len() + value.len(), "kv.set")?;
        check_key(&key)?;
        if value.len() > MAX_VALUE {
            wasmtime::bail!("kv value of {key:?} is larger than {MAX_VALUE} bytes");
        }
        self.kv.writes.insert(key, Some(value));
        Ok(())
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.require("kv")?;
        self.count_effect()?;
        self.charge(key.len(), "kv.delete")?;
        check_key(&key)?;
        self.kv.writes.insert(key, None);
        Ok(())
    }

    async fn scan(&mut self, prefix: String) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        self.require("kv")?;
        self.charge(prefix.len(), "kv.scan")?;
        check_key(&prefix)?;
        let left = CALL_BUDGET.saturating_sub(self.spent);
        let Some(rows) = self.db.kv_scan(&self.kv.namespace, &prefix, left).await? else {
            wasmtime::bail!(
                "kv.scan of {prefix:?} matched more than {MAX_SCAN_ROWS} entries or more than the \
                 {} MiB left of this call's budget; keep large collections under several prefixes \
                 and scan one at a time",
                left >> 20
            );
        };
        let bytes: usize = rows.iter().map(|r| r.key.len() + r.value.len()).sum();
        self.charge(bytes, "kv.scan")?;
        let digest = crate::store::scan_digest(rows.iter().map(|r| (r.key.as_str(), r.version)));
        self.kv.reads.scans.entry(prefix.clone()).or_insert(digest);
        Ok(overlay(rows, &self.kv.writes, &prefix))
    }
}

/// A key (or scan prefix) the store can hold on both backends: at most
/// [`MAX_KEY`] bytes, without NUL. A plugin that builds keys from chat text
/// gets this error only for text the host already refused at the door.
fn check_key(key: &str) -> wasmtime::Result<()> {
    if key.len() > MAX_KEY {
        wasmtime::bail!(
            "kv key of {} bytes is too long: keys are at most {MAX_KEY} bytes",
            key.len()
        );
    }
    if key.contains('\0') {
        wasmtime::bail!("kv key {key:?} contains NUL, which keys may not");
    }
    Ok(())
}

/// Stored rows with the call's own writes laid over them, sorted by key.
fn overlay(
    rows: Vec<KvRow>,
    writes: &std::collections::BTreeMap<String, Option<Vec<u8>>>,
    prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut merged: std::collections::BTreeMap<String, Vec<u8>> =
        rows.into_iter().map(|r| (r.key, r.value)).collect();
    for (key, value) in writes.range(prefix.to_owned()..) {
        if !key.starts_with(prefix) {
            break;
        }
        match value {
            Some(v) => merged.insert(key.clone(), v.clone()),
            None => merged.remove(key),
        };
    }
    merged.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_writes_and_deletes_override_stored_rows() {
        let rows = vec![
            KvRow {
                key: "a/1".into(),
                value: b"old".to_vec(),
                version: 1,
            },
            KvRow {
                key: "a/2".into(),
                value: b"gone".to_vec(),
                version: 1,
            },
        ];
        let writes = [
            ("a/1".to_owned(), Some(b"new".to_vec())),
            ("a/2".to_owned(), None),
            ("a/3".to_owned(), Some(b"added".to_vec())),
            ("b/1".to_owned(), Some(b"elsewhere".to_vec())),
        ]
        .into_iter()
        .collect();
        let got = overlay(rows, &writes, "a/");
        assert_eq!(
            got,
            vec![
                ("a/1".into(), b"new".to_vec()),
                ("a/3".into(), b"added".to_vec())
            ]
        );
    }
}
