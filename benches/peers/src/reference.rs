//! The naive reference: SPEC §3 restricted to this workload (no groups, no deny assignments,
//! no time bounds, no `implies`), written as plain loops over the generated data so that it
//! is obviously right. Every engine must agree with it on every check before anything is
//! timed.

use crate::workload::{RoleDef, Workload};

/// SPEC §2 action patterns: `*` matches any sequence of characters (`/` included), nothing
/// else is special, and matching is ASCII case-insensitive. Classic two-pointer glob match
/// with backtracking to the last star.
pub fn pattern_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.as_bytes(), action.as_bytes());
    let (mut pi, mut ai) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ai < a.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ai));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&a[ai]) {
            pi += 1;
            ai += 1;
        } else if let Some((sp, sa)) = star {
            pi = sp + 1;
            ai = sa + 1;
            star = Some((sp, sa + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A role grants an action when one of its `actions` matches and none of its `notActions`.
pub fn role_grants(role: &RoleDef, action: &str) -> bool {
    role.actions.iter().any(|p| pattern_matches(p, action))
        && !role.not_actions.iter().any(|p| pattern_matches(p, action))
}

/// Whether an assignment at `assigned` covers a request at `requested`: `assigned` is `/`,
/// or `requested` itself, or one of its path prefixes (ASCII case-insensitive).
pub fn scope_covers(assigned: &str, requested: &str) -> bool {
    if assigned == "/" {
        return true;
    }
    let (a, r) = (assigned.as_bytes(), requested.as_bytes());
    r.len() >= a.len()
        && r[..a.len()].eq_ignore_ascii_case(a)
        && (r.len() == a.len() || r[a.len()] == b'/')
}

/// The reference answers: for each check, allowed or not.
pub fn answers(w: &Workload) -> Vec<bool> {
    // An index by user is still "plain loops": for each check, walk that user's assignments.
    let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); w.users.len()];
    for (i, a) in w.assignments.iter().enumerate() {
        by_user[a.user as usize].push(i);
    }
    w.checks
        .iter()
        .map(|c| {
            let action = &w.catalog[c.action as usize];
            let scope = &w.scopes[c.scope as usize].path;
            by_user[c.user as usize].iter().any(|&i| {
                let a = &w.assignments[i];
                scope_covers(&w.scopes[a.scope as usize].path, scope)
                    && role_grants(&w.roles[a.role as usize], action)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "a/b/c"));
        assert!(pattern_matches("*/read", "Microsoft.Edge/targets/read"));
        assert!(!pattern_matches("*/read", "Microsoft.Edge/targets/write"));
        assert!(pattern_matches(
            "Microsoft.IoTSecurity/*/read",
            "microsoft.iotsecurity/alerts/READ"
        ));
        assert!(pattern_matches("a*b*c", "aXbYbZc"));
        assert!(!pattern_matches("a*b*c", "aXbYbZ"));
        assert!(pattern_matches(
            "Microsoft.Edge/*",
            "Microsoft.Edge/targets/deploy/action"
        ));
        assert!(!pattern_matches("Microsoft.Edge/*", "Microsoft.EdgeX"));
    }

    #[test]
    fn scopes() {
        assert!(scope_covers("/", "/subscriptions/a"));
        assert!(scope_covers("/subscriptions/a", "/subscriptions/a"));
        assert!(scope_covers(
            "/subscriptions/a",
            "/Subscriptions/A/resourceGroups/b"
        ));
        assert!(!scope_covers("/subscriptions/a", "/subscriptions/ab"));
        assert!(!scope_covers("/subscriptions/a/x", "/subscriptions/a"));
    }
}
