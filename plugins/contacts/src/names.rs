//! Module names: what is allowed, and what to suggest for a typo.

/// Longest module name.
pub const MAX: usize = 64;

/// Whether `name` can be a module name.
pub fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// Up to three known names closest to `wanted`, closest first.
pub fn closest<'a>(wanted: &str, known: &[&'a str]) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = known
        .iter()
        .map(|k| (strsim::jaro_winkler(wanted, k), *k))
        .filter(|(score, k)| {
            *score >= 0.7
                || strsim::osa_distance(wanted, k) <= (wanted.len() / 3).max(1)
                || k.contains(wanted)
                || wanted.contains(*k)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(3).map(|(_, k)| k).collect()
}

/// The reply for a name that does not exist: the closest ones, or how to
/// see them all.
pub fn unknown(what: &str, wanted: &str, known: &[&str], list_command: &str) -> String {
    let near = closest(wanted, known);
    if near.is_empty() {
        format!("there is no {what} {wanted:?}; `{list_command}` lists them")
    } else {
        format!(
            "there is no {what} {wanted:?}; did you mean {}?",
            near.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_suggest_the_nearest_names() {
        let known = ["frontend", "backend", "billing-api", "search"];
        assert_eq!(closest("fronted", &known)[0], "frontend");
        assert_eq!(closest("billing", &known), vec!["billing-api"]);
        // Swapped letters in a short name.
        assert_eq!(closest("wbe", &["web", "search"]), vec!["web"]);
        assert!(closest("zzz", &known).is_empty());
        assert!(unknown("module", "zzz", &known, "contacts").contains("`contacts` lists"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid("billing-api"));
        assert!(valid("web/checkout"));
        assert!(!valid("two words"));
        assert!(!valid(""));
    }
}
