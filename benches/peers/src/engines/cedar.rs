//! Cedar (`cedar-policy`). Cedar has no wildcard on entity ids, so the roles' action patterns
//! are expanded against the action catalog at load time into Cedar's action hierarchy: each
//! role is an action group (`Action::"role:N"`) and each catalog action is a member of the
//! groups of the roles that grant it (`actions` minus `notActions`). Scopes are `Scope`
//! entities whose parent is the path parent, so `resource in S` is "at or below S". A role
//! assignment is an entry in the user's attribute for that role: `User::"user:u1"` has
//! `r3: [Scope::"/subscriptions/sub-0001", ...]`, the scopes where it holds role 3. One
//! policy per role then reads like the Azure rule:
//!
//! ```cedar
//! permit (principal is User, action in Action::"role:3", resource is Scope)
//! when { principal has r3 && resource in principal.r3 };
//! ```
//!
//! (The other common encoding, one template-linked policy per assignment, makes Cedar scan
//! 50,000 policies per request; this one keeps the policy set at one policy per role.)
//!
//! Requests name the target scope as the resource; Cedar only knows the ancestors of scopes
//! that are entities, which is why every checked scope is a node of the generated tree.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};

use crate::reference::role_grants;
use crate::workload::Workload;

pub struct Cedar {
    authorizer: Authorizer,
    policies: PolicySet,
    entities: Entities,
    user: EntityTypeName,
    action: EntityTypeName,
    scope: EntityTypeName,
}

fn type_name(name: &str) -> Result<EntityTypeName, String> {
    EntityTypeName::from_str(name).map_err(|e| e.to_string())
}

pub fn policy_text(w: &Workload) -> String {
    let mut text = String::new();
    for (i, role) in w.roles.iter().enumerate() {
        text.push_str(&format!(
            "@id({name:?})\npermit (principal is User, action in Action::\"role:{i}\", resource is Scope)\nwhen {{ principal has r{i} && resource in principal.r{i} }};\n",
            name = role.name
        ));
    }
    text
}

pub fn load(w: &Workload) -> Result<Cedar, String> {
    let policies = PolicySet::from_str(&policy_text(w)).map_err(|e| e.to_string())?;
    let user = type_name("User")?;
    let action = type_name("Action")?;
    let scope = type_name("Scope")?;
    let uid = |ty: &EntityTypeName, id: &str| {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    };

    let mut entities = Vec::new();
    // Scopes, each under its path parent.
    for node in &w.scopes {
        let parents = node
            .parent
            .map(|p| uid(&scope, &w.scopes[p].path))
            .into_iter()
            .collect();
        entities.push(Entity::new_no_attrs(uid(&scope, &node.path), parents));
    }
    // Roles as action groups; catalog actions as members of the roles that grant them.
    let role_groups: Vec<EntityUid> = (0..w.roles.len())
        .map(|i| uid(&action, &format!("role:{i}")))
        .collect();
    for g in &role_groups {
        entities.push(Entity::new_no_attrs(g.clone(), HashSet::new()));
    }
    for name in &w.catalog {
        let parents = w
            .roles
            .iter()
            .zip(&role_groups)
            .filter(|(r, _)| role_grants(r, name))
            .map(|(_, g)| g.clone())
            .collect();
        entities.push(Entity::new_no_attrs(uid(&action, name), parents));
    }
    // Users: for each role they hold, the set of scopes where they hold it.
    let mut held: Vec<HashMap<u32, Vec<u32>>> = vec![HashMap::new(); w.users.len()];
    for a in &w.assignments {
        held[a.user as usize]
            .entry(a.role)
            .or_default()
            .push(a.scope);
    }
    for (u, roles) in held.into_iter().enumerate() {
        if roles.is_empty() {
            continue;
        }
        let attrs: HashMap<String, RestrictedExpression> = roles
            .into_iter()
            .map(|(role, scopes)| {
                let set = scopes.into_iter().map(|s| {
                    RestrictedExpression::new_entity_uid(uid(&scope, &w.scopes[s as usize].path))
                });
                (format!("r{role}"), RestrictedExpression::new_set(set))
            })
            .collect();
        entities.push(
            Entity::new(uid(&user, &w.users[u]), attrs, HashSet::new())
                .map_err(|e| e.to_string())?,
        );
    }
    let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
    Ok(Cedar {
        authorizer: Authorizer::new(),
        policies,
        entities,
        user,
        action,
        scope,
    })
}

impl Cedar {
    pub fn request(&self, principal: &str, action: &str, scope: &str) -> Request {
        self.try_request(principal, action, scope)
            .unwrap_or_else(|e| panic!("a request without schema cannot fail: {e}"))
    }

    pub fn try_request(
        &self,
        principal: &str,
        action: &str,
        scope: &str,
    ) -> Result<Request, String> {
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        Request::new(
            uid(&self.user, principal),
            uid(&self.action, action),
            uid(&self.scope, scope),
            Context::empty(),
            None,
        )
        .map_err(|e| e.to_string())
    }

    /// One check from the three strings, as [`super::Engine::check`] but without `&mut`
    /// (the service shares one engine between its threads) and with an error instead of
    /// a panic. Only the service binary calls it (this module is shared with the
    /// in-process benchmark).
    #[allow(dead_code)]
    pub fn try_check(&self, principal: &str, action: &str, scope: &str) -> Result<bool, String> {
        Ok(self.decide(&self.try_request(principal, action, scope)?))
    }

    #[inline]
    pub fn decide(&self, request: &Request) -> bool {
        self.authorizer
            .is_authorized(request, &self.policies, &self.entities)
            .decision()
            == Decision::Allow
    }
}

impl super::Engine for Cedar {
    #[inline]
    fn check(&mut self, principal: &str, action: &str, scope: &str) -> bool {
        let request = self.request(principal, action, scope);
        self.decide(&request)
    }
}
