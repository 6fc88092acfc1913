//! The operator's settings (`[plugins.build.config]`): repositories,
//! services and environments, and the jobs that look for changes and
//! build.
//!
//! ```toml
//! [plugins.build.config]
//! detect_job = "git-changes"      # fetches a repository, lists changed files
//! build_job = "build"             # builds one service (a service may name its own)
//!
//! [plugins.build.config.repos.shop]
//! url = "https://git.example.org/shop.git"
//! shared = ["Cargo.lock", "build/"]   # files that affect every service
//! webhook_name = "acme/shop"          # the name push webhooks give it
//!
//! [plugins.build.config.services.api]
//! repo = "shop"
//! paths = ["api/", "libs/common/"]
//!
//! [plugins.build.config.environments.dev]
//! room = "!dev:example.org"
//! branch = "main"
//! cron = "0 * * * *"                  # build what is due, hourly
//! zone = "Europe/Moscow"
//! ```
//!
//! Only parsing, checking and matching paths live here.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Everything the plugin reads from its config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The operator's job that fetches a repository and lists the files
    /// changed since a commit (see `scripts/git-changes.sh`).
    pub detect_job: String,
    /// The job that builds one service, unless the service names its own.
    pub build_job: String,
    /// Repositories, by name.
    pub repos: BTreeMap<String, Repo>,
    /// Services, by name.
    pub services: BTreeMap<String, Service>,
    /// Environments, by name (`dev`, `staging`).
    pub environments: BTreeMap<String, Environment>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            detect_job: "git-changes".into(),
            build_job: "build".into(),
            repos: BTreeMap::new(),
            services: BTreeMap::new(),
            environments: BTreeMap::new(),
        }
    }
}

/// One repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// Where the jobs fetch it from (`{repo}` in their command line).
    pub url: String,
    /// Files that affect every service built from it: a file, or a folder
    /// ending in `/`.
    #[serde(default)]
    pub shared: Vec<String>,
    /// The repository's name in push webhooks: GitHub's
    /// `repository.full_name`, GitLab's `project.path_with_namespace`.
    #[serde(default)]
    pub webhook_name: Option<String>,
}

/// One service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The repository its code is in.
    pub repo: String,
    /// Its files: a file, or a folder ending in `/`.
    pub paths: Vec<String>,
    /// The job that builds it, when not `build_job`.
    #[serde(default)]
    pub job: Option<String>,
}

/// One environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// The room its builds are posted in.
    pub room: String,
    /// The branch it builds.
    #[serde(default = "main")]
    pub branch: String,
    /// When to build what is due by itself: five cron fields.
    #[serde(default)]
    pub cron: Option<String>,
    /// The zone `cron` is read in.
    #[serde(default = "utc")]
    pub zone: String,
}

fn main() -> String {
    "main".into()
}

fn utc() -> String {
    "UTC".into()
}

/// Names people type: lowercase letters, digits, `-` and `_`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Settings {
    /// What is wrong with the settings, in words for the operator.
    pub fn check(&self) -> Result<(), String> {
        if self.environments.is_empty() {
            return Err(
                "no environments: add [plugins.build.config.environments.<name>] with a room"
                    .into(),
            );
        }
        for (name, env) in &self.environments {
            if !is_name(name) || name == "status" {
                return Err(format!(
                    "environment {name:?} must be lowercase letters, digits, - and _, and not \"status\""
                ));
            }
            if env.room.is_empty() {
                return Err(format!("environment {name} has no room"));
            }
            if env.branch.is_empty() || env.branch.chars().any(char::is_whitespace) {
                return Err(format!(
                    "environment {name}: branch {:?} is not a branch name",
                    env.branch
                ));
            }
        }
        for (name, service) in &self.services {
            if !is_name(name) {
                return Err(format!(
                    "service {name:?} must be lowercase letters, digits, - and _"
                ));
            }
            if !self.repos.contains_key(&service.repo) {
                return Err(format!(
                    "service {name} is in repo {:?}, which is not under repos",
                    service.repo
                ));
            }
            if service.paths.is_empty() || service.paths.iter().any(String::is_empty) {
                return Err(format!(
                    "service {name} needs its paths, e.g. [\"{name}/\"]"
                ));
            }
        }
        if self.services.is_empty() {
            return Err(
                "no services: add [plugins.build.config.services.<name>] with repo and paths"
                    .into(),
            );
        }
        Ok(())
    }

    /// The job that builds `service`.
    pub fn job_of(&self, service: &str) -> &str {
        self.services
            .get(service)
            .and_then(|s| s.job.as_deref())
            .unwrap_or(&self.build_job)
    }

    /// The repository whose webhook name is `name` (any case).
    pub fn repo_by_webhook_name(&self, name: &str) -> Option<&str> {
        self.repos
            .iter()
            .find(|(_, r)| {
                r.webhook_name
                    .as_deref()
                    .is_some_and(|w| w.eq_ignore_ascii_case(name))
            })
            .map(|(k, _)| k.as_str())
    }

    /// The environment names, for error messages.
    pub fn environment_names(&self) -> String {
        self.environments
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The service names, for error messages.
    pub fn service_names(&self) -> String {
        self.services.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Whether `file` (a path in the repository) is covered by `pattern`: the
/// same file, or under it when the pattern is a folder ending in `/`.
pub fn covers(pattern: &str, file: &str) -> bool {
    let pattern = pattern.trim_start_matches("./");
    match pattern.strip_suffix('/') {
        Some(_) => file.starts_with(pattern),
        None => file == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<Settings, String> {
        let s: Settings = serde_json::from_str(text).map_err(|e| e.to_string())?;
        s.check().map(|()| s)
    }

    #[test]
    fn folders_cover_what_is_under_them_and_files_only_themselves() {
        assert!(covers("api/", "api/main.rs"));
        assert!(covers("./api/", "api/src/x.rs"));
        assert!(!covers("api/", "apiary/main.rs"));
        assert!(covers("Cargo.lock", "Cargo.lock"));
        assert!(!covers("Cargo.lock", "api/Cargo.lock"));
    }

    #[test]
    fn settings_name_what_is_missing() {
        let base = r#"{"repos": {"shop": {"url": "/git/shop"}},
                       "services": {"api": {"repo": "shop", "paths": ["api/"]}},
                       "environments": {"dev": {"room": "!dev:x"}}}"#;
        let s = settings(base).expect("valid");
        assert_eq!(s.environments["dev"].branch, "main");
        assert_eq!(s.job_of("api"), "build");
        let e = settings(&base.replace("\"repo\": \"shop\"", "\"repo\": \"shoes\""))
            .expect_err("no repo");
        assert!(e.contains("shoes"), "{e}");
        let e = settings(&base.replace("\"dev\"", "\"status\"")).expect_err("reserved");
        assert!(e.contains("status"), "{e}");
        let e = settings(&base.replace("[\"api/\"]", "[]")).expect_err("no paths");
        assert!(e.contains("paths"), "{e}");
        assert!(settings("{}").is_err());
    }
}
