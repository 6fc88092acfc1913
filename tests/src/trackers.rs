//! Small fakes of the Jira (REST v2) and GitLab (REST v4) endpoints the
//! release plugin uses, as real HTTP servers on 127.0.0.1, plus a tracker
//! that is down, one that is slow and one that answers garbage. Issue
//! trackers cannot run here, so these stand in for them (and only them).
//!
//! Tickets are made up from their keys, so a transcript can ask for any:
//! - Jira `PROJ-n`: `BILL` tickets are of component `billing`, `WEB` of
//!   `web`, others name none. `n` < 50 passes every default sign; 50 fails
//!   them all (needs review, an open QA remark, no customer label, no
//!   links); 51 passes all but has no links (give `--docs`/`--rollback`);
//!   404 does not exist. Transitions of a ticket numbered 13 answer 503.
//!   Fix version 10200 holds BILL-1 and BILL-2; 10201 holds BILL-1 and
//!   BILL-50.
//! - GitLab issues of any project: `iid` < 50 pass (approved merge
//!   request, `component::shop`, links in the description); 50 fails (not
//!   approved, an open `qa` issue linked, needs review).

use serde_json::{Value, json};

use crate::web::{FakeWeb, Received, Reply};

/// The fakes of one test run.
pub struct Trackers {
    /// Fake Jira.
    pub jira: FakeWeb,
    /// Fake GitLab.
    pub gitlab: FakeWeb,
    /// Answers after 30 s.
    pub slow: FakeWeb,
    /// Answers 200 with HTML.
    pub garbage: FakeWeb,
    /// An origin nobody listens on.
    pub down: String,
}

impl Trackers {
    /// Starts them all.
    pub async fn start() -> anyhow::Result<Self> {
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            format!("http://{}", l.local_addr()?)
        };
        Ok(Self {
            jira: FakeWeb::start(jira).await?,
            gitlab: FakeWeb::start(gitlab).await?,
            slow: FakeWeb::start(|_| Reply {
                delay: std::time::Duration::from_secs(30),
                ..Reply::text(200, "{}")
            })
            .await?,
            garbage: FakeWeb::start(|_| Reply::text(200, "<html>502 upstream oops</html>")).await?,
            down,
        })
    }

    /// `text` with `${JIRA}`, `${GITLAB}`, `${SLOW}`, `${GARBAGE}` and
    /// `${DOWN}` replaced by the origins.
    pub fn substitute(&self, text: &str) -> String {
        text.replace("${JIRA}", &self.jira.origin)
            .replace("${GITLAB}", &self.gitlab.origin)
            .replace("${SLOW}", &self.slow.origin)
            .replace("${GARBAGE}", &self.garbage.origin)
            .replace("${DOWN}", &self.down)
    }
}

fn json_reply(status: u16, v: &Value) -> Reply {
    Reply {
        headers: vec![("content-type".into(), "application/json".into())],
        ..Reply::text(status, &v.to_string())
    }
}

fn not_found() -> Reply {
    json_reply(404, &json!({"errorMessages": ["Issue does not exist"]}))
}

/// `PROJ-n` split, if it is one.
fn jira_key(key: &str) -> Option<(&str, u32)> {
    let (p, n) = key.split_once('-')?;
    Some((p, n.parse().ok()?))
}

fn jira_issue(key: &str) -> Option<Value> {
    let (project, n) = jira_key(key)?;
    if n == 404 {
        return None;
    }
    let component = match project {
        "BILL" => json!([{"name": "billing"}]),
        "WEB" => json!([{"name": "web"}]),
        _ => json!([]),
    };
    let bad = n == 50;
    let qa = json!({"type": {"name": "QA remark"}, "inwardIssue": {"key": format!("{project}-90"),
        "fields": {"summary": "button misaligned", "issuetype": {"name": "Bug"},
                   "status": {"name": if bad {"Open"} else {"Closed"},
                              "statusCategory": {"key": if bad {"new"} else {"done"}}}}}});
    Some(json!({"key": key, "fields": {
        "summary": format!("Ticket {key}"),
        "status": {"name": if bad {"In Review"} else {"Ready for Release"}},
        "labels": if bad { json!(["needs-review"]) } else { json!(["customer-accepted"]) },
        "components": component,
        "issuelinks": [qa],
    }}))
}

fn jira(r: &Received) -> Reply {
    let path = r.target.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (r.method.as_str(), parts.as_slice()) {
        ("GET", ["rest", "api", _, "issue", key]) => {
            jira_issue(key).map_or_else(not_found, |i| json_reply(200, &i))
        }
        ("GET", ["rest", "api", _, "issue", key, "remotelink"]) => match jira_key(key) {
            Some((_, 50 | 51)) => json_reply(200, &json!([])),
            Some(_) => json_reply(
                200,
                &json!([
                    {"object": {"url": format!("https://wiki.local/{key}/release"), "title": "Release docs"}},
                    {"object": {"url": format!("https://wiki.local/{key}/rollback"), "title": "Rollback plan"}}
                ]),
            ),
            None => not_found(),
        },
        ("GET", ["rest", "api", _, "search"]) => {
            let keys: &[&str] = if r.target.contains("10200") {
                &["BILL-1", "BILL-2"]
            } else if r.target.contains("10201") {
                &["BILL-1", "BILL-50"]
            } else {
                &[]
            };
            let issues: Vec<Value> = keys.iter().filter_map(|k| jira_issue(k)).collect();
            json_reply(200, &json!({"issues": issues, "total": issues.len()}))
        }
        ("POST", ["rest", "api", _, "issue", _, "comment"]) => json_reply(201, &json!({"id": "1"})),
        ("POST", ["rest", "api", _, "issue", key, "transitions"]) => match jira_key(key) {
            Some((_, 13)) => Reply::text(503, "maintenance"),
            Some(_) => Reply::text(204, ""),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn gitlab(r: &Received) -> Reply {
    let path = r.target.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let iid_of = |s: &str| s.parse::<u64>().ok();
    match (r.method.as_str(), parts.as_slice()) {
        ("GET", ["api", "v4", "projects", project, "issues", iid]) => {
            let Some(iid) = iid_of(iid) else {
                return not_found();
            };
            let project = project.replace("%2F", "/");
            let bad = iid == 50;
            json_reply(
                200,
                &json!({
                    "iid": iid, "title": format!("Issue {iid}"), "state": "opened",
                    "web_url": format!("{}/{project}/-/issues/{iid}", "http://gitlab.local"),
                    "labels": if bad { json!(["component::shop", "needs-review"]) }
                              else { json!(["component::shop", "customer-accepted"]) },
                    "description": if bad { "TODO".to_owned() } else {
                        format!("[Release docs](https://wiki.local/{iid}/release), [Rollback plan](https://wiki.local/{iid}/rollback)")
                    },
                }),
            )
        }
        ("GET", ["api", "v4", "projects", _, "issues", iid, "links"]) => match iid_of(iid) {
            Some(50) => json_reply(
                200,
                &json!([{"iid": 90, "state": "opened", "labels": ["qa"],
                "link_type": "relates_to", "references": {"full": "web/shop#90"}}]),
            ),
            Some(_) => json_reply(200, &json!([])),
            None => not_found(),
        },
        (
            "GET",
            [
                "api",
                "v4",
                "projects",
                _,
                "issues",
                iid,
                "related_merge_requests",
            ],
        ) => match iid_of(iid) {
            Some(50) => json_reply(
                200,
                &json!([{"iid": 6, "project_id": 1, "state": "opened"}]),
            ),
            Some(_) => json_reply(
                200,
                &json!([{"iid": 5, "project_id": 1, "state": "merged"}]),
            ),
            None => not_found(),
        },
        (
            "GET",
            [
                "api",
                "v4",
                "projects",
                _,
                "merge_requests",
                mr,
                "approvals",
            ],
        ) => json_reply(200, &json!({"approved": *mr == "5"})),
        ("POST", ["api", "v4", "projects", _, "issues", _, "notes"]) => {
            json_reply(201, &json!({"id": 1}))
        }
        ("PUT", ["api", "v4", "projects", _, "issues", iid]) => {
            json_reply(200, &json!({"iid": iid_of(iid)}))
        }
        _ => not_found(),
    }
}
