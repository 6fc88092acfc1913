//! What the change-detection job said, and whether a service is due.
//!
//! The job (`detect_job`, e.g. `scripts/git-changes.sh`) ends its output
//! with the changed files, one per line, then `files <n>` (or `files all`
//! when the commit it was asked about is not in the repository any more),
//! then `head <commit> <author>`. The host keeps only the last lines of a
//! job's output, so the count is what tells a whole list from a cut one;
//! a cut list counts as "anything may have changed". Pure: no host calls.

use crate::settings::covers;

/// One detection's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The branch's newest commit.
    pub head: String,
    /// Its author.
    pub author: String,
    /// What changed since the commit the job was asked about.
    pub changed: Changed,
}

/// The files that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Exactly these (none when asked about no commit, or the head itself).
    Files(Vec<String>),
    /// Unknown, so possibly everything, for this reason.
    All(String),
}

/// Reads the end of a detection job's output.
pub fn parse(output: &str) -> Result<Detected, String> {
    let mut lines: Vec<&str> = output
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let last = lines.pop().unwrap_or_default();
    let Some(rest) = last.strip_prefix("head ") else {
        return Err(format!(
            "the change detection did not end with `head <commit> <author>`; its last line: {last:?}"
        ));
    };
    let (head, author) = rest.split_once(' ').unwrap_or((rest, ""));
    if !(7..=64).contains(&head.len()) || !head.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{head:?} is not a commit id"));
    }
    let count = lines.pop().and_then(|l| l.strip_prefix("files "));
    let changed = match count {
        Some("all") => Changed::All("the last green commit is no longer in the repository".into()),
        Some(n) => {
            let n: usize = n
                .parse()
                .map_err(|_| format!("`files {n}` is not a count of files"))?;
            if lines.len() < n {
                Changed::All(format!(
                    "the list of {n} changed files was longer than the job output kept"
                ))
            } else {
                let from = lines.len() - n;
                Changed::Files(
                    lines
                        .split_off(from)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                )
            }
        }
        None => {
            return Err(
                "the change detection did not say how many files changed (`files <n>`)".into(),
            );
        }
    };
    Ok(Detected {
        head: head.to_lowercase(),
        author: author.trim().to_owned(),
        changed,
    })
}

/// Why a service is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Named in the command.
    Named,
    /// It has never built green in this environment.
    NeverBuilt,
    /// Its last build here failed (build `n`); it stays due until green.
    FailedLastTime(u64),
    /// One of its own files changed (the first, and how many more).
    Changed(String, usize),
    /// A file every service of its repository depends on changed.
    Shared(String),
    /// What changed is unknown.
    Unknown(String),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Named => f.write_str("asked for by name"),
            Why::NeverBuilt => f.write_str("never built here before"),
            Why::FailedLastTime(n) => write!(f, "failed in build {n}; due until it builds green"),
            Why::Changed(file, 0) => write!(f, "changed: {file}"),
            Why::Changed(file, more) => write!(f, "changed: {file} and {more} more"),
            Why::Shared(file) => write!(f, "shared file changed: {file}"),
            Why::Unknown(why) => write!(f, "{why}"),
        }
    }
}

/// What a service's state here says before looking at the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing<'a> {
    /// Named in the command.
    pub named: bool,
    /// Its last green commit here, if any.
    pub green: Option<&'a str>,
    /// The build it last failed in here, if it has not built green since.
    pub failed_in: Option<u64>,
}

/// Whether a service with `paths` in a repository whose `shared` files
/// affect everything is due, given its standing and what changed since its
/// green commit; none when it is up to date.
pub fn due(
    paths: &[String],
    shared: &[String],
    standing: Standing<'_>,
    changed: &Changed,
) -> Option<Why> {
    if standing.named {
        return Some(Why::Named);
    }
    if let Some(n) = standing.failed_in {
        return Some(Why::FailedLastTime(n));
    }
    if standing.green.is_none() {
        return Some(Why::NeverBuilt);
    }
    let files = match changed {
        Changed::All(why) => return Some(Why::Unknown(why.clone())),
        Changed::Files(files) => files,
    };
    let own: Vec<&String> = files
        .iter()
        .filter(|f| paths.iter().any(|p| covers(p, f)))
        .collect();
    if let Some(first) = own.first() {
        return Some(Why::Changed((*first).clone(), own.len() - 1));
    }
    files
        .iter()
        .find(|f| shared.iter().any(|p| covers(p, f)))
        .map(|f| Why::Shared(f.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn reads_the_files_the_count_and_the_head_after_other_output() {
        let out = format!(
            "Fetching origin\napi/main.rs\nCargo.lock\nfiles 2\nhead {HEAD} Дмитрий Петров\n"
        );
        let d = parse(&out).expect("parses");
        assert_eq!(d.head, HEAD);
        assert_eq!(d.author, "Дмитрий Петров");
        assert_eq!(
            d.changed,
            Changed::Files(vec!["api/main.rs".into(), "Cargo.lock".into()])
        );
        let d = parse(&format!("files 0\nhead {HEAD}")).expect("no author");
        assert_eq!((d.author.as_str(), d.changed), ("", Changed::Files(vec![])));
    }

    #[test]
    fn a_cut_list_or_a_lost_base_means_anything_may_have_changed() {
        let cut = parse(&format!("b.rs\nfiles 3\nhead {HEAD} a")).expect("parses");
        assert!(matches!(cut.changed, Changed::All(ref w) if w.contains("3 changed files")));
        let lost = parse(&format!("files all\nhead {HEAD} a")).expect("parses");
        assert!(matches!(lost.changed, Changed::All(_)));
    }

    #[test]
    fn output_that_is_not_the_contract_says_what_is_wrong() {
        assert!(parse("").expect_err("empty").contains("head"));
        assert!(
            parse("fatal: repository not found")
                .expect_err("git failed")
                .contains("fatal")
        );
        assert!(
            parse("files 1\nhead zzzz a")
                .expect_err("bad id")
                .contains("commit id")
        );
        assert!(
            parse(&format!("head {HEAD} a"))
                .expect_err("no count")
                .contains("files")
        );
        assert!(parse(&format!("files many\nhead {HEAD} a")).is_err());
    }

    fn standing(green: Option<&str>, failed_in: Option<u64>) -> Standing<'_> {
        Standing {
            named: false,
            green,
            failed_in,
        }
    }

    #[test]
    fn a_service_is_due_for_its_own_files_shared_ones_a_failure_or_never_built() {
        let paths = vec!["api/".to_owned(), "libs/common/".to_owned()];
        let shared = vec!["Cargo.lock".to_owned()];
        let files = |f: &[&str]| Changed::Files(f.iter().map(|s| (*s).to_owned()).collect());
        let green = standing(Some("abc"), None);
        assert_eq!(due(&paths, &shared, green, &files(&["web/x.js"])), None);
        assert_eq!(due(&paths, &shared, green, &files(&[])), None);
        assert_eq!(
            due(
                &paths,
                &shared,
                green,
                &files(&["web/x.js", "libs/common/a.rs", "api/b.rs"])
            ),
            Some(Why::Changed("libs/common/a.rs".into(), 1))
        );
        assert_eq!(
            due(&paths, &shared, green, &files(&["Cargo.lock"])),
            Some(Why::Shared("Cargo.lock".into()))
        );
        assert_eq!(
            due(&paths, &shared, standing(None, None), &files(&[])),
            Some(Why::NeverBuilt)
        );
        assert_eq!(
            due(&paths, &shared, standing(Some("abc"), Some(4)), &files(&[])),
            Some(Why::FailedLastTime(4))
        );
        let named = Standing {
            named: true,
            ..green
        };
        assert_eq!(due(&paths, &shared, named, &files(&[])), Some(Why::Named));
        assert!(matches!(
            due(&paths, &shared, green, &Changed::All("lost".into())),
            Some(Why::Unknown(_))
        ));
    }
}
