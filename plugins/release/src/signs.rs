//! Signs of done work (`seeds/003`: review done, no QA remarks, the
//! customer saw it, docs, a rollback plan), checked against a ticket as
//! the tracker described it. Pure: a sign passes, fails or is unknown, and
//! always says why; a sign whose data could not be read is unknown, never
//! passed.

use serde::{Deserialize, Serialize};

/// One configured check.
// No `deny_unknown_fields` here: serde does not support it beside
// `flatten`; `Check` denies them instead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Sign {
    /// How it reads in replies: "code review done".
    pub name: String,
    /// Off switches it without deleting it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What is checked.
    #[serde(flatten)]
    pub check: Check,
}

fn yes() -> bool {
    true
}

/// The kinds of check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "check", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Check {
    /// The ticket's status is one of these (case-insensitive).
    Status {
        /// Accepted statuses.
        any_of: Vec<String>,
    },
    /// The ticket has this label.
    Label {
        /// The label.
        label: String,
    },
    /// The ticket does not have this label.
    NoLabel {
        /// The label.
        label: String,
    },
    /// A field of the ticket is not empty (Jira: a field id such as
    /// `customfield_10010`; GitLab: a key of the issue).
    Field {
        /// The field.
        field: String,
    },
    /// No open linked issue of this type (link or issue type) or label.
    NoOpenLinks {
        /// A link type or issue type name.
        #[serde(default)]
        r#type: Option<String>,
        /// A label of the linked issue.
        #[serde(default)]
        label: Option<String>,
    },
    /// A link given in the request (`--docs`, `--rollback`) or a link in
    /// the ticket whose title or address contains one of the words.
    Link {
        /// The request flag that gives it: `docs` or `rollback`.
        #[serde(default)]
        flag: Option<String>,
        /// Words to look for in a link's title or address (lowercase).
        #[serde(default)]
        r#match: Vec<String>,
    },
    /// Every merge request of the ticket is approved (GitLab).
    Approved,
}

/// The seed's list, for a config without `signs`.
pub fn defaults() -> Vec<Sign> {
    let sign = |name: &str, check: Check| Sign {
        name: name.into(),
        enabled: true,
        check,
    };
    vec![
        sign(
            "code review done",
            Check::NoLabel {
                label: "needs-review".into(),
            },
        ),
        sign(
            "no open QA remarks",
            Check::NoOpenLinks {
                r#type: Some("QA remark".into()),
                label: Some("qa".into()),
            },
        ),
        sign(
            "the customer saw it on the test stand",
            Check::Label {
                label: "customer-accepted".into(),
            },
        ),
        sign(
            "release docs",
            Check::Link {
                flag: Some("docs".into()),
                r#match: vec!["release".into(), "docs".into()],
            },
        ),
        sign(
            "rollback plan",
            Check::Link {
                flag: Some("rollback".into()),
                r#match: vec!["rollback".into()],
            },
        ),
    ]
}

/// A ticket as the tracker described it, the same shape for Jira and
/// GitLab. `None` in a part means it could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticket {
    /// `PROJ-123` or `group/project#12`.
    pub key: String,
    /// Its page.
    pub url: String,
    /// Its title.
    pub title: String,
    /// Its status (Jira) or state (GitLab).
    pub status: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Fields that are set (not null, not empty).
    pub filled: Vec<String>,
    /// Its component, if the tracker names one.
    pub component: Option<String>,
    /// Linked issues.
    pub links: Vec<Linked>,
    /// Web links: remote links, links in the description.
    pub web_links: Option<Vec<WebLink>>,
    /// Whether every merge request is approved (GitLab), with how many.
    pub approvals: Option<Approvals>,
}

/// An issue linked to the ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// Its key.
    pub key: String,
    /// The link's type and the type.
    pub types: Vec<String>,
    /// Its labels.
    pub labels: Vec<String>,
    /// Not done yet.
    pub open: bool,
}

/// A link with a title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebLink {
    /// What it says.
    pub title: String,
    /// Where it goes.
    pub url: String,
}

/// Merge requests of a ticket and their approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    /// How many merge requests.
    pub total: usize,
    /// Those not approved, by number.
    pub unapproved: Vec<String>,
}

/// What the request itself gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given {
    /// `--docs URL`.
    pub docs: Option<String>,
    /// `--rollback URL`.
    pub rollback: Option<String>,
}

impl Given {
    fn flag(&self, name: &str) -> Option<&str> {
        match name {
            "docs" => self.docs.as_deref(),
            "rollback" => self.rollback.as_deref(),
            _ => None,
        }
    }
}

/// How a sign came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The sign holds.
    Pass,
    /// It does not.
    Fail,
    /// It could not be told.
    Unknown,
}

/// One sign's result, as kept with the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The sign's name.
    pub sign: String,
    /// How it came out.
    pub outcome: Outcome,
    /// Why, in words.
    pub reason: String,
}

/// Checks `sign` against every ticket (one, or all of a version): it
/// passes only if it passes for each.
pub fn evaluate(sign: &Sign, tickets: &[Ticket], given: &Given) -> Evidence {
    let results: Vec<(Outcome, String)> = tickets
        .iter()
        .map(|t| check_one(&sign.check, t, given))
        .collect();
    let worst = results
        .iter()
        .map(|(o, _)| *o)
        .max_by_key(|o| match o {
            Outcome::Pass => 0,
            Outcome::Unknown => 1,
            Outcome::Fail => 2,
        })
        .unwrap_or(Outcome::Unknown);
    let reason = if tickets.is_empty() {
        "no ticket to check".to_owned()
    } else if tickets.len() == 1 || worst == Outcome::Pass {
        results.first().map(|(_, r)| r.clone()).unwrap_or_default()
    } else {
        tickets
            .iter()
            .zip(&results)
            .filter(|(_, (o, _))| *o == worst)
            .map(|(t, (_, r))| format!("{}: {r}", t.key))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Evidence {
        sign: sign.name.clone(),
        outcome: worst,
        reason,
    }
}

fn has(list: &[String], wanted: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(wanted))
}

fn check_one(check: &Check, t: &Ticket, given: &Given) -> (Outcome, String) {
    let verdict = |ok: bool, yes: String, no: String| {
        if ok {
            (Outcome::Pass, yes)
        } else {
            (Outcome::Fail, no)
        }
    };
    match check {
        Check::Status { any_of } => verdict(
            has(any_of, &t.status),
            format!("status is {:?}", t.status),
            format!(
                "status is {:?}, not one of {}",
                t.status,
                any_of
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Check::Label { label } => verdict(
            has(&t.labels, label),
            format!("labelled {label:?}"),
            format!("no label {label:?}"),
        ),
        Check::NoLabel { label } => verdict(
            !has(&t.labels, label),
            format!("not labelled {label:?}"),
            format!("labelled {label:?}"),
        ),
        Check::Field { field } => verdict(
            t.filled.iter().any(|f| f == field),
            format!("{field} is filled in"),
            format!("{field} is empty"),
        ),
        Check::NoOpenLinks { r#type, label } => {
            let matches = |l: &&Linked| {
                r#type.as_ref().is_some_and(|ty| has(&l.types, ty))
                    || label.as_ref().is_some_and(|lb| has(&l.labels, lb))
            };
            let open: Vec<&str> = t
                .links
                .iter()
                .filter(matches)
                .filter(|l| l.open)
                .map(|l| l.key.as_str())
                .collect();
            verdict(
                open.is_empty(),
                "none open".to_owned(),
                format!("open: {}", open.join(", ")),
            )
        }
        Check::Link { flag, r#match } => {
            if let Some(url) = flag.as_deref().and_then(|f| given.flag(f)) {
                return (Outcome::Pass, format!("given: {url}"));
            }
            let hint = flag
                .as_deref()
                .map(|f| format!("; give one with --{f} URL"))
                .unwrap_or_default();
            let Some(links) = &t.web_links else {
                return (
                    Outcome::Unknown,
                    format!("the ticket's links could not be read{hint}"),
                );
            };
            let found = links.iter().find(|l| {
                let text = format!("{} {}", l.title, l.url).to_lowercase();
                r#match.iter().any(|w| text.contains(&w.to_lowercase()))
            });
            match found {
                Some(l) => (Outcome::Pass, format!("in the ticket: {}", l.url)),
                None => (Outcome::Fail, format!("no such link in the ticket{hint}")),
            }
        }
        Check::Approved => match &t.approvals {
            None => (
                Outcome::Unknown,
                "merge request approvals could not be read".to_owned(),
            ),
            Some(a) if a.total == 0 => (Outcome::Fail, "no merge request".to_owned()),
            Some(a) if a.unapproved.is_empty() => (
                Outcome::Pass,
                format!("{} merge request(s) approved", a.total),
            ),
            Some(a) => (
                Outcome::Fail,
                format!("not approved: {}", a.unapproved.join(", ")),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Ticket {
        Ticket {
            key: "REL-1".into(),
            status: "Ready for Release".into(),
            labels: vec!["customer-accepted".into()],
            links: vec![Linked {
                key: "REL-90".into(),
                types: vec!["QA remark".into(), "Bug".into()],
                labels: vec![],
                open: false,
            }],
            web_links: Some(vec![
                WebLink {
                    title: "Release docs".into(),
                    url: "https://wiki/rel-1".into(),
                },
                WebLink {
                    title: "Rollback".into(),
                    url: "https://wiki/rel-1-back".into(),
                },
            ]),
            ..Ticket::default()
        }
    }

    fn outcomes(t: &[Ticket], given: &Given) -> Vec<Outcome> {
        defaults()
            .iter()
            .map(|s| evaluate(s, t, given).outcome)
            .collect()
    }

    #[test]
    fn a_good_ticket_passes_every_default_sign() {
        assert_eq!(
            outcomes(&[good()], &Given::default()),
            vec![Outcome::Pass; 5]
        );
    }

    #[test]
    fn each_missing_sign_fails_with_its_reason() {
        let mut t = good();
        t.labels = vec!["needs-review".into()];
        t.links[0].open = true;
        t.web_links = Some(vec![]);
        let given = Given {
            docs: Some("https://wiki/docs".into()),
            rollback: None,
        };
        let all: Vec<Evidence> = defaults()
            .iter()
            .map(|s| evaluate(s, &[t.clone()], &given))
            .collect();
        let got: Vec<Outcome> = all.iter().map(|e| e.outcome).collect();
        use Outcome::*;
        assert_eq!(got, vec![Fail, Fail, Fail, Pass, Fail]);
        assert_eq!(all[1].reason, "open: REL-90");
        assert!(all[3].reason.contains("given: https://wiki/docs"));
        assert!(
            all[4].reason.contains("--rollback URL"),
            "{}",
            all[4].reason
        );
    }

    #[test]
    fn unreadable_parts_are_unknown_never_passed() {
        let mut t = good();
        t.web_links = None;
        let e = evaluate(&defaults()[3], &[t], &Given::default());
        assert_eq!(e.outcome, Outcome::Unknown);
        let approved = Sign {
            name: "approved".into(),
            enabled: true,
            check: Check::Approved,
        };
        assert_eq!(
            evaluate(&approved, &[good()], &Given::default()).outcome,
            Outcome::Unknown
        );
        assert_eq!(
            evaluate(&approved, &[], &Given::default()).outcome,
            Outcome::Unknown
        );
    }

    #[test]
    fn a_version_passes_only_if_every_ticket_does() {
        let mut bad = good();
        bad.key = "REL-2".into();
        bad.status = "In Progress".into();
        let status = Sign {
            name: "ready".into(),
            enabled: true,
            check: Check::Status {
                any_of: vec!["ready for release".into()],
            },
        };
        let e = evaluate(&status, &[good(), bad], &Given::default());
        assert_eq!(e.outcome, Outcome::Fail);
        assert!(
            e.reason.starts_with("REL-2: status is \"In Progress\""),
            "{}",
            e.reason
        );
    }

    #[test]
    fn signs_parse_from_config() {
        let s: Vec<Sign> = serde_json::from_value(serde_json::json!([
            {"name": "ready", "check": "status", "any_of": ["Done"]},
            {"name": "qa", "check": "no-open-links", "label": "qa"},
            {"name": "mr", "check": "approved", "enabled": false},
        ]))
        .expect("signs");
        assert_eq!(s.len(), 3);
        assert!(!s[2].enabled);
        let bad = serde_json::from_value::<Vec<Sign>>(serde_json::json!([
            {"name": "x", "check": "vibes"}
        ]));
        assert!(bad.is_err());
    }
}
