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
                "{} is not a role name (lowercase letters, digits and dashes)",
                crate::text::quoted(text)
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

/// Whether `text` is a Matrix user id, `@localpart:server`, by the
/// grammar of the spec: at most 255 bytes; the localpart in the historical
/// character set; the server a DNS name, IPv4 address or `[IPv6]` literal
/// with an optional port.
pub fn is_user_id(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('@') else {
        return false;
    };
    let Some((local, server)) = rest.split_once(':') else {
        return false;
    };
    text.len() <= crate::text::MAX_ID
        && !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._=-/+".contains(c))
        && is_server_name(server)
}

/// Whether `text` is a room id (`!opaque`, with a server part in room
/// versions before 12) or alias (`#name:server`).
pub fn is_room(text: &str) -> bool {
    if !crate::text::is_id(text) {
        return false;
    }
    if let Some(alias) = text.strip_prefix('#') {
        return alias
            .split_once(':')
            .is_some_and(|(name, server)| !name.is_empty() && is_server_name(server));
    }
    text.strip_prefix('!').is_some_and(|id| {
        !id.is_empty()
            && match id.split_once(':') {
                Some((opaque, server)) => !opaque.is_empty() && is_server_name(server),
                None => true,
            }
    })
}

/// `host[:port]` where host is a DNS name, IPv4 address or `[IPv6]`.
fn is_server_name(server: &str) -> bool {
    let (host_ok, port) = match server.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, after)) => (
                !addr.is_empty()
                    && addr
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || ".:".contains(c)),
                after,
            ),
            None => return false,
        },
        None => {
            let (host, port) = match server.split_once(':') {
                Some((h, p)) => (h, p),
                None => (server, ""),
            };
            let dns = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            // The port follows the only colon.
            (dns, if server.contains(':') { port } else { "" })
        }
    };
    let port_ok = match port.strip_prefix(':') {
        _ if port.is_empty() => true,
        Some(p) => is_port(p),
        // For a DNS host, `port` is what followed the colon.
        None if !server.starts_with('[') => is_port(port),
        None => false,
    };
    host_ok && port_ok
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
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
        assert!(is_user_id("@a:[::1]:8448"));
        assert!(is_user_id("@a:127.0.0.1"));
        let huge = format!("@a:{}", "x".repeat(10 * 1024));
        for bad in [
            "alice",
            "@alice",
            "@:x",
            "@a b:x",
            "#room:x",
            "@alice:",
            "@a:x\u{0}y",
            "@a:exämple.org",
            "@a:x:port",
            "@a:x:99999999",
            "@a:[zz]",
            huge.as_str(),
        ] {
            assert!(!is_user_id(bad), "{bad}");
        }
    }

    #[test]
    fn room_ids() {
        for good in [
            "!abc:x.org",
            "#ops:x.org",
            "!AbCdEf_123",
            "#a:localhost:8008",
        ] {
            assert!(is_room(good), "{good}");
        }
        let huge = format!("!a:{}", "x".repeat(300));
        for bad in [
            "ops",
            "#ops",
            "!",
            "!a b:x",
            "#:x",
            "!a\u{0}:x",
            huge.as_str(),
        ] {
            assert!(!is_room(bad), "{bad}");
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
