//! iot-authz, as a user writes it: one policy document with the action catalog (the
//! provider operations, which Cedar's encoding also expands wildcards against), the roles as
//! Azure defines them (wildcards and notActions as written) and the role assignments,
//! compiled by `compile_documents`.
//!
//! iot-authz does not need the catalog to be correct: without it every check matches the
//! role patterns, and with it the compiler precomputes which roles grant each catalog action.
//! `iot-authz-patterns` is the same policy without the catalog, reported as its own row.

use iot_authz::policy::document::{AssignmentDoc, CatalogActionDoc, Document, RoleDoc};
use iot_authz::policy::syntax::{Instant, parse_time};
use iot_authz::policy::{CheckRequest, Snapshot, compile_documents};

use crate::workload::Workload;

pub struct IotAuthz {
    pub snapshot: Snapshot,
    at: Instant,
}

/// The policy document for the workload (the in-memory form of the YAML a user would write),
/// with or without the action catalog.
pub fn document(w: &Workload, catalog: bool) -> Document {
    let actions = if catalog {
        w.catalog
            .iter()
            .map(|name| CatalogActionDoc {
                name: name.clone(),
                description: None,
                data_action: false,
                implies: Vec::new(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Document {
        version: Some(1),
        actions,
        roles: w
            .roles
            .iter()
            .map(|r| RoleDoc {
                name: r.name.clone(),
                id: Some(r.id.clone()),
                actions: r.actions.clone(),
                not_actions: r.not_actions.clone(),
                ..RoleDoc::default()
            })
            .collect(),
        assignments: w
            .assignments
            .iter()
            .map(|a| AssignmentDoc {
                principal: w.users[a.user as usize].clone(),
                role: w.roles[a.role as usize].name.clone(),
                scope: w.scopes[a.scope as usize].path.clone(),
                ..AssignmentDoc::default()
            })
            .collect(),
        ..Document::default()
    }
}

pub fn load(w: &Workload, catalog: bool) -> Result<IotAuthz, String> {
    let docs = vec![("workload.yaml".to_owned(), document(w, catalog))];
    let snapshot = compile_documents(&docs).map_err(|e| e.to_string())?;
    Ok(IotAuthz {
        snapshot,
        at: parse_time("2026-06-01T00:00:00Z").map_err(|e| e.to_string())?,
    })
}

impl super::Engine for IotAuthz {
    #[inline]
    fn check(&mut self, principal: &str, action: &str, scope: &str) -> bool {
        let req = CheckRequest {
            principal,
            groups: &[],
            action,
            data_action: false,
            scope,
            at: self.at,
        };
        matches!(self.snapshot.check(&req), Ok(d) if d.allowed)
    }
}
