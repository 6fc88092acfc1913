//! The issue tracker, Jira (REST v2/v3) or GitLab (REST v4): which ticket
//! a request names, reading it during the call (`http.fetch`), and the
//! write-backs sent after the commit (`http.send`).
//!
//! Parsing what the tracker answered and building requests are pure and
//! tested here; only [`read`] talks to the host. A tracker that does not
//! answer, or answers with something that is not a ticket, is an error that
//! queues nothing; a part of a ticket that cannot be read (its links, its
//! approvals) leaves the signs that need it unknown.

use ikkyu_plugin_sdk::http;
use serde_json::Value;

use crate::settings::{Move, Tracker, TrackerKind};
use crate::signs::{Approvals, Check, Linked, Sign, Ticket, WebLink};

/// Longest ticket text taken from chat.
const MAX_REF: usize = 300;
/// Most tickets of one Jira version checked.
const MAX_VERSION_TICKETS: usize = 50;
/// Most merge requests of one GitLab issue whose approvals are read.
const MAX_MERGE_REQUESTS: usize = 10;

/// What a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketRef {
    /// A Jira issue key.
    Jira(String),
    /// A Jira fix version by id: every issue in it.
    JiraVersion(String),
    /// A GitLab issue: the project and the issue number.
    Gitlab {
        /// `group/name` or a numeric id.
        project: String,
        /// The issue number in the project.
        iid: u64,
    },
}

/// Why a ticket could not be read; shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread(pub String);

fn is_jira_key(s: &str) -> bool {
    let Some((project, number)) = s.split_once('-') else {
        return false;
    };
    let mut chars = project.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !number.is_empty()
        && !number.starts_with('0')
        && number.chars().all(|c| c.is_ascii_digit())
}

fn how_to_write(tracker: &Tracker) -> String {
    match tracker.kind {
        TrackerKind::Jira => format!(
            "write an issue key like PROJ-123, or paste its link ({}/browse/PROJ-123) or a fix version's link ({}/projects/PROJ/versions/10200)",
            tracker.url, tracker.url
        ),
        TrackerKind::Gitlab => format!(
            "write an issue number like #12 (project {}), group/project#12, or paste its link",
            tracker.project.as_deref().unwrap_or("not configured")
        ),
    }
}

/// The ticket `text` names, or how to write one.
pub fn parse_ref(text: &str, tracker: &Tracker) -> Result<TicketRef, String> {
    let text = text.trim();
    let shown: String = text.chars().take(60).collect();
    let wrong = || format!("`{shown}` is not a ticket: {}", how_to_write(tracker));
    if text.len() > MAX_REF {
        return Err(wrong());
    }
    let base = tracker.url.trim_end_matches('/');
    let path = text.strip_prefix(base).map(|p| p.trim_start_matches('/'));
    match tracker.kind {
        TrackerKind::Jira => {
            if let Some(path) = path {
                let parts: Vec<&str> = path.split(['/', '?', '#']).collect();
                match parts.as_slice() {
                    ["browse", key, ..] if is_jira_key(key) => {
                        return Ok(TicketRef::Jira((*key).to_owned()));
                    }
                    ["projects", _, "versions", id, ..]
                    | ["browse", _, "fixforversion", id, ..]
                        if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) =>
                    {
                        return Ok(TicketRef::JiraVersion((*id).to_owned()));
                    }
                    _ => return Err(wrong()),
                }
            }
            let key = text.trim_start_matches('#');
            if is_jira_key(key) {
                Ok(TicketRef::Jira(key.to_owned()))
            } else {
                Err(wrong())
            }
        }
        TrackerKind::Gitlab => {
            let (project, number) = if let Some(path) = path {
                match path.split_once("/-/issues/") {
                    Some((project, rest)) => (
                        Some(project.to_owned()),
                        rest.split(['/', '?', '#']).next().unwrap_or(""),
                    ),
                    None => return Err(wrong()),
                }
            } else if let Some((project, number)) = text.split_once('#') {
                let project = (!project.is_empty()).then(|| project.to_owned());
                (project, number)
            } else {
                (None, text)
            };
            let project = project.or_else(|| tracker.project.clone());
            let valid_project = project.as_deref().is_some_and(|p| {
                !p.is_empty()
                    && p.split('/').all(|s| {
                        !s.is_empty()
                            && s != ".."
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    })
            });
            match (project, number.parse::<u64>()) {
                (Some(project), Ok(iid)) if valid_project && iid > 0 => {
                    Ok(TicketRef::Gitlab { project, iid })
                }
                _ => Err(wrong()),
            }
        }
    }
}

/// How a ticket reference reads, as a Markdown link to the tracker.
pub fn link(r: &TicketRef, tracker: &Tracker) -> String {
    let base = tracker.url.trim_end_matches('/');
    match r {
        TicketRef::Jira(key) => format!("[{key}]({base}/browse/{key})"),
        TicketRef::JiraVersion(id) => {
            format!("[version {id}]({base}/issues/?jql=fixVersion%3D{id})")
        }
        TicketRef::Gitlab { project, iid } => {
            format!("[{project}#{iid}]({base}/{project}/-/issues/{iid})")
        }
    }
}

/// `s` with everything but unreserved characters percent-encoded, for a
/// path segment (`group/name` becomes `group%2Fname`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn request(tracker: &Tracker, method: &str, url: String, body: Option<&Value>) -> http::Request {
    let mut headers = vec![("Accept".to_owned(), "application/json".to_owned())];
    if let Some(auth) = &tracker.auth {
        let name = match tracker.kind {
            TrackerKind::Jira => "Authorization",
            TrackerKind::Gitlab => "PRIVATE-TOKEN",
        };
        headers.push((name.to_owned(), auth.clone()));
    }
    if body.is_some() {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    http::Request {
        method: method.to_owned(),
        url,
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
    }
}

fn api(tracker: &Tracker) -> String {
    let base = tracker.url.trim_end_matches('/');
    match tracker.kind {
        TrackerKind::Jira => format!("{base}/rest/api/{}", tracker.api),
        TrackerKind::Gitlab => format!("{base}/api/v4"),
    }
}

/// GETs `url` and parses JSON; every failure says what the tracker did.
fn get_json(tracker: &Tracker, url: String, what: &str) -> Result<Value, Unread> {
    let answer = http::fetch(&request(tracker, "GET", url, None))
        .map_err(|e| Unread(format!("the tracker did not answer for {what} ({e})")))?;
    match answer.status {
        200..=299 => serde_json::from_slice(&answer.body).map_err(|e| {
            Unread(format!(
                "the tracker answered for {what} with something that is not JSON ({e})"
            ))
        }),
        404 => Err(Unread(format!("the tracker has no {what} (404)"))),
        401 | 403 => Err(Unread(format!(
            "the tracker refused the bot's token for {what} ({}); an admin should check the tracker's auth in [plugins.release]",
            answer.status
        ))),
        status => Err(Unread(format!("the tracker answered {status} for {what}"))),
    }
}

/// Reads every ticket `r` names, with the parts `signs` need.
pub fn read(r: &TicketRef, tracker: &Tracker, signs: &[Sign]) -> Result<Vec<Ticket>, Unread> {
    let needs_links = signs.iter().any(|s| matches!(s.check, Check::Link { .. }));
    let needs_approvals = signs.iter().any(|s| matches!(s.check, Check::Approved));
    let api = api(tracker);
    let base = tracker.url.trim_end_matches('/');
    match r {
        TicketRef::Jira(key) => {
            let issue = get_json(
                tracker,
                format!("{api}/issue/{key}"),
                &format!("ticket {key}"),
            )?;
            let mut ticket = jira_ticket(&issue, base).ok_or_else(|| {
                Unread(format!(
                    "the tracker's answer for {key} is not a Jira issue"
                ))
            })?;
            if needs_links {
                ticket.web_links =
                    get_json(tracker, format!("{api}/issue/{key}/remotelink"), "links")
                        .ok()
                        .and_then(|v| jira_remote_links(&v));
            }
            Ok(vec![ticket])
        }
        TicketRef::JiraVersion(id) => {
            let found = get_json(
                tracker,
                format!("{api}/search?jql=fixVersion%3D{id}&maxResults={MAX_VERSION_TICKETS}"),
                &format!("fix version {id}"),
            )?;
            let issues = found
                .get("issues")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    Unread(format!(
                        "the tracker's answer for version {id} lists no issues"
                    ))
                })?;
            let mut tickets = Vec::new();
            for issue in issues.iter().take(MAX_VERSION_TICKETS) {
                let mut ticket = jira_ticket(issue, base).ok_or_else(|| {
                    Unread(format!("an issue of version {id} is not a Jira issue"))
                })?;
                if needs_links {
                    ticket.web_links = get_json(
                        tracker,
                        format!("{api}/issue/{}/remotelink", ticket.key),
                        "links",
                    )
                    .ok()
                    .and_then(|v| jira_remote_links(&v));
                }
                tickets.push(ticket);
            }
            if tickets.is_empty() {
                return Err(Unread(format!("fix version {id} has no issues")));
            }
            Ok(tickets)
        }
        TicketRef::Gitlab { project, iid } => {
            let issue_url = format!("{api}/projects/{}/issues/{iid}", encode(project));
            let issue = get_json(
                tracker,
                issue_url.clone(),
                &format!("issue {project}#{iid}"),
            )?;
            let mut ticket = gitlab_ticket(&issue, project).ok_or_else(|| {
                Unread(format!(
                    "the tracker's answer for {project}#{iid} is not a GitLab issue"
                ))
            })?;
            ticket.links = get_json(tracker, format!("{issue_url}/links"), "linked issues")
                .ok()
                .map(|v| gitlab_links(&v))
                .unwrap_or_default();
            if needs_approvals {
                ticket.approvals = gitlab_approvals(tracker, &api, &issue_url);
            }
            Ok(vec![ticket])
        }
    }
}

/// The text under `key`, or empty when it is missing or not text.
fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn is_filled(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// A Jira issue (`GET /issue/{key}`, or one of a search's `issues`).
pub fn jira_ticket(issue: &Value, base: &str) -> Option<Ticket> {
    let key = issue.get("key")?.as_str()?.to_owned();
    let fields = issue.get("fields")?.as_object()?;
    let name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_owned);
    let links = fields
        .get("issuelinks")
        .and_then(Value::as_array)
        .map(|links| {
            links
                .iter()
                .filter_map(|l| {
                    let other = l.get("inwardIssue").or_else(|| l.get("outwardIssue"))?;
                    let of = other.get("fields");
                    let mut types: Vec<String> = l.get("type").and_then(name).into_iter().collect();
                    types.extend(of.and_then(|f| f.get("issuetype")).and_then(name));
                    let category = of
                        .and_then(|f| f.get("status"))
                        .and_then(|s| s.get("statusCategory"))
                        .and_then(|c| c.get("key"))
                        .and_then(Value::as_str);
                    Some(Linked {
                        key: other.get("key")?.as_str()?.to_owned(),
                        types,
                        labels: strings(of.and_then(|f| f.get("labels"))),
                        open: category != Some("done"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Ticket {
        url: format!("{base}/browse/{key}"),
        title: fields
            .get("summary")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        status: fields.get("status").and_then(name).unwrap_or_default(),
        labels: strings(fields.get("labels")),
        filled: fields
            .iter()
            .filter(|(_, v)| is_filled(v))
            .map(|(k, _)| k.clone())
            .collect(),
        component: fields
            .get("components")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .and_then(name),
        links,
        web_links: None,
        approvals: None,
        key,
    })
}

/// Jira's remote links (`GET /issue/{key}/remotelink`).
pub fn jira_remote_links(v: &Value) -> Option<Vec<WebLink>> {
    Some(
        v.as_array()?
            .iter()
            .filter_map(|l| {
                let object = l.get("object")?;
                Some(WebLink {
                    url: object.get("url")?.as_str()?.to_owned(),
                    title: text(object, "title"),
                })
            })
            .collect(),
    )
}

/// A GitLab issue (`GET /projects/:id/issues/:iid`). Its links are the
/// Markdown links in its description; its component a `component::x`
/// label.
pub fn gitlab_ticket(issue: &Value, project: &str) -> Option<Ticket> {
    let iid = issue.get("iid")?.as_u64()?;
    let obj = issue.as_object()?;
    let labels = strings(issue.get("labels"));
    let description = issue
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some(Ticket {
        key: format!("{project}#{iid}"),
        url: text(issue, "web_url"),
        title: text(issue, "title"),
        status: text(issue, "state"),
        component: labels
            .iter()
            .find_map(|l| l.strip_prefix("component::"))
            .map(str::to_owned),
        labels,
        filled: obj
            .iter()
            .filter(|(_, v)| is_filled(v))
            .map(|(k, _)| k.clone())
            .collect(),
        links: Vec::new(),
        web_links: Some(markdown_links(description)),
        approvals: None,
    })
}

/// `[title](url)` links in Markdown text.
fn markdown_links(text: &str) -> Vec<WebLink> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        rest = rest.get(open + 1..).unwrap_or("");
        let Some(close) = rest.find("](") else { break };
        let title = rest.get(..close).unwrap_or("");
        let after = rest.get(close + 2..).unwrap_or("");
        let Some(end) = after.find(')') else { break };
        links.push(WebLink {
            title: title.to_owned(),
            url: after.get(..end).unwrap_or("").to_owned(),
        });
        rest = after.get(end..).unwrap_or("");
    }
    links
}

/// GitLab's linked issues (`GET …/issues/:iid/links`).
pub fn gitlab_links(v: &Value) -> Vec<Linked> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| {
                    let iid = l.get("iid")?.as_u64()?;
                    Some(Linked {
                        key: l
                            .get("references")
                            .and_then(|r| r.get("full"))
                            .and_then(Value::as_str)
                            .map_or_else(|| format!("#{iid}"), str::to_owned),
                        types: strings(Some(&Value::Array(
                            l.get("link_type").cloned().into_iter().collect(),
                        ))),
                        labels: strings(l.get("labels")),
                        open: l.get("state").and_then(Value::as_str) != Some("closed"),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every open merge request related to the issue is approved;
/// none when any of it could not be read.
fn gitlab_approvals(tracker: &Tracker, api: &str, issue_url: &str) -> Option<Approvals> {
    let related = get_json(
        tracker,
        format!("{issue_url}/related_merge_requests"),
        "merge requests",
    )
    .ok()?;
    let mut total = 0;
    let mut unapproved = Vec::new();
    for mr in related.as_array()?.iter().take(MAX_MERGE_REQUESTS) {
        if mr.get("state").and_then(Value::as_str) == Some("closed") {
            continue;
        }
        let iid = mr.get("iid")?.as_u64()?;
        let project = mr.get("project_id")?.as_u64()?;
        let approvals = get_json(
            tracker,
            format!("{api}/projects/{project}/merge_requests/{iid}/approvals"),
            "approvals",
        )
        .ok()?;
        total += 1;
        if approvals.get("approved").and_then(Value::as_bool) != Some(true) {
            unapproved.push(format!("!{iid}"));
        }
    }
    Some(Approvals { total, unapproved })
}

/// One write-back: what it does, for `show N`, and the request.
#[derive(Debug, Clone)]
pub struct WriteBack {
    /// `comment on REL-1`, `move REL-1`.
    pub what: String,
    /// The request to send after the commit.
    pub request: http::Request,
}

/// The write-backs for `keys` (the tickets of a request): a comment, then
/// the move, if configured.
pub fn write_backs(tracker: &Tracker, keys: &[String], comment: &str, to: &Move) -> Vec<WriteBack> {
    let api = api(tracker);
    let mut out = Vec::new();
    for key in keys {
        match tracker.kind {
            TrackerKind::Jira => {
                let body = if tracker.api >= 3 {
                    serde_json::json!({"body": {"type": "doc", "version": 1, "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": comment}]}
                    ]}})
                } else {
                    serde_json::json!({ "body": comment })
                };
                out.push(WriteBack {
                    what: format!("comment on {key}"),
                    request: request(
                        tracker,
                        "POST",
                        format!("{api}/issue/{key}/comment"),
                        Some(&body),
                    ),
                });
                if let Some(id) = &to.transition {
                    out.push(WriteBack {
                        what: format!("move {key}"),
                        request: request(
                            tracker,
                            "POST",
                            format!("{api}/issue/{key}/transitions"),
                            Some(&serde_json::json!({"transition": {"id": id}})),
                        ),
                    });
                }
            }
            TrackerKind::Gitlab => {
                let Some((project, iid)) = key.rsplit_once('#') else {
                    continue;
                };
                let issue = format!("{api}/projects/{}/issues/{iid}", encode(project));
                out.push(WriteBack {
                    what: format!("comment on {key}"),
                    request: request(
                        tracker,
                        "POST",
                        format!("{issue}/notes"),
                        Some(&serde_json::json!({ "body": comment })),
                    ),
                });
                if !(to.add_labels.is_empty()
                    && to.remove_labels.is_empty()
                    && to.state_event.is_none())
                {
                    let mut body = serde_json::Map::new();
                    if !to.add_labels.is_empty() {
                        body.insert("add_labels".into(), to.add_labels.join(",").into());
                    }
                    if !to.remove_labels.is_empty() {
                        body.insert("remove_labels".into(), to.remove_labels.join(",").into());
                    }
                    if let Some(event) = &to.state_event {
                        body.insert("state_event".into(), event.clone().into());
                    }
                    out.push(WriteBack {
                        what: format!("move {key}"),
                        request: request(tracker, "PUT", issue, Some(&Value::Object(body))),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jira() -> Tracker {
        serde_json::from_value(
            json!({"kind": "jira", "url": "https://jira.x", "auth": "Bearer {secret:jira}",
            "done": {"transition": "31"}}),
        )
        .expect("tracker")
    }

    fn gitlab() -> Tracker {
        serde_json::from_value(
            json!({"kind": "gitlab", "url": "https://git.x", "project": "web/shop",
            "done": {"add_labels": ["released"], "state_event": "close"}}),
        )
        .expect("tracker")
    }

    #[test]
    fn ticket_references_people_write() {
        let j = jira();
        assert_eq!(
            parse_ref("REL-12", &j),
            Ok(TicketRef::Jira("REL-12".into()))
        );
        assert_eq!(
            parse_ref("#REL-12", &j),
            Ok(TicketRef::Jira("REL-12".into()))
        );
        assert_eq!(
            parse_ref("https://jira.x/browse/REL-12?focused=1", &j),
            Ok(TicketRef::Jira("REL-12".into()))
        );
        assert_eq!(
            parse_ref("https://jira.x/projects/REL/versions/10200", &j),
            Ok(TicketRef::JiraVersion("10200".into()))
        );
        for bad in [
            "rel-12",
            "REL-",
            "REL-012",
            "https://evil.x/browse/REL-1",
            "Релиз-1",
            "didn't",
            "",
        ] {
            let err = parse_ref(bad, &j).expect_err(bad);
            assert!(err.contains("PROJ-123"), "{err}");
        }
        let g = gitlab();
        let shop = |iid| TicketRef::Gitlab {
            project: "web/shop".into(),
            iid,
        };
        assert_eq!(parse_ref("#7", &g), Ok(shop(7)));
        assert_eq!(parse_ref("7", &g), Ok(shop(7)));
        assert_eq!(
            parse_ref("https://git.x/web/shop/-/issues/7", &g),
            Ok(shop(7))
        );
        assert_eq!(
            parse_ref("api/core#3", &g),
            Ok(TicketRef::Gitlab {
                project: "api/core".into(),
                iid: 3
            })
        );
        assert!(parse_ref("../x#3", &g).is_err());
        assert!(parse_ref("#0", &g).is_err());
        assert!(parse_ref(&"9".repeat(400), &g).is_err());
    }

    #[test]
    fn links_point_at_the_tracker() {
        assert_eq!(
            link(&TicketRef::Jira("REL-1".into()), &jira()),
            "[REL-1](https://jira.x/browse/REL-1)"
        );
        let g = TicketRef::Gitlab {
            project: "web/shop".into(),
            iid: 7,
        };
        assert_eq!(
            link(&g, &gitlab()),
            "[web/shop#7](https://git.x/web/shop/-/issues/7)"
        );
    }

    #[test]
    fn a_jira_issue_becomes_a_ticket() {
        let issue = json!({"key": "REL-1", "fields": {
        "summary": "Pay by card", "status": {"name": "Ready for Release"},
        "labels": ["customer-accepted"], "components": [{"name": "billing"}],
        "customfield_1": null, "customfield_2": "x",
        "issuelinks": [
            {"type": {"name": "QA remark"}, "inwardIssue": {"key": "REL-90",
              "fields": {"status": {"statusCategory": {"key": "indeterminate"}}, "issuetype": {"name": "Bug"}}}},
            {"type": {"name": "Blocks"}, "outwardIssue": {"key": "REL-91",
              "fields": {"status": {"statusCategory": {"key": "done"}}}}}
        ]}});
        let t = jira_ticket(&issue, "https://jira.x").expect("ticket");
        assert_eq!(t.status, "Ready for Release");
        assert_eq!(t.component.as_deref(), Some("billing"));
        assert!(t.filled.contains(&"customfield_2".to_owned()));
        assert!(!t.filled.contains(&"customfield_1".to_owned()));
        assert_eq!(t.links.len(), 2);
        assert!(t.links[0].open && !t.links[1].open);
        assert_eq!(t.links[0].types, vec!["QA remark", "Bug"]);
        assert!(
            jira_ticket(&json!({"key": 5}), "x").is_none(),
            "garbage is not a ticket"
        );
        let remote =
            json!([{"object": {"url": "https://wiki/r", "title": "Release docs"}}, {"nope": 1}]);
        assert_eq!(jira_remote_links(&remote).map(|l| l.len()), Some(1));
    }

    #[test]
    fn a_gitlab_issue_becomes_a_ticket() {
        let issue = json!({"iid": 7, "title": "Cart", "state": "opened", "web_url": "https://git.x/web/shop/-/issues/7",
            "labels": ["component::shop", "customer-accepted"],
            "description": "See [Release docs](https://wiki/r) and [rollback](https://wiki/b)."});
        let t = gitlab_ticket(&issue, "web/shop").expect("ticket");
        assert_eq!(t.key, "web/shop#7");
        assert_eq!(t.component.as_deref(), Some("shop"));
        assert_eq!(t.web_links.as_ref().map(Vec::len), Some(2));
        let links = gitlab_links(
            &json!([{"iid": 9, "state": "opened", "labels": ["qa"], "link_type": "relates_to",
            "references": {"full": "web/shop#9"}}]),
        );
        assert_eq!(links[0].key, "web/shop#9");
        assert!(links[0].open);
        assert_eq!(
            markdown_links("[a](b) [c] (d) [e](f"),
            vec![WebLink {
                title: "a".into(),
                url: "b".into()
            }]
        );
    }

    #[test]
    fn write_backs_comment_then_move() {
        let j = write_backs(&jira(), &["REL-1".into()], "released", &jira().done);
        assert_eq!(j.len(), 2);
        assert_eq!(
            j[0].request.url,
            "https://jira.x/rest/api/2/issue/REL-1/comment"
        );
        assert_eq!(
            j[1].request.url,
            "https://jira.x/rest/api/2/issue/REL-1/transitions"
        );
        assert!(
            j[0].request
                .headers
                .contains(&("Authorization".into(), "Bearer {secret:jira}".into()))
        );
        let g = write_backs(
            &gitlab(),
            &["web/shop#7".into()],
            "released",
            &gitlab().done,
        );
        assert_eq!(g[1].request.method, "PUT");
        assert_eq!(
            g[1].request.url,
            "https://git.x/api/v4/projects/web%2Fshop/issues/7"
        );
        let body: Value = serde_json::from_slice(&g[1].request.body).expect("json");
        assert_eq!(
            body,
            json!({"add_labels": "released", "state_event": "close"})
        );
        assert_eq!(
            write_backs(&gitlab(), &["web/shop#7".into()], "x", &Move::default()).len(),
            1
        );
    }
}
