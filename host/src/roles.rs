//! Who may do what: role names, user ids, and the one rule that decides
//! whether a caller holds a command's required role.
//!
//! Roles come from two places, the config (fixed while running) and the
//! database (`!role grant`); this module only combines what it is given and
//! never reads either itself.

use std::collections::BTreeSet;
use std::fmt;

/// Roles every deployment has.
pub const BUILT_IN: &[&str] = &["admin", "approver", "ops"];

/// The role that passes every role check.
pub const ADMIN: &str = "admin";

/// A validated role name: lowercase letters, digits and dashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoleName(String);

impl RoleName {
    /// Accepts `ops`, `release-manager`; refuses `Ops`, `a b`, ``.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a role name (lowercase letters, digits and dashes)"
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `text` looks like a Matrix user id: `@localpart:server`.
pub fn is_user_id(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('@') else {
        return false;
    };
    let Some((local, server)) = rest.split_once(':') else {
        return false;
    };
    !local.is_empty()
        && !server.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._=-/+".contains(c))
        && !server.chars().any(char::is_whitespace)
}

/// The roles one user holds, from every source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held(pub BTreeSet<String>);

impl Held {
    /// Whether these roles satisfy a command's `required` role. Admins pass
    /// every check: they can grant themselves any role anyway, and making
    /// them do so first only adds noise to the audit log.
    pub fn satisfies(&self, required: Option<&str>) -> bool {
        match required {
            None => true,
            Some(role) => self.0.contains(role) || self.0.contains(ADMIN),
        }
    }

    /// The roles as a list, sorted.
    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(is_user_id("@alice:example.org"));
        assert!(is_user_id("@bot.1:localhost:8008"));
        for bad in ["alice", "@alice", "@:x", "@a b:x", "#room:x", "@alice:"] {
            assert!(!is_user_id(bad), "{bad}");
        }
    }

    #[test]
    fn admin_passes_every_check_and_others_need_the_role() {
        let admin = Held(["admin".to_owned()].into());
        let ops = Held(["ops".to_owned()].into());
        assert!(admin.satisfies(Some("approver")));
        assert!(ops.satisfies(Some("ops")));
        assert!(!ops.satisfies(Some("approver")));
        assert!(Held::default().satisfies(None));
    }

    #[test]
    fn role_names() {
        assert!(RoleName::parse("release-manager").is_ok());
        for bad in ["", "Ops", "a b", "-x", "1x"] {
            assert!(RoleName::parse(bad).is_err(), "{bad}");
        }
    }
}
