//! casbin-rs. The model is RBAC with domains, the domain being the Azure scope:
//! `g = user, role, scope` holds the role assignments and `p = role, action, notActions`
//! the roles' permissions, one line per action pattern. casbin's built-in matchers cannot
//! express Azure patterns (`keyMatch` stops at the first `*`, `globMatch` does not let `*`
//! cross `/`), so two functions are registered: `azureMatch(action, pattern)` and
//! `azureMatchAny(action, patterns)` (space-separated notActions). The scope hierarchy is the
//! role manager's domain-matching function (casbin's "RBAC with domain pattern"): an
//! assignment in domain `/subscriptions/s1` holds in every domain at or below it.
//! Policies load through casbin's `StringAdapter`, i.e. the text of a `policy.csv`.

use casbin::function_map::OperatorFunction;
use casbin::prelude::*;
use casbin::rhai::Dynamic;

use crate::reference::{pattern_matches, scope_covers};
use crate::workload::Workload;

pub const MODEL: &str = "\
[request_definition]
r = sub, scope, act

[policy_definition]
p = role, act, notacts

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = azureMatch(r.act, p.act) && !azureMatchAny(r.act, p.notacts) && g(r.sub, p.role, r.scope)
";

pub struct Casbin {
    enforcer: Enforcer,
}

fn text(d: Dynamic) -> casbin::rhai::ImmutableString {
    d.into_immutable_string().unwrap_or_default()
}

fn azure_match(action: Dynamic, pattern: Dynamic) -> Dynamic {
    pattern_matches(&text(pattern), &text(action)).into()
}

fn azure_match_any(action: Dynamic, patterns: Dynamic) -> Dynamic {
    let action = text(action);
    text(patterns)
        .split_ascii_whitespace()
        .any(|p| pattern_matches(p, &action))
        .into()
}

/// Domain matching: `requested` lies at or below the assignment's domain `assigned`.
fn scope_matches(requested: &str, assigned: &str) -> bool {
    scope_covers(assigned, requested)
}

/// The policy as `policy.csv` text.
pub fn policy_csv(w: &Workload) -> String {
    let mut csv = String::new();
    for r in &w.roles {
        // An empty notActions field is written as `-`, which no action matches.
        let not = if r.not_actions.is_empty() {
            "-".to_owned()
        } else {
            r.not_actions.join(" ")
        };
        for a in &r.actions {
            csv.push_str(&format!("p, {}, {}, {}\n", r.name, a, not));
        }
    }
    for a in &w.assignments {
        csv.push_str(&format!(
            "g, {}, {}, {}\n",
            w.users[a.user as usize],
            w.roles[a.role as usize].name,
            w.scopes[a.scope as usize].path
        ));
    }
    csv
}

pub fn load(w: &Workload) -> std::result::Result<Casbin, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let model = DefaultModel::from_str(MODEL)
            .await
            .map_err(|e| e.to_string())?;
        let adapter = StringAdapter::new(policy_csv(w));
        let mut enforcer = Enforcer::new_raw(model, adapter)
            .await
            .map_err(|e| e.to_string())?;
        enforcer.add_function("azureMatch", OperatorFunction::Arg2(azure_match));
        enforcer.add_function("azureMatchAny", OperatorFunction::Arg2(azure_match_any));
        enforcer
            .get_role_manager()
            .write()
            .matching_fn(None, Some(scope_matches));
        enforcer.load_policy().await.map_err(|e| e.to_string())?;
        Ok(Casbin { enforcer })
    })
}

impl super::Engine for Casbin {
    fn check(&mut self, principal: &str, action: &str, scope: &str) -> bool {
        match self.enforcer.enforce((principal, scope, action)) {
            Ok(allowed) => allowed,
            Err(e) => panic!("casbin failed to enforce: {e}"),
        }
    }
}
