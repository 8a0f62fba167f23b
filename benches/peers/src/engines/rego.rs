//! Rego on regorus. The data document holds the roles as written (`actions` / `notActions`
//! with their wildcards) and the assignments indexed by principal; the policy walks the
//! caller's assignments, keeps those whose scope is the requested scope or one of its
//! prefixes, and matches the action with `glob.match(pattern, null, action)`: with `null`
//! delimiters `*` also matches `/`, as Azure's `*` does (with `[]`, `.` would be a
//! delimiter and `Microsoft.Edge/*` would not match).

use regorus::{Engine, Value};
use serde_json::{Map, Value as Json, json};

use crate::workload::Workload;

pub const POLICY: &str = r#"
package azure

import rego.v1

default allow := false

allow if {
	some a in data.assignments[input.principal]
	covers(a.scope, input.scope)
	grants(data.roles[a.role], input.action)
}

covers("/", _) := true

covers(assigned, requested) if assigned == requested

covers(assigned, requested) if startswith(requested, concat("", [assigned, "/"]))

grants(role, action) if {
	some pattern in role.actions
	glob.match(pattern, null, action)
	not removed(role, action)
}

removed(role, action) if {
	some pattern in role.notActions
	glob.match(pattern, null, action)
}
"#;

#[derive(Clone)]
pub struct Rego {
    engine: Engine,
}

/// The data document, as JSON: `{"roles": {name: {actions, notActions}}, "assignments":
/// {principal: [{role, scope}]}}`.
pub fn data(w: &Workload) -> Json {
    let roles: Map<String, Json> = w
        .roles
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                json!({"actions": r.actions, "notActions": r.not_actions}),
            )
        })
        .collect();
    let mut assignments: Map<String, Json> = Map::new();
    for a in &w.assignments {
        let entry = assignments
            .entry(w.users[a.user as usize].clone())
            .or_insert_with(|| Json::Array(Vec::new()));
        if let Json::Array(list) = entry {
            list.push(json!({
                "role": w.roles[a.role as usize].name,
                "scope": w.scopes[a.scope as usize].path,
            }));
        }
    }
    json!({"roles": roles, "assignments": assignments})
}

pub fn load(w: &Workload) -> Result<Rego, String> {
    let mut engine = Engine::new();
    engine
        .add_policy("azure.rego".to_owned(), POLICY.to_owned())
        .map_err(|e| e.to_string())?;
    engine
        .add_data(Value::from(data(w)))
        .map_err(|e| e.to_string())?;
    Ok(Rego { engine })
}

impl Rego {
    /// One check; an evaluation error is returned, not a panic (the service denies on it).
    pub fn try_check(
        &mut self,
        principal: &str,
        action: &str,
        scope: &str,
    ) -> Result<bool, String> {
        let mut input = Value::new_object();
        if let Ok(o) = input.as_object_mut() {
            o.insert(Value::from("principal"), Value::from(principal));
            o.insert(Value::from("action"), Value::from(action));
            o.insert(Value::from("scope"), Value::from(scope));
        }
        self.engine.set_input(input);
        self.engine
            .eval_rule("data.azure.allow".to_owned())
            .map(|v| v == Value::from(true))
            .map_err(|e| e.to_string())
    }
}

impl super::Engine for Rego {
    fn check(&mut self, principal: &str, action: &str, scope: &str) -> bool {
        self.try_check(principal, action, scope)
            .unwrap_or_else(|e| panic!("regorus failed to evaluate: {e}"))
    }
}
