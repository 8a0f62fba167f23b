//! Runs the `tests:` cases of a policy (SPEC §8, `iot-authz test`).

use crate::policy::document::{Expectation, TestCaseDoc};
use crate::policy::queries::HttpRequest;
use crate::policy::syntax::{self, Instant};
use crate::policy::{CheckRequest, Decision, Problem, Reason, Snapshot};

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The decision differs from the expectation.
    Failed(String),
    /// The case itself is invalid (missing fields, bad values).
    Error(String),
}

/// One case's name, document and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub document: String,
    pub name: String,
    pub outcome: Outcome,
}

/// Runs every case of the snapshot; `now` is used for cases without `at`.
pub fn run(snapshot: &Snapshot, now: Instant) -> Vec<CaseResult> {
    snapshot
        .tests
        .iter()
        .map(|(document, case)| CaseResult {
            document: document.clone(),
            name: case.name.clone(),
            outcome: run_case(snapshot, case, now),
        })
        .collect()
}

/// The invalid cases of the snapshot as validation problems (a case that runs and fails
/// is a result, not a problem): `validate` reports them, so a broken suite is caught before
/// `test` runs it. Each names its document and `tests[i]` within it.
pub fn case_problems(snapshot: &Snapshot, now: Instant) -> Vec<Problem> {
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    run(snapshot, now)
        .into_iter()
        .filter_map(|r| {
            let i = index.entry(r.document.clone()).or_default();
            *i += 1;
            let Outcome::Error(message) = r.outcome else {
                return None;
            };
            let object = format!("tests[{}] `{}`", *i - 1, syntax::escape(&r.name));
            Some(Problem::new(r.document, object, message))
        })
        .collect()
}

fn run_case(snapshot: &Snapshot, case: &TestCaseDoc, now: Instant) -> Outcome {
    let at = match case.at.as_deref().map(syntax::parse_time).transpose() {
        Ok(at) => at.unwrap_or(now),
        Err(e) => return Outcome::Error(format!("at: {e}")),
    };
    // A misspelt expected reason would make the case fail forever: the case is invalid.
    if let Some(reason) = &case.reason
        && !Reason::KINDS.contains(&reason.as_str())
    {
        return Outcome::Error(format!(
            "reason: unknown kind `{}` (one of {})",
            syntax::escape(reason),
            Reason::KINDS.join(", ")
        ));
    }
    let decision: Decision<'_> = match (&case.action, &case.method) {
        (Some(action), None) => {
            let (Some(principal), Some(scope)) = (&case.principal, &case.scope) else {
                return Outcome::Error(
                    "an action case needs `principal`, `action` and `scope`".into(),
                );
            };
            // A field of the other form would be silently ignored: the case is invalid.
            if case.path.is_some() || !case.headers.is_empty() {
                return Outcome::Error(
                    "an action case takes no `path` or `headers` (they belong to a `method` case)"
                        .into(),
                );
            }
            match snapshot.check(&CheckRequest {
                principal,
                groups: &case.groups,
                action,
                data_action: case.data_action,
                scope,
                at,
            }) {
                Ok(d) => d,
                Err(e) => return Outcome::Error(e.to_string()),
            }
        }
        (None, Some(method)) => {
            let Some(path) = &case.path else {
                return Outcome::Error("a method case needs `path`".into());
            };
            if case.scope.is_some() || case.data_action {
                return Outcome::Error(
                    "a method case takes no `scope` or `dataAction` (its route gives them)".into(),
                );
            }
            let headers: Vec<(String, String)> = case
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            match snapshot.check_http(&HttpRequest {
                method,
                path,
                headers: &headers,
                principal: case.principal.as_deref(),
                groups: &case.groups,
                metadata: None,
                peer_principal: None,
                verifier: None,
                at,
            }) {
                Ok(d) => d.decision,
                Err(e) => return Outcome::Error(e.to_string()),
            }
        }
        _ => {
            return Outcome::Error(
                "a case needs either `action` + `scope` or `method` + `path`".into(),
            );
        }
    };
    let expected_allow = case.expect == Expectation::Allow;
    let mut problems = Vec::new();
    if decision.allowed != expected_allow {
        problems.push(format!(
            "expected {}, got {}",
            if expected_allow { "allow" } else { "deny" },
            if decision.allowed { "allow" } else { "deny" }
        ));
    }
    if let Some(reason) = &case.reason
        && reason != decision.reason.kind()
    {
        problems.push(format!(
            "expected reason `{reason}`, got `{}`",
            decision.reason.kind()
        ));
    }
    if problems.is_empty() {
        Outcome::Passed
    } else {
        let detail = serde_json::to_string(&decision.reason).unwrap_or_default();
        Outcome::Failed(format!("{} (reason {detail})", problems.join("; ")))
    }
}
