//! Push webhooks from GitHub and GitLab: which repository, which branch,
//! which commit, who pushed. Pure; the host already checked the signature.

use serde_json::Value;

/// A push to a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The repository's name as the sender gives it (`acme/shop`).
    pub repo: String,
    /// The branch, without `refs/heads/`.
    pub branch: String,
    /// The newest commit pushed.
    pub commit: String,
    /// Who pushed.
    pub pusher: String,
}

/// What a delivery is, when it is not a push to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAPush {
    /// Another event (a ping, a tag, a deleted branch): fine, nothing to do.
    Ignored(String),
    /// A push whose payload cannot be read.
    Unreadable(String),
}

/// Reads a delivery from `sender` (`github` or `gitlab`) whose event is
/// `event` (`push`, `Push Hook`).
pub fn parse(sender: &str, event: &str, body: &[u8]) -> Result<Push, NotAPush> {
    let is_push = match sender {
        "github" => event == "push",
        "gitlab" => event == "Push Hook",
        other => return Err(NotAPush::Unreadable(format!("unknown sender {other:?}"))),
    };
    if !is_push {
        return Err(NotAPush::Ignored(format!(
            "a {event:?} event is not a push; nothing to build"
        )));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| NotAPush::Unreadable(format!("the push payload is not JSON: {e}")))?;
    let text = |path: &[&str]| {
        path.iter()
            .try_fold(&v, |v, key| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let reference =
        text(&["ref"]).ok_or_else(|| NotAPush::Unreadable("the push has no `ref`".into()))?;
    let Some(branch) = reference.strip_prefix("refs/heads/") else {
        return Err(NotAPush::Ignored(format!(
            "{reference} is not a branch; nothing to build"
        )));
    };
    let commit = text(&["after"]).unwrap_or_default();
    if commit.is_empty() || commit.chars().all(|c| c == '0') {
        return Err(NotAPush::Ignored(format!(
            "branch {branch} was deleted; nothing to build"
        )));
    }
    let (repo, pusher) = match sender {
        "github" => (
            text(&["repository", "full_name"]),
            text(&["pusher", "name"]).or_else(|| text(&["sender", "login"])),
        ),
        _ => (
            text(&["project", "path_with_namespace"]),
            text(&["user_username"]).or_else(|| text(&["user_name"])),
        ),
    };
    let repo =
        repo.ok_or_else(|| NotAPush::Unreadable("the push does not name its repository".into()))?;
    Ok(Push {
        repo,
        branch: branch.to_owned(),
        commit,
        pusher: pusher.unwrap_or_else(|| "someone".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: &str = "1234567890abcdef1234567890abcdef12345678";

    #[test]
    fn reads_github_and_gitlab_pushes() {
        let github = format!(
            r#"{{"ref": "refs/heads/main", "after": "{AFTER}", "repository": {{"full_name": "acme/shop"}},
                "pusher": {{"name": "Дмитрий"}}, "commits": []}}"#
        );
        assert_eq!(
            parse("github", "push", github.as_bytes()),
            Ok(Push {
                repo: "acme/shop".into(),
                branch: "main".into(),
                commit: AFTER.into(),
                pusher: "Дмитрий".into(),
            })
        );
        let gitlab = format!(
            r#"{{"object_kind": "push", "ref": "refs/heads/release/1.2", "after": "{AFTER}",
                "project": {{"path_with_namespace": "acme/shop"}}, "user_username": "li.wei"}}"#
        );
        let push = parse("gitlab", "Push Hook", gitlab.as_bytes()).expect("a push");
        assert_eq!(
            (push.branch.as_str(), push.pusher.as_str()),
            ("release/1.2", "li.wei")
        );
    }

    #[test]
    fn tags_deletions_pings_and_garbage_are_told_apart() {
        let tag = format!(r#"{{"ref": "refs/tags/v1", "after": "{AFTER}"}}"#);
        assert!(matches!(
            parse("github", "push", tag.as_bytes()),
            Err(NotAPush::Ignored(_))
        ));
        let deleted =
            r#"{"ref": "refs/heads/x", "after": "0000000000000000000000000000000000000000"}"#;
        assert!(matches!(
            parse("github", "push", deleted.as_bytes()),
            Err(NotAPush::Ignored(_))
        ));
        assert!(matches!(
            parse("github", "ping", b"{}"),
            Err(NotAPush::Ignored(_))
        ));
        assert!(matches!(
            parse("github", "push", b"\xff"),
            Err(NotAPush::Unreadable(_))
        ));
        let nameless = format!(r#"{{"ref": "refs/heads/main", "after": "{AFTER}"}}"#);
        assert!(matches!(
            parse("github", "push", nameless.as_bytes()),
            Err(NotAPush::Unreadable(_))
        ));
    }
}
