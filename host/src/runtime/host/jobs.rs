//! `jobs`: the operator's jobs, started and cancelled as effects of the
//! call. Parameters are checked against the job's patterns here, so a
//! refused value fails the plugin's own step with the pattern named;
//! nothing runs until the call has committed.

use crate::runtime::bindings::ikkyu::plugin::jobs::Host;
use crate::runtime::state::CallState;
use crate::store::{JobChange, NewJob};

/// Longest tag, in bytes.
const MAX_TAG: usize = 256;
/// What every job handle begins with.
const KEY_PREFIX: &str = "job-";

impl Host for CallState {
    async fn start(
        &mut self,
        name: String,
        params: Vec<(String, String)>,
        tag: String,
    ) -> wasmtime::Result<Result<String, String>> {
        self.require("jobs")?;
        self.count_effect()?;
        let size =
            name.len() + tag.len() + params.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        self.charge(size, "jobs.start")?;
        let Some(job) = self.grants.jobs.get(&name) else {
            return Ok(Err(format!(
                "this plugin may not start job {}; the operator can add it to jobs = [...] under [plugins.{}] (and define it under [jobs.{}])",
                crate::text::quoted(&name),
                self.plugin,
                crate::text::one_line(&name)
            )));
        };
        if tag.len() > MAX_TAG {
            return Ok(Err(format!(
                "the tag is {} bytes long, at most {MAX_TAG}",
                tag.len()
            )));
        }
        if let Err(why) = job.check(&params) {
            return Ok(Err(why));
        }
        let params = job.used(params);
        let key = format!("{KEY_PREFIX}{}", uuid::Uuid::new_v4().simple());
        self.jobs.push(JobChange::Start(NewJob {
            key: key.clone(),
            plugin: self.plugin.to_string(),
            name,
            tag,
            params,
        }));
        Ok(Ok(key))
    }

    async fn cancel(&mut self, job: String) -> wasmtime::Result<Result<(), String>> {
        self.require("jobs")?;
        self.count_effect()?;
        self.charge(job.len(), "jobs.cancel")?;
        let started_here = self
            .jobs
            .iter()
            .any(|c| matches!(c, JobChange::Start(j) if j.key == job));
        if !started_here {
            let stored = if job.starts_with(KEY_PREFIX) && job.len() <= 64 {
                self.db
                    .job_by_key(&self.plugin, &job)
                    .await
                    .map_err(|e| wasmtime::format_err!("reading the job to cancel: {e}"))?
            } else {
                None
            };
            match stored {
                None => {
                    return Ok(Err(format!(
                        "{} is not a job this plugin started",
                        crate::text::quoted(&job)
                    )));
                }
                Some(j) if j.state.is_final() => {
                    return Ok(Err(format!(
                        "job {} already ended: {}",
                        j.id,
                        j.state.as_str()
                    )));
                }
                Some(_) => {}
            }
        }
        self.jobs.push(JobChange::Cancel {
            plugin: self.plugin.to_string(),
            key: job,
        });
        Ok(Ok(()))
    }
}
