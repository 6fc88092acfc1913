//! `schedule`: durable timers. Additions and removals are buffered like kv
//! writes and committed with the call; `list` lays them over what is
//! stored, so a plugin sees its own changes at once.

use std::collections::BTreeMap;

use crate::runtime::bindings::ikkyu::plugin::schedule::{Host, Scheduled};
use crate::runtime::bindings::{ScheduleSpec, When};
use crate::runtime::state::CallState;
use crate::schedule;
use crate::store::{ScheduleChange, ScheduleRow};

/// Most schedules one plugin may hold, so a looping plugin cannot fill the
/// table.
const MAX_SCHEDULES: usize = 10_000;

impl Host for CallState {
    async fn add(&mut self, spec: ScheduleSpec) -> wasmtime::Result<Result<(), String>> {
        self.require("schedule")?;
        self.count_effect()?;
        self.charge(spec_bytes(&spec), "schedule.add")?;
        let row = match schedule::row(&self.plugin, &spec, false, self.now_ms) {
            Ok(row) => row,
            Err(e) => return Ok(Err(e.0)),
        };
        let held = self.overlaid().await?;
        if held.len() >= MAX_SCHEDULES && !held.contains_key(&spec.id) {
            return Ok(Err(format!(
                "the plugin already has {MAX_SCHEDULES} schedules; remove some first"
            )));
        }
        self.schedules.push(ScheduleChange::Put(row));
        Ok(Ok(()))
    }

    async fn remove(&mut self, id: String) -> wasmtime::Result<bool> {
        self.require("schedule")?;
        self.count_effect()?;
        self.charge(id.len(), "schedule.remove")?;
        if !schedule::is_schedule_id(&id) {
            // No schedule can have this id, so there is nothing to remove.
            return Ok(false);
        }
        let existed = self.overlaid().await?.contains_key(&id);
        self.schedules.push(ScheduleChange::Remove {
            plugin: self.plugin.to_string(),
            id,
        });
        Ok(existed)
    }

    async fn list(&mut self) -> wasmtime::Result<Vec<Scheduled>> {
        self.require("schedule")?;
        Ok(self
            .overlaid()
            .await?
            .values()
            .map(|row| Scheduled {
                spec: schedule::spec_of(row),
                next_ms: row.next_fire_ms,
            })
            .collect())
    }

    async fn next(
        &mut self,
        when: When,
        after_ms: i64,
    ) -> wasmtime::Result<Result<Option<i64>, String>> {
        self.require("schedule")?;
        self.charge(when_bytes(&when), "schedule.next")?;
        Ok(schedule::parse(&when)
            .map(|w| w.next_after(after_ms))
            .map_err(|e| e.0))
    }
}

/// What a schedule definition costs the host to look at.
fn spec_bytes(spec: &ScheduleSpec) -> usize {
    spec.id.len() + spec.payload_json.len() + when_bytes(&spec.when)
}

fn when_bytes(when: &When) -> usize {
    match when {
        When::Cron(c) => c.expression.len() + c.zone.len(),
        When::At(_) => 8,
    }
}

impl CallState {
    /// The plugin's stored schedules with this call's changes applied.
    /// (`&mut`: a future holding `&CallState` would not be `Send`.)
    async fn overlaid(&mut self) -> wasmtime::Result<BTreeMap<String, ScheduleRow>> {
        let mut rows: BTreeMap<String, ScheduleRow> = self
            .db
            .schedules_of(&self.plugin)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for change in &self.schedules {
            match change {
                ScheduleChange::Put(row) => {
                    rows.insert(row.id.clone(), row.clone());
                }
                ScheduleChange::Remove { id, .. } => {
                    rows.remove(id);
                }
            }
        }
        Ok(rows)
    }
}
