//! The last phase of compilation: the resolved policy laid out as a [`Snapshot`], the
//! lookup structures `check` reads built once (see `compile.rs` for the phases before).
//!
//! Every count here was checked by validation (see `index.rs`), so positions convert to
//! `u32` with [`pos`].

use super::assignments::AssignmentTable;
use super::compile::{Assignments, Resolved, RoleTable};
use super::index::pos;
use super::snapshot::{
    CatalogAction, Core, Counts, DenyAssignment, FastMap, GrantTable, PrincipalIndex,
    PrincipalRows, Role, Rows, Snapshot, TagIndex, longest_grantable,
};
use super::syntax::{Instant, Scope};

/// The principals laid out: ids as one text, the index, and each principal's rows.
struct PrincipalLayout {
    text: String,
    index: PrincipalIndex,
    member_rows: Vec<[u32; 3]>,
    rows: Vec<PrincipalRows>,
}

/// The deny assignments by scope.
struct DenyLayout {
    by_scope: Rows,
    scopes: Vec<u64>,
}

/// What the actions of the policy need: the plane of each catalog action, the grant
/// table and the longest grantable action per plane.
struct ActionLayout {
    catalog_planes: FastMap<Box<str>, bool>,
    grant_table: GrantTable,
    longest_grantable: [Option<usize>; 2],
}

impl Snapshot {
    /// Lays out a resolved policy (validation passed; see `compile.rs`).
    pub(crate) fn from_resolved(r: Resolved) -> Snapshot {
        let principal_count = r.principal_names.len();
        let scope_count = r.scopes.len();
        let RoleTable {
            roles,
            lookup: role_lookup,
            ..
        } = r.roles;
        let Assignments {
            pending,
            ids,
            id_ends,
            windows,
            respelled,
        } = r.assignments;
        let (assignments, assignment_rows) = AssignmentTable::build(
            &pending,
            &ids,
            &id_ends,
            respelled,
            [principal_count, scope_count, roles.len()],
        );
        // The pending assignments and their ids are copied into the table: freed now.
        drop((pending, ids, id_ends));
        let principals = PrincipalLayout::build(&r.principal_names, r.member_of, &assignment_rows);
        drop(r.principal_names);
        let (scope_text, scope_index) = scope_layout(&r.scopes);
        let denies = DenyLayout::build(&r.denies, scope_count);
        let actions = ActionLayout::build(&roles, &r.catalog, &r.universe);
        let mut boundaries: Vec<Instant> = windows
            .iter()
            .flat_map(|&(from, until)| [from, until])
            .filter(|&t| t != Instant::MIN && t != Instant::MAX)
            .collect();
        boundaries.sort_unstable();
        boundaries.dedup();
        let counts = Counts {
            documents: r.sources.len(),
            roles: roles.len(),
            assignments: assignments.len(),
            deny_assignments: r.denies.len(),
            groups: r.groups,
            principals: principal_count,
            scopes: scope_count,
            catalog_actions: r.catalog.len(),
            routes: r.routes.len(),
        };
        Snapshot {
            revision: String::new(),
            counts,
            overlay: None,
            core: std::sync::Arc::new(Core {
                sources: r.sources,
                routes: r.routes,
                identity: r.identity,
                authzen_subject_types: r.authzen_subject_types,
                tests: r.tests,
                principal_text: principals.text,
                principal_index: principals.index,
                member_rows: principals.member_rows,
                principal_rows: principals.rows,
                scope_text,
                scope_index,
                scopes: r.scopes,
                ancestors: r.ancestors,
                linked_scopes: r.linked_scopes,
                roles,
                role_lookup,
                assignments,
                windows,
                denies: r.denies,
                denies_by_scope: denies.by_scope,
                deny_scopes: denies.scopes,
                catalog: r.catalog,
                catalog_planes: actions.catalog_planes,
                universe: r.universe,
                grant_table: actions.grant_table,
                boundaries,
                longest_grantable: actions.longest_grantable,
                constraints: r.constraints,
                group_principals: r.group_principals,
            }),
        }
    }
}

impl PrincipalLayout {
    /// Principal ids as one text with `u32` offsets, each principal's groups with their
    /// assignment rows, and the index. `assignment_rows[p]` starts principal `p`'s row.
    fn build(names: &[Box<str>], member_of: Rows, assignment_rows: &[u32]) -> Self {
        let mut text = String::with_capacity(names.iter().map(|n| n.len()).sum());
        let mut name_starts: Vec<u32> = Vec::with_capacity(names.len() + 1);
        for name in names.iter().map(|n| &**n).chain([""]) {
            name_starts.push(pos(text.len()));
            text.push_str(name);
        }
        let member_rows: Vec<[u32; 3]> = member_of
            .items
            .iter()
            .map(|&g| {
                let i = g as usize;
                match (assignment_rows.get(i), assignment_rows.get(i + 1)) {
                    (Some(&a), Some(&b)) => [g, a, b],
                    _ => [g, 0, 0],
                }
            })
            .collect();
        let rows: Vec<PrincipalRows> = name_starts
            .iter()
            .zip(&member_of.offsets)
            .zip(assignment_rows)
            .map(|((&name, &groups), &assignments)| PrincipalRows {
                name,
                groups,
                assignments,
            })
            .collect();
        let index = PrincipalIndex::build(&text, &rows);
        Self {
            text,
            index,
            member_rows,
            rows,
        }
    }
}

/// Scope keys as one text with `u32` offsets, and their index.
fn scope_layout(scopes: &[Scope]) -> (String, TagIndex) {
    let mut text = String::with_capacity(scopes.iter().map(|s| s.key().len()).sum());
    let mut key_starts: Vec<u32> = Vec::with_capacity(scopes.len() + 1);
    for key in scopes.iter().map(Scope::key).chain([""]) {
        key_starts.push(pos(text.len()));
        text.push_str(key);
    }
    let index = TagIndex::build(
        &text,
        key_starts
            .iter()
            .zip(&key_starts[1..])
            .map(|(&a, &b)| (a, b)),
    );
    (text, index)
}

impl DenyLayout {
    fn build(denies: &[DenyAssignment], scope_count: usize) -> Self {
        let mut scopes = vec![0u64; scope_count.div_ceil(64)];
        for d in denies {
            if let Some(word) = scopes.get_mut(d.scope.index() / 64) {
                *word |= 1 << (d.scope.get() % 64);
            }
        }
        let by_scope = Rows::build(
            scope_count,
            denies
                .iter()
                .enumerate()
                .map(|(i, d)| (d.scope.get(), pos(i)))
                .collect(),
        );
        Self { by_scope, scopes }
    }
}

impl ActionLayout {
    fn build(roles: &[Role], catalog: &[CatalogAction], universe: &[(Box<str>, bool)]) -> Self {
        let mut known: Vec<String> = universe
            .iter()
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect();
        known.sort_unstable();
        known.dedup();
        let catalog_planes: FastMap<Box<str>, bool> = catalog
            .iter()
            .map(|c| (c.name.to_ascii_lowercase().into_boxed_str(), c.data_action))
            .collect();
        let planes: Vec<Option<bool>> = known
            .iter()
            .map(|k| catalog_planes.get(k.as_str()).copied())
            .collect();
        let grant_table = GrantTable::build(
            roles,
            &known.iter().map(String::as_str).collect::<Vec<_>>(),
            &planes,
        );
        Self {
            catalog_planes,
            grant_table,
            longest_grantable: [
                longest_grantable(roles, false),
                longest_grantable(roles, true),
            ],
        }
    }
}
