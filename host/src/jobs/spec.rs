//! The operator's jobs (`[jobs.<name>]` in `ikkyu.toml`) and how a
//! plugin's parameters become a command line.
//!
//! A job is an argv template, never a shell line: each `{param}` is
//! replaced inside one argument, so a value can never become a second
//! argument, a pipe or a command substitution. Every parameter has a
//! pattern the whole value must match, checked when the plugin asks (so
//! the plugin's call fails with the pattern named) and again when the job
//! is started (the config may have changed in between).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Secret};

/// Longest parameter value, in bytes.
pub const MAX_PARAM: usize = 1024;

/// `[jobs]`: the host-wide settings and every job the operator defined.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JobsConfig {
    /// Jobs running at once, across all plugins; more wait in the queue.
    pub concurrency: usize,
    /// After TERM at a timeout or cancel, how long a job's processes have
    /// before KILL.
    #[serde(with = "crate::config::humantime_serde_compat")]
    pub kill_grace: Duration,
    /// Lines of output kept per job (the last ones).
    pub output_lines: usize,
    /// The jobs, by name.
    #[serde(flatten)]
    pub defs: BTreeMap<String, JobDef>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            concurrency: 15,
            kill_grace: Duration::from_secs(10),
            output_lines: 200,
            defs: BTreeMap::new(),
        }
    }
}

/// One job: what to run, where, with what, for how long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDef {
    /// The program and its arguments; `{name}` is replaced by parameter
    /// `name`. A relative program path is relative to `dir`.
    pub argv: Vec<String>,
    /// Working directory, relative to the config file; the config's
    /// folder when absent.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Environment variables besides `PATH`, `HOME`, `LANG` and `TZ`
    /// (the only ones taken from the bot's own). Values written as
    /// `{ env = … }` or `{ file = … }` are secrets: masked in the output
    /// the host keeps, and never shown to plugins.
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// Longest run; then TERM, and KILL after `jobs.kill_grace`.
    #[serde(
        default = "default_timeout",
        with = "crate::config::humantime_serde_compat"
    )]
    pub timeout: Duration,
    /// Parameter name → the pattern (a regular expression) every value
    /// must match as a whole.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

/// A job as the host runs it: its definition with the patterns compiled,
/// the paths resolved and the secrets read.
#[derive(Debug, Clone)]
pub struct Job {
    /// The name the operator gave it.
    pub name: String,
    /// The argv template.
    pub argv: Vec<String>,
    /// Where it runs.
    pub dir: PathBuf,
    /// Its environment (besides what it inherits).
    pub env: Vec<(String, String)>,
    /// Values masked in its output.
    pub secrets: Vec<String>,
    /// Longest run.
    pub timeout: Duration,
    /// Parameter patterns, anchored.
    pub params: BTreeMap<String, regex::Regex>,
    /// The patterns as the operator wrote them, for refusals.
    pub written: BTreeMap<String, String>,
}

impl JobsConfig {
    /// Checks every job and returns them ready to run; `base` is the
    /// config's folder.
    pub fn compile(&self, base: &Path) -> Result<BTreeMap<String, Job>, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid { key, message };
        if self.concurrency == 0 {
            return Err(invalid(
                "jobs.concurrency".into(),
                "must be at least 1".into(),
            ));
        }
        if !(1..=10_000).contains(&self.output_lines) {
            return Err(invalid(
                "jobs.output_lines".into(),
                format!("{} is outside 1..=10000", self.output_lines),
            ));
        }
        let mut jobs = BTreeMap::new();
        for (name, def) in &self.defs {
            let key = |field: &str| format!("jobs.{name}.{field}");
            if !is_job_name(name) {
                return Err(invalid(
                    format!("jobs.{name}"),
                    "job names are lowercase letters, digits, `-` and `_`, at most 64".into(),
                ));
            }
            if def.argv.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(invalid(
                    key("argv"),
                    "must name a program, e.g. [\"./scripts/deploy.sh\", \"{service}\"]".into(),
                ));
            }
            if def.timeout.is_zero() {
                return Err(invalid(
                    key("timeout"),
                    "must be more than 0, e.g. \"10m\"".into(),
                ));
            }
            let mut params = BTreeMap::new();
            for (param, pattern) in &def.params {
                let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    invalid(
                        format!("jobs.{name}.params.{param}"),
                        format!("{pattern:?} is not a regular expression: {e}"),
                    )
                })?;
                params.insert(param.clone(), re);
            }
            for arg in &def.argv {
                for used in placeholders(arg) {
                    if !params.contains_key(used) {
                        return Err(invalid(
                            key("argv"),
                            format!(
                                "{{{used}}} is not a parameter; add it under [jobs.{name}.params] with its pattern"
                            ),
                        ));
                    }
                }
            }
            let mut env = Vec::new();
            let mut secrets = Vec::new();
            for (var, value) in &def.env {
                let mut value = value.clone();
                value.anchored(base);
                let resolved = value.resolve(&format!("jobs.{name}.env.{var}"))?;
                if !matches!(value, Secret::Plain(_)) && !resolved.is_empty() {
                    secrets.push(resolved.clone());
                }
                env.push((var.clone(), resolved));
            }
            let dir = def
                .dir
                .as_ref()
                .map_or_else(|| base.to_path_buf(), |d| base.join(d));
            jobs.insert(
                name.clone(),
                Job {
                    name: name.clone(),
                    argv: def.argv.clone(),
                    dir,
                    env,
                    secrets,
                    timeout: def.timeout,
                    params,
                    written: def.params.clone(),
                },
            );
        }
        Ok(jobs)
    }
}

/// Whether `name` can name a job.
pub fn is_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The `{name}`s in one argument.
fn placeholders(arg: &str) -> impl Iterator<Item = &str> {
    arg.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

impl Job {
    /// Checks `params` against the job's patterns: every declared one
    /// given once, each value matching as a whole. Parameters the job
    /// does not declare are not used (a plugin may offer more than a
    /// job needs), so they are not checked. The error says which
    /// parameter and which pattern, in words for a user.
    pub fn check(&self, params: &[(String, String)]) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (name, value) in params {
            let Some(pattern) = self.params.get(name) else {
                continue;
            };
            if !seen.insert(name.as_str()) {
                return Err(format!(
                    "parameter {name} of job {} is given twice",
                    self.name
                ));
            }
            let written = self.written.get(name).map_or("", String::as_str);
            if value.len() > MAX_PARAM {
                return Err(format!(
                    "parameter {name} of job {} is {} bytes long, at most {MAX_PARAM}",
                    self.name,
                    value.len()
                ));
            }
            if value.chars().any(char::is_control) || !pattern.is_match(value) {
                return Err(format!(
                    "parameter {name} of job {} is {}, which does not match its pattern `{written}`",
                    self.name,
                    crate::text::quoted(value)
                ));
            }
        }
        if let Some(missing) = self.params.keys().find(|p| !seen.contains(p.as_str())) {
            return Err(format!(
                "job {} needs parameter {missing} (pattern `{}`)",
                self.name,
                self.written.get(missing).map_or("", String::as_str)
            ));
        }
        Ok(())
    }

    /// The parameters of `params` this job uses.
    pub fn used(&self, params: Vec<(String, String)>) -> Vec<(String, String)> {
        params
            .into_iter()
            .filter(|(k, _)| self.params.contains_key(k))
            .collect()
    }

    /// The command line for `params` (checked first): each `{name}` is
    /// replaced inside its own argument, once, never re-read; a relative
    /// program path is made absolute against the job's folder.
    pub fn command_line(&self, params: &[(String, String)]) -> Result<Vec<String>, String> {
        self.check(params)?;
        let values: BTreeMap<&str, &str> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut argv: Vec<String> = self
            .argv
            .iter()
            .map(|arg| substitute(arg, &values))
            .collect();
        if let Some(program) = argv.first_mut()
            && program.contains('/')
            && Path::new(program.as_str()).is_relative()
        {
            *program = self.dir.join(&*program).display().to_string();
        }
        Ok(argv)
    }

    /// `text` with every secret value of this job replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |t, s| t.replace(s.as_str(), "***"))
    }
}

/// `arg` with each `{name}` in `values` replaced; other braces stay.
fn substitute(arg: &str, values: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let inner = after.strip_prefix('{').unwrap_or(after);
        match inner
            .split_once('}')
            .and_then(|(name, tail)| values.get(name).map(|v| (*v, tail)))
        {
            Some((value, tail)) => {
                out.push_str(value);
                rest = tail;
            }
            None => {
                out.push('{');
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(toml_text: &str) -> Job {
        let config: JobsConfig = toml::from_str(toml_text).expect("valid");
        config
            .compile(Path::new("/srv"))
            .expect("valid")
            .remove("deploy")
            .expect("valid")
    }

    fn deploy() -> Job {
        job(r#"
            [deploy]
            argv = ["./deploy.sh", "{service}", "--version={version}", "{hosts}"]
            params = { service = "[a-z][a-z0-9-]*", version = "[0-9][0-9a-z.-]*", hosts = "[a-z0-9.,-]+" }
        "#)
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn parameters_fill_their_own_argument() {
        let argv = deploy()
            .command_line(&p(&[
                ("service", "web"),
                ("version", "1.2.3"),
                ("hosts", "a1,a2"),
            ]))
            .expect("valid");
        assert_eq!(
            argv,
            ["/srv/./deploy.sh", "web", "--version=1.2.3", "a1,a2"]
        );
    }

    #[test]
    fn injections_are_refused_with_the_pattern_named() {
        for bad in [
            "x; rm -rf /",
            "$(id)",
            "web\nid",
            "`id`",
            "a b",
            "",
            "web\0",
        ] {
            let err = deploy()
                .command_line(&p(&[("service", bad), ("version", "1"), ("hosts", "a")]))
                .expect_err("refused");
            assert!(err.contains("`[a-z][a-z0-9-]*`"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn missing_and_repeated_parameters_are_refused() {
        let j = deploy();
        assert!(
            j.check(&p(&[("service", "web"), ("version", "1")]))
                .expect_err("refused")
                .contains("needs parameter hosts")
        );
        let extra = p(&[
            ("service", "web"),
            ("version", "1"),
            ("hosts", "a"),
            ("x", "$(id)"),
        ]);
        assert!(j.check(&extra).is_ok(), "an unused parameter is not used");
        assert_eq!(j.used(extra).len(), 3);
        assert!(
            j.check(&p(&[
                ("service", "web"),
                ("service", "w"),
                ("version", "1"),
                ("hosts", "a")
            ]))
            .expect_err("refused")
            .contains("twice")
        );
        let long = "a".repeat(MAX_PARAM + 1);
        assert!(
            j.check(&p(&[("service", &long), ("version", "1"), ("hosts", "a")]))
                .expect_err("refused")
                .contains("at most")
        );
    }

    #[test]
    fn a_value_is_never_read_again_as_a_template() {
        let j = job(r#"
            [deploy]
            argv = ["echo", "{a}{b}", "{"]
            params = { a = ".*", b = ".*" }
        "#);
        let argv = j
            .command_line(&p(&[("a", "{b}"), ("b", "x")]))
            .expect("valid");
        assert_eq!(argv, ["echo", "{b}x", "{"]);
    }

    #[test]
    fn the_config_names_what_is_wrong() {
        let bad = |t: &str| {
            toml::from_str::<JobsConfig>(t)
                .expect("valid")
                .compile(Path::new("/srv"))
                .expect_err("refused")
                .to_string()
        };
        assert!(bad("[d]\nargv = [\"x\", \"{svc}\"]").contains("{svc} is not a parameter"));
        assert!(bad("[d]\nargv = []").contains("must name a program"));
        assert!(
            bad("[d]\nargv = [\"x\"]\nparams = { a = \"(\" }").contains("not a regular expression")
        );
        assert!(bad("[Bad]\nargv = [\"x\"]").contains("job names"));
        assert!(bad("concurrency = 0").contains("at least 1"));
    }

    #[test]
    fn written_secrets_are_plain_and_others_are_masked() {
        let j = job(r#"
            [deploy]
            argv = ["x"]
            env = { MODE = "prod", TOKEN = { file = "/proc/sys/kernel/ostype" } }
        "#);
        assert_eq!(j.mask("Linux prod"), "*** prod");
        assert!(j.env.iter().any(|(k, v)| k == "MODE" && v == "prod"));
    }
}
