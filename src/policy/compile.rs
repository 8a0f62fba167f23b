//! Validation and compilation: parsed documents in, one immutable [`Snapshot`] out
//! (SPEC §2). Every problem found is reported, each naming its document and object.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use fixedbitset::FixedBitSet;

use super::assignments::PendingAssignment;
use super::document::AssignmentDoc;
use super::document::{Document, RouteDoc};
use super::error::{PolicyError, Problem};
use super::identity::IdentityConfig;
use super::index::{MAX_ITEMS, check_sizes};
use super::route::RouteTable;
use super::snapshot::{
    ALWAYS, Assignment, CatalogAction, Constraint, DenyAssignment, FastMap, IdText, ImpliedActions,
    ImpliedSet, LowerBuf, PrincipalIdx, Role, RoleIdx, Rows, ScopeIdx, Selector, Snapshot, Window,
    lower_into, pos,
};
use super::source::{self, SourceDocument};
use super::syntax::{
    self, ActionPattern, Instant, PrincipalSelector, Scope, escape, parse_time, scope_prefixes,
};

/// The most bytes of principal ids, or of scope keys, a policy may hold (offsets are `u32`).
const MAX_TEXT: usize = u32::MAX as usize;

/// The deepest group nesting accepted (a group inside a group inside ...).
pub const MAX_GROUP_DEPTH: usize = 64;

/// Parses, validates and compiles policy sources into a snapshot.
pub fn compile_sources(sources: &[SourceDocument]) -> Result<Snapshot, PolicyError> {
    let mut problems = Vec::new();
    let mut docs = Vec::new();
    for source in sources {
        match source.parse() {
            Ok(doc) => docs.push((source.name.clone(), doc)),
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(PolicyError { problems });
    }
    let mut snapshot = compile_documents(&docs)?;
    snapshot.revision = source::revision(sources);
    Ok(snapshot)
}

/// Interns principal ids to dense indices, looking a name up before copying it.
#[derive(Default)]
struct Principals {
    index: FastMap<Box<str>, PrincipalIdx>,
    names: Vec<Box<str>>,
}

impl Principals {
    fn intern(&mut self, name: &str) -> PrincipalIdx {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = PrincipalIdx::at(self.names.len());
        let name: Box<str> = name.into();
        self.names.push(name.clone());
        self.index.insert(name, i);
        i
    }
}

/// Collects problems with their place.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, document: &str, object: impl Into<String>, message: String) {
        self.0.push(Problem::new(document, object, message));
    }
}

fn named(kind: &str, index: usize, name: &str) -> String {
    format!("{kind}[{index}] `{}`", escape(name))
}

struct ScopeTable {
    index: FastMap<Box<str>, ScopeIdx>,
    scopes: Vec<Scope>,
}

impl ScopeTable {
    fn intern(&mut self, scope: &Scope) -> ScopeIdx {
        if let Some(&i) = self.index.get(scope.key()) {
            return i;
        }
        let i = ScopeIdx::at(self.scopes.len());
        self.scopes.push(scope.clone());
        self.index.insert(scope.key().into(), i);
        i
    }

    /// Looks a scope up by its text without allocating; `Err` describes a bad scope and
    /// `Ok(None)` is a valid scope not interned yet.
    fn lookup(
        &self,
        text: &str,
        buf: &mut LowerBuf,
    ) -> Result<Option<ScopeIdx>, syntax::ScopeError> {
        let trimmed = syntax::normalize_scope(text)?;
        Ok(self.index.get(lower_into(trimmed, buf)).copied())
    }

    /// The longest known path prefix of a key, itself included or not.
    fn longest_known(&self, key: &str, include_self: bool) -> Option<ScopeIdx> {
        scope_prefixes(key)
            .skip(usize::from(!include_self))
            .find_map(|p| self.index.get(p).copied())
    }
}

fn parse_patterns(
    problems: &mut Problems,
    doc: &str,
    object: &str,
    field: &str,
    patterns: &[String],
) -> Box<[ActionPattern]> {
    patterns
        .iter()
        .filter_map(|p| match ActionPattern::parse(p) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(doc, object, format!("{field}: {e}"));
                None
            }
        })
        .collect()
}

fn parse_scope(
    problems: &mut Problems,
    doc: &str,
    object: &str,
    field: &str,
    text: &str,
) -> Option<Scope> {
    match Scope::parse(text) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(doc, object, format!("{field}: {e}"));
            None
        }
    }
}

/// Validates and compiles parsed documents (`(name, document)` in load order).
pub fn compile_documents(docs: &[(String, Document)]) -> Result<Snapshot, PolicyError> {
    compile_within(docs, MAX_ITEMS)
}

/// [`compile_documents`] with at most `limit` items of each kind (see [`check_sizes`]).
/// The phases, in order: the documents' sizes; each declaration alone ([`Declared`]); the
/// group and scope closures ([`Closures`]); the checks that need the closures; the layout
/// of the snapshot ([`Snapshot::from_resolved`]).
fn compile_within(docs: &[(String, Document)], limit: usize) -> Result<Snapshot, PolicyError> {
    check_sizes(docs, limit)?;
    let mut compiler = Compiler::new(docs);
    let declared = compiler.declare();
    let closures = compiler.close(&declared);
    let constraints = compiler.check(&declared, &closures);
    let resolved = compiler.finish(declared, closures, constraints)?;
    Ok(Snapshot::from_resolved(resolved))
}

/// The state the phases share: the documents, the problems found so far, and the scopes
/// and principals numbered so far (each phase may name new ones until the closures).
struct Compiler<'d> {
    docs: &'d [(String, Document)],
    problems: Problems,
    scopes: ScopeTable,
    principals: Principals,
}

/// The role definitions, with where each is defined and the index by name and id.
pub(crate) struct RoleTable {
    pub roles: Vec<Role>,
    /// `(document, object)` of each role.
    origin: Vec<(String, String)>,
    pub lookup: FastMap<Box<str>, RoleIdx>,
}

/// The group definitions that keep their members: the members, and where each group is
/// defined (document index, item index).
#[derive(Default)]
struct Groups {
    members: HashMap<PrincipalIdx, Vec<PrincipalIdx>>,
    origin: HashMap<PrincipalIdx, (usize, usize)>,
}

/// Each linked scope's parents (sorted, distinct) and where they are defined (document
/// index, item index).
type Links = HashMap<ScopeIdx, (Vec<ScopeIdx>, (usize, usize))>;

/// A valid assignment in policy order, with the document and item it came from.
pub(crate) struct Pending {
    pub placed: PendingAssignment,
    doc: u32,
    item: u32,
}

impl AsRef<PendingAssignment> for Pending {
    fn as_ref(&self) -> &PendingAssignment {
        &self.placed
    }
}

/// The valid assignments, their ids and their time windows.
pub(crate) struct Assignments {
    pub pending: Vec<Pending>,
    /// Ids in policy order: `id_ends[n]` ends the id of pending assignment `n`.
    pub ids: IdText,
    pub id_ends: Vec<u32>,
    /// Distinct windows; `windows[0]` is [`ALWAYS`].
    pub windows: Vec<Window>,
    /// Pending assignments whose scope is spelled otherwise than the scope's first mention
    /// (`/Apps/Fleet` against `/apps/fleet`): their reasons show their own spelling.
    pub respelled: FastMap<usize, Box<str>>,
}

/// A `minAssignments` constraint as declared: document, object, role, scope, count.
type PendingConstraint = (String, String, RoleIdx, ScopeIdx, u32);

/// Phase 1's result: every declaration of the documents, each validated alone, with its
/// names numbered.
struct Declared {
    catalog: Vec<CatalogAction>,
    roles: RoleTable,
    groups: Groups,
    /// Principals below this index were first named by a group definition.
    group_principals: u32,
    links: Links,
    assignments: Assignments,
    denies: Vec<DenyAssignment>,
    constraints: Vec<PendingConstraint>,
    routes: RouteTable,
    identity: IdentityConfig,
    authzen_subject_types: BTreeMap<String, String>,
}

/// Phase 2's result: the group and scope relations closed.
struct Closures {
    /// Each principal's containing groups, transitively (sorted).
    member_of: Rows,
    /// Each scope's ancestors, itself included (sorted).
    ancestors: Rows<ScopeIdx>,
    /// The scopes with `scopeLinks` parents (sorted).
    linked_scopes: Vec<ScopeIdx>,
    /// The scopes on or below a cycle, whose ancestors are not known.
    cyclic: Vec<bool>,
}

impl Closures {
    /// Whether scope `s` lies at or below a cycle: it has no true ancestor set, so checks
    /// that need one are skipped for it rather than reported on a guess.
    fn unsure(&self, s: ScopeIdx) -> bool {
        self.cyclic.get(s.index()).copied().unwrap_or(false)
    }
}

/// Everything the layout needs: the validated, resolved policy, every name numbered.
pub(crate) struct Resolved {
    pub sources: Vec<String>,
    pub tests: Vec<(String, super::document::TestCaseDoc)>,
    pub catalog: Vec<CatalogAction>,
    pub roles: RoleTable,
    pub groups: usize,
    pub group_principals: u32,
    pub principal_names: Vec<Box<str>>,
    pub scopes: Vec<Scope>,
    pub member_of: Rows,
    pub ancestors: Rows<ScopeIdx>,
    pub linked_scopes: Vec<ScopeIdx>,
    pub assignments: Assignments,
    pub denies: Vec<DenyAssignment>,
    pub constraints: Vec<Constraint>,
    pub routes: RouteTable,
    pub identity: IdentityConfig,
    pub authzen_subject_types: BTreeMap<String, String>,
    pub universe: Vec<(Box<str>, bool)>,
}

impl<'d> Compiler<'d> {
    fn new(docs: &'d [(String, Document)]) -> Self {
        Self {
            docs,
            problems: Problems::default(),
            scopes: ScopeTable {
                index: FastMap::default(),
                scopes: Vec::new(),
            },
            principals: Principals::default(),
        }
    }

    /// Phase 1: each declaration alone, in an order where each finds what it refers to
    /// (roles name catalog actions, assignments roles, ...).
    fn declare(&mut self) -> Declared {
        let catalog = self.catalog();
        let mut roles = self.roles();
        self.imply(&catalog, &mut roles);
        let groups = self.groups();
        // Principals named by group definitions come first (see `Core::group_principals`).
        let group_principals = pos(self.principals.names.len());
        let links = self.scope_links();
        let assignments = self.assignments(&roles);
        let denies = self.deny_assignments();
        let constraints = self.constraints(&roles);
        let routes = self.routes();
        let identity = self.identity();
        let authzen_subject_types = self.authzen();
        Declared {
            catalog,
            roles,
            groups,
            group_principals,
            links,
            assignments,
            denies,
            constraints,
            routes,
            identity,
            authzen_subject_types,
        }
    }

    /// The catalog's actions: valid names, each defined once.
    fn catalog(&mut self) -> Vec<CatalogAction> {
        let docs = self.docs;
        let problems = &mut self.problems;

        let mut catalog = Vec::new();
        let mut catalog_seen: HashMap<String, String> = HashMap::new();
        for (doc, d) in docs {
            for (i, a) in d.actions.iter().enumerate() {
                let object = named("actions", i, &a.name);
                let name_ok = syntax::check_action(&a.name)
                    .map_err(|e| problems.push(doc, &object, e.to_string()))
                    .is_ok();
                for implied in &a.implies {
                    if let Err(e) = syntax::check_action(implied) {
                        problems.push(doc, &object, format!("implies: {e}"));
                    }
                }
                if !name_ok {
                    continue;
                }
                let key = a.name.to_ascii_lowercase();
                if let Some(first) = catalog_seen.get(&key) {
                    problems.push(
                        doc,
                        &object,
                        format!(
                            "action `{}` is defined twice (first in {first})",
                            escape(&a.name)
                        ),
                    );
                    continue;
                }
                catalog_seen.insert(key, doc.clone());
                catalog.push(CatalogAction {
                    name: a.name.as_str().into(),
                    description: a.description.as_deref().map(Into::into),
                    data_action: a.data_action,
                    implies: a.implies.iter().map(|s| s.as_str().into()).collect(),
                });
            }
        }
        catalog
    }

    /// The role definitions, their patterns parsed and assignable scopes numbered.
    fn roles(&mut self) -> RoleTable {
        let docs = self.docs;
        let Self {
            problems, scopes, ..
        } = self;

        let mut roles: Vec<Role> = Vec::new();
        let mut role_origin: Vec<(String, String)> = Vec::new();
        let mut role_lookup: FastMap<Box<str>, RoleIdx> = FastMap::default();
        for (doc, d) in docs {
            for (i, r) in d.roles.iter().enumerate() {
                let object = named("roles", i, &r.name);
                // A role with a problem is still checked in full and keeps the keys no other
                // role holds, so that a later role clashing with it is reported in the same run.
                let index = RoleIdx::at(roles.len());
                let mut keys = Vec::with_capacity(2);
                if r.name.trim().is_empty() {
                    problems.push(doc, &object, "role `name` must not be empty".into());
                } else {
                    keys.push(r.name.to_ascii_lowercase());
                }
                if let Some(id) = &r.id {
                    if id.trim().is_empty() {
                        problems.push(doc, &object, "role `id` must not be empty".into());
                    } else {
                        keys.push(id.to_ascii_lowercase());
                    }
                }
                for key in keys {
                    match role_lookup.get(key.as_str()) {
                        // Its name and id may be spelt alike.
                        Some(&other) if other == index => {}
                        Some(&other) => {
                            let (odoc, oobj) = &role_origin[other.index()];
                            problems.push(
                                doc,
                                &object,
                                format!(
                                    "role name or id `{}` is defined twice (also {oobj} in {odoc})",
                                    escape(&key)
                                ),
                            );
                        }
                        None => {
                            role_lookup.insert(key.into(), index);
                        }
                    }
                }
                let actions = parse_patterns(problems, doc, &object, "actions", &r.actions);
                let not_actions =
                    parse_patterns(problems, doc, &object, "notActions", &r.not_actions);
                let data_actions =
                    parse_patterns(problems, doc, &object, "dataActions", &r.data_actions);
                let not_data_actions = parse_patterns(
                    problems,
                    doc,
                    &object,
                    "notDataActions",
                    &r.not_data_actions,
                );
                let assignable_texts = r
                    .assignable_scopes
                    .clone()
                    .unwrap_or_else(|| vec!["/".to_owned()]);
                if assignable_texts.is_empty() {
                    problems.push(
                        doc,
                        &object,
                        "assignableScopes must list at least one scope (omit it for `/`)".into(),
                    );
                }
                let assignable_scopes = assignable_texts
                    .iter()
                    .filter_map(|s| parse_scope(problems, doc, &object, "assignableScopes", s))
                    .map(|s| scopes.intern(&s))
                    .collect();
                roles.push(Role {
                    name: r.name.as_str().into(),
                    id: r.id.as_deref().map(Into::into),
                    description: r.description.as_deref().map(Into::into),
                    actions,
                    not_actions,
                    data_actions,
                    not_data_actions,
                    implied: ImpliedSet::default(),
                    implied_data: ImpliedSet::default(),
                    assignable_scopes,
                });
                role_origin.push((doc.clone(), object));
            }
        }
        RoleTable {
            roles,
            origin: role_origin,
            lookup: role_lookup,
        }
    }

    /// Implied actions through the catalog, transitively; a role's notActions may not
    /// remove what its own grants imply. Every action `implies` names is numbered once, and
    /// each role keeps a bit per action (see `ImpliedSet`).
    fn imply(&mut self, catalog: &[CatalogAction], table: &mut RoleTable) {
        let problems = &mut self.problems;
        let RoleTable {
            roles,
            origin: role_origin,
            ..
        } = table;
        let catalog_by_key: HashMap<String, usize> = catalog
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.to_ascii_lowercase(), i))
            .collect();

        let mut implied_actions = ImpliedActions::default();
        let implies_ids: Vec<Vec<u32>> = catalog
            .iter()
            .map(|entry| {
                entry
                    .implies
                    .iter()
                    .map(|i| implied_actions.intern(&i.to_ascii_lowercase()))
                    .collect()
            })
            .collect();
        // The catalog entry of each numbered action, if it has one.
        let entry_of: Vec<Option<usize>> = (0..implied_actions.len())
            .map(|i| catalog_by_key.get(implied_actions.name(i as u32)).copied())
            .collect();
        let implied_actions = std::sync::Arc::new(implied_actions);
        let catalog_keys: Vec<String> = catalog
            .iter()
            .map(|e| e.name.to_ascii_lowercase())
            .collect();
        let count = implied_actions.len();
        let mut queue: VecDeque<(u32, bool)> = VecDeque::new();
        for (r, role) in roles.iter_mut().enumerate() {
            let (doc, object) = &role_origin[r];
            let mut implied = FixedBitSet::with_capacity(count);
            let mut implied_data = FixedBitSet::with_capacity(count);
            for (c, entry) in catalog.iter().enumerate() {
                if implies_ids[c].is_empty() {
                    continue;
                }
                if !role.grants_directly(&catalog_keys[c], entry.data_action) {
                    continue;
                }
                queue.clear();
                queue.extend(implies_ids[c].iter().map(|&i| (i, entry.data_action)));
                while let Some((action, inherited)) = queue.pop_front() {
                    let next = entry_of[action as usize];
                    let data = next.map_or(inherited, |n| catalog[n].data_action);
                    let set = if data {
                        &mut implied_data
                    } else {
                        &mut implied
                    };
                    if set.put(action as usize) {
                        continue;
                    }
                    let name = implied_actions.name(action);
                    let remove = if data {
                        &role.not_data_actions
                    } else {
                        &role.not_actions
                    };
                    if let Some(p) = remove.iter().find(|p| p.matches_lower(name)) {
                        problems.push(
                            doc,
                            object,
                            format!(
                                "action `{}` implied by `{}` is removed by {} `{}`",
                                escape(name),
                                escape(&entry.name),
                                if data { "notDataActions" } else { "notActions" },
                                escape(p.as_str())
                            ),
                        );
                    }
                    if let Some(n) = next {
                        queue.extend(implies_ids[n].iter().map(|&i| (i, catalog[n].data_action)));
                    }
                }
            }
            role.implied = ImpliedSet::new(implied_actions.clone(), implied);
            role.implied_data = ImpliedSet::new(implied_actions.clone(), implied_data);
        }
    }

    /// The group definitions: valid ids, each defined once, members interned.
    fn groups(&mut self) -> Groups {
        let docs = self.docs;
        let Self {
            problems,
            principals,
            ..
        } = self;

        let mut group_members: HashMap<PrincipalIdx, Vec<PrincipalIdx>> = HashMap::new();
        // Where each group is defined: (document index, item index).
        let mut group_origin: HashMap<PrincipalIdx, (usize, usize)> = HashMap::new();
        for (di, (doc, d)) in docs.iter().enumerate() {
            for (i, g) in d.groups.iter().enumerate() {
                let object = named("groups", i, &g.id);
                // A bad id still has its members checked, so that every problem shows at once.
                let gi = syntax::group_id(&g.id)
                    .map_err(|e| problems.push(doc, &object, e.to_string()))
                    .ok()
                    .map(|()| principals.intern(&g.id));
                let first = gi
                    .and_then(|gi| group_origin.get(&gi))
                    .map(|&(first, _)| first);
                if let Some(first) = first {
                    problems.push(
                        doc,
                        &object,
                        format!(
                            "group `{}` is defined twice (first in {})",
                            escape(&g.id),
                            docs[first].0
                        ),
                    );
                }
                // Only a valid group defined the first time keeps its members.
                let keep = gi.filter(|_| first.is_none());
                let mut members = Vec::new();
                for m in &g.members {
                    match syntax::principal_type(m) {
                        Ok(_) if keep.is_some() => members.push(principals.intern(m)),
                        Ok(_) => {}
                        Err(e) => problems.push(doc, &object, format!("members: {e}")),
                    }
                }
                if let Some(gi) = keep {
                    group_origin.insert(gi, (di, i));
                    group_members.insert(gi, members);
                }
            }
        }
        Groups {
            members: group_members,
            origin: group_origin,
        }
    }

    /// The `scopeLinks`: each linked scope once, parents interned.
    fn scope_links(&mut self) -> Links {
        let docs = self.docs;
        let Self {
            problems, scopes, ..
        } = self;

        let mut links: HashMap<ScopeIdx, (Vec<ScopeIdx>, (usize, usize))> = HashMap::new();
        for (di, (doc, d)) in docs.iter().enumerate() {
            for (i, l) in d.scope_links.iter().enumerate() {
                let object = named("scopeLinks", i, &l.scope);
                let child = parse_scope(problems, doc, &object, "scope", &l.scope)
                    .map(|c| scopes.intern(&c));
                let duplicate = child.is_some_and(|c| links.contains_key(&c));
                if duplicate {
                    problems.push(
                        doc,
                        &object,
                        format!("scope `{}` has links defined twice", escape(&l.scope)),
                    );
                }
                let mut parents: Vec<ScopeIdx> = l
                    .parents
                    .iter()
                    .filter_map(|p| parse_scope(problems, doc, &object, "parents", p))
                    .map(|p| scopes.intern(&p))
                    .collect();
                let (Some(child), false) = (child, duplicate) else {
                    continue;
                };
                parents.sort_unstable();
                parents.dedup();
                links.insert(child, (parents, (di, i)));
            }
        }
        links
    }

    /// The assignments. Nothing is allocated per assignment unless it has a problem: names
    /// are looked up before they are copied and object names are built only to report a
    /// problem.
    fn assignments(&mut self, roles: &RoleTable) -> Assignments {
        let docs = self.docs;
        let role_lookup = &roles.lookup;
        let Self {
            problems,
            scopes,
            principals,
            ..
        } = self;

        let total: usize = docs.iter().map(|(_, d)| d.assignments.len()).sum();
        let mut pending: Vec<Pending> = Vec::with_capacity(total);
        // Ids in policy order: `id_ends[n]` ends the id of pending assignment `n`.
        let mut ids = IdText::default();
        let mut id_ends: Vec<u32> = Vec::with_capacity(total);
        let mut ids_overflow = false;
        let mut assignment_ids: FastMap<&str, usize> = FastMap::default();
        assignment_ids.reserve(total);
        let mut windows: Vec<Window> = vec![ALWAYS];
        let mut window_index: FastMap<Window, u32> = FastMap::default();
        window_index.insert(ALWAYS, 0);
        let mut role_buf = LowerBuf::new();
        let mut scope_buf = LowerBuf::new();
        // Pending assignments whose scope is spelled otherwise than the scope's first mention
        // (`/Apps/Fleet` against `/apps/fleet`): their reasons show their own spelling.
        let mut respelled: FastMap<usize, Box<str>> = FastMap::default();
        for (di, (doc, d)) in docs.iter().enumerate() {
            for (i, a) in d.assignments.iter().enumerate() {
                let object = || assignment_object(i, a);
                let mut ok = true;
                if let Err(e) = syntax::principal_type(&a.principal) {
                    problems.push(doc, object(), format!("principal: {e}"));
                    ok = false;
                }
                let role = role_lookup.get(lower_into(&a.role, &mut role_buf)).copied();
                if role.is_none() {
                    problems.push(
                        doc,
                        object(),
                        format!("role `{}` is not defined", escape(&a.role)),
                    );
                    ok = false;
                }
                let scope = match scopes.lookup(&a.scope, &mut scope_buf) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        problems.push(doc, object(), format!("scope: {e}"));
                        None
                    }
                };
                let mut time = |field: &str, value: &Option<String>, default: Instant| match value {
                    None => Some(default),
                    Some(t) => match parse_time(t) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            problems.push(doc, object(), format!("{field}: {e}"));
                            None
                        }
                    },
                };
                // Absent is unbounded: beyond every time that can be written.
                let not_before = time("notBefore", &a.not_before, Instant::MIN);
                let not_after = time("notAfter", &a.not_after, Instant::MAX);
                if let (Some(nb), Some(na)) = (not_before, not_after)
                    && na < nb
                {
                    problems.push(doc, object(), "notAfter is before notBefore".into());
                    ok = false;
                }
                if let Some(id) = &a.id
                    && let Some(first) = assignment_ids.insert(id.as_str(), di)
                {
                    problems.push(
                        doc,
                        object(),
                        format!(
                            "assignment id `{}` is defined twice (first in {})",
                            escape(id),
                            docs[first].0
                        ),
                    );
                    ok = false;
                }
                let (Some(role), Some(scope), Some(not_before), Some(not_after), true) =
                    (role, scope, not_before, not_after, ok)
                else {
                    continue;
                };
                let scope = match scope {
                    Some(s) => s,
                    // Valid, so parsing again cannot fail.
                    None => match Scope::parse(&a.scope) {
                        Ok(s) => scopes.intern(&s),
                        Err(e) => {
                            problems.push(doc, object(), format!("scope: {e}"));
                            continue;
                        }
                    },
                };
                let window = if (not_before, not_after) == ALWAYS {
                    0
                } else {
                    let next = pos(windows.len());
                    *window_index
                        .entry((not_before, not_after))
                        .or_insert_with(|| {
                            windows.push((not_before, not_after));
                            next
                        })
                };
                // Output keeps the policy's spelling, trailing slash included (SPEC §2).
                let written = a.scope.as_str();
                if scopes.scopes[scope.index()].as_str() != written {
                    respelled.insert(pending.len(), written.into());
                }
                let end = ids.push(pending.len(), a.id.as_deref());
                id_ends.push(end.unwrap_or(0));
                if end.is_none() && !ids_overflow {
                    ids_overflow = true;
                    problems.push(doc, object(), "assignment ids exceed 4 GiB in total".into());
                }
                pending.push(Pending {
                    placed: PendingAssignment {
                        assignment: Assignment {
                            role,
                            window,
                            principal: principals.intern(&a.principal),
                            id_end: 0,
                        },
                        scope,
                    },
                    doc: pos(di),
                    item: pos(i),
                });
            }
        }
        Assignments {
            pending,
            ids,
            id_ends,
            windows,
            respelled,
        }
    }

    /// The deny assignments: named once, selectors and patterns parsed.
    fn deny_assignments(&mut self) -> Vec<DenyAssignment> {
        let docs = self.docs;
        let Self {
            problems,
            scopes,
            principals,
            ..
        } = self;

        let mut denies = Vec::new();
        let mut deny_names: HashMap<String, String> = HashMap::new();
        for (doc, d) in docs {
            for (i, x) in d.deny_assignments.iter().enumerate() {
                let object = named("denyAssignments", i, &x.name);
                // A deny assignment with a bad name is still checked in full.
                let mut named_ok = true;
                if x.name.trim().is_empty() {
                    problems.push(
                        doc,
                        &object,
                        "deny assignment `name` must not be empty".into(),
                    );
                    named_ok = false;
                } else {
                    let key = x.name.to_ascii_lowercase();
                    if let Some(first) = deny_names.get(&key) {
                        problems.push(
                            doc,
                            &object,
                            format!(
                                "deny assignment `{}` is defined twice (first in {first})",
                                escape(&x.name)
                            ),
                        );
                        named_ok = false;
                    } else {
                        deny_names.insert(key, doc.clone());
                    }
                }
                if x.principals.is_empty() {
                    problems.push(
                        doc,
                        &object,
                        "principals must name at least one principal, `TYPE:*` or `*`".into(),
                    );
                }
                let mut selectors = |field: &str,
                                     list: &[String],
                                     principals: &mut Principals|
                 -> Box<[Selector]> {
                    list.iter()
                        .filter_map(|s| match PrincipalSelector::parse(s) {
                            Ok(PrincipalSelector::Everyone) => Some(Selector::Everyone),
                            Ok(PrincipalSelector::Type(t)) => Some(Selector::Type(t.into())),
                            Ok(PrincipalSelector::Id(id)) => {
                                Some(Selector::Id(principals.intern(&id)))
                            }
                            Err(e) => {
                                problems.push(doc, &object, format!("{field}: {e}"));
                                None
                            }
                        })
                        .collect()
                };
                let principals_sel = selectors("principals", &x.principals, principals);
                let exclude = selectors("excludePrincipals", &x.exclude_principals, principals);
                let actions = parse_patterns(problems, doc, &object, "actions", &x.actions);
                let not_actions =
                    parse_patterns(problems, doc, &object, "notActions", &x.not_actions);
                let data_actions =
                    parse_patterns(problems, doc, &object, "dataActions", &x.data_actions);
                let not_data_actions = parse_patterns(
                    problems,
                    doc,
                    &object,
                    "notDataActions",
                    &x.not_data_actions,
                );
                let Some(scope) = parse_scope(problems, doc, &object, "scope", &x.scope) else {
                    continue;
                };
                if !named_ok {
                    continue;
                }
                denies.push(DenyAssignment {
                    name: x.name.as_str().into(),
                    principals: principals_sel,
                    exclude,
                    actions,
                    not_actions,
                    data_actions,
                    not_data_actions,
                    scope: scopes.intern(&scope),
                });
            }
        }
        denies
    }

    /// The `minAssignments` constraints (scopes interned now, checked after the closure).
    fn constraints(&mut self, roles: &RoleTable) -> Vec<PendingConstraint> {
        let docs = self.docs;
        let role_lookup = &roles.lookup;
        let Self {
            problems, scopes, ..
        } = self;

        let mut constraints = Vec::new();
        for (doc, d) in docs {
            for (i, c) in d.constraints.iter().enumerate() {
                let m = &c.min_assignments;
                let object = format!(
                    "constraints[{i}] (minAssignments `{}` at `{}`)",
                    escape(&m.role),
                    escape(&m.scope)
                );
                let role = role_lookup
                    .get(m.role.to_ascii_lowercase().as_str())
                    .copied();
                if role.is_none() {
                    problems.push(
                        doc,
                        &object,
                        format!("role `{}` is not defined", escape(&m.role)),
                    );
                }
                let scope = parse_scope(problems, doc, &object, "scope", &m.scope)
                    .map(|s| scopes.intern(&s));
                if let (Some(role), Some(scope)) = (role, scope) {
                    constraints.push((doc.clone(), object, role, scope, m.count));
                }
            }
        }
        constraints
    }

    /// The route table. Each route with its document and object; the origin shown in
    /// conflict messages joins the two.
    fn routes(&mut self) -> RouteTable {
        let docs = self.docs;
        let problems = &mut self.problems;
        let placed: Vec<(&str, String, &RouteDoc)> = docs
            .iter()
            .flat_map(|(doc, d)| {
                d.routes.iter().enumerate().map(move |(i, r)| {
                    (
                        doc.as_str(),
                        format!("routes[{i}] `{}`", escape(&r.path)),
                        r,
                    )
                })
            })
            .collect();
        let route_docs: Vec<(String, &RouteDoc)> = placed
            .iter()
            .map(|(doc, object, r)| (format!("{doc}: {object}"), *r))
            .collect();
        match RouteTable::compile(&route_docs) {
            Ok(t) => t,
            Err(list) => {
                for (input, problem) in list {
                    if let Some((doc, object, _)) = placed.get(input) {
                        problems.push(doc, object.as_str(), problem.to_string());
                    }
                }
                RouteTable::default()
            }
        }
    }

    /// The `identity` section: at most one.
    fn identity(&mut self) -> IdentityConfig {
        let docs = self.docs;
        let problems = &mut self.problems;

        let mut identity = IdentityConfig::default();
        let mut identity_doc: Option<&str> = None;
        for (doc, d) in docs {
            let Some(id) = &d.identity else { continue };
            if let Some(first) = identity_doc {
                problems.push(
                    doc,
                    "identity",
                    format!("identity is defined twice (first in {first})"),
                );
                continue;
            }
            identity_doc = Some(doc);
            match IdentityConfig::compile(id) {
                Ok(c) => identity = c,
                Err(list) => {
                    for (object, message) in list {
                        problems.push(doc, object, message);
                    }
                }
            }
        }
        identity
    }

    /// AuthZEN subject types: each renamed once, to a principal type; a principal type is
    /// never renamed (it keeps one meaning).
    fn authzen(&mut self) -> BTreeMap<String, String> {
        let docs = self.docs;
        let problems = &mut self.problems;

        let mut authzen_subject_types: BTreeMap<String, String> = BTreeMap::new();
        let mut authzen_origin: HashMap<String, String> = HashMap::new();
        for (doc, d) in docs {
            let Some(a) = &d.authzen else { continue };
            for (from, to) in &a.subject_types {
                let object = format!("authzen.subjectTypes.{}", escape(from));
                if let Some(first) = authzen_origin.get(from) {
                    problems.push(
                        doc,
                        object.as_str(),
                        format!("subject type is renamed twice (first in {first})"),
                    );
                    continue;
                }
                authzen_origin.insert(from.clone(), doc.clone());
                if from.is_empty() || from.contains(':') || from.chars().any(char::is_control) {
                    problems.push(
                        doc,
                        object.as_str(),
                        "a subject type must be non-empty, without `:` or control characters"
                            .into(),
                    );
                } else if syntax::PRINCIPAL_TYPES.contains(&from.as_str()) {
                    problems.push(
                        doc,
                        object.as_str(),
                        format!(
                            "`{}` is a principal type and cannot be renamed",
                            escape(from)
                        ),
                    );
                } else if !syntax::PRINCIPAL_TYPES.contains(&to.as_str()) {
                    problems.push(
                        doc,
                        object.as_str(),
                        format!(
                            "`{}` is not a principal type (one of {})",
                            escape(to),
                            syntax::PRINCIPAL_TYPES.join(", ")
                        ),
                    );
                } else {
                    authzen_subject_types.insert(from.clone(), to.clone());
                }
            }
        }
        authzen_subject_types
    }

    /// Phase 2: the group and scope relations closed, cycles (and groups nested too
    /// deep) reported.
    fn close(&mut self, declared: &Declared) -> Closures {
        let member_of = self.close_groups(&declared.groups);
        let (ancestors, cyclic) = self.close_scopes(&declared.links);
        let mut linked_scopes: Vec<ScopeIdx> = declared.links.keys().copied().collect();
        linked_scopes.sort_unstable();
        Closures {
            member_of,
            ancestors,
            linked_scopes,
            cyclic,
        }
    }

    /// Group closure: member -> every containing group; cycles are errors.
    fn close_groups(&mut self, groups: &Groups) -> Rows {
        let docs = self.docs;
        let Groups {
            members: group_members,
            origin: group_origin,
        } = groups;
        let principal_names = &self.principals.names;
        let problems = &mut self.problems;
        let principal_count = principal_names.len();

        let mut direct_parents: Vec<Vec<u32>> = vec![Vec::new(); principal_count];
        // In a fixed order, so that the same policy reports the same cycles.
        let mut defined: Vec<(&PrincipalIdx, &Vec<PrincipalIdx>)> = group_members.iter().collect();
        defined.sort_unstable_by_key(|&(&g, _)| g);
        for (&g, members) in defined {
            for &m in members {
                direct_parents[m.index()].push(g.get());
            }
        }
        let Closed {
            rows: member_of,
            faults,
            ..
        } = close_over(&direct_parents, MAX_GROUP_DEPTH, |_| 0);
        // A problem names a group definition: the group itself, or the group holding a member.
        let group_object = |g: u32| -> (&str, String) {
            let name = &principal_names[g as usize];
            match group_origin.get(&PrincipalIdx::new(g)) {
                Some(&(di, i)) => (docs[di].0.as_str(), named("groups", i, name)),
                None => (
                    docs.first().map_or("", |(n, _)| n.as_str()),
                    format!("groups `{}`", escape(name)),
                ),
            }
        };
        for fault in faults {
            match fault {
                Fault::Cycle { edge, path, len } => {
                    let (doc, object) = group_object(edge.0);
                    problems.push(
                        doc,
                        object,
                        format!(
                            "group membership cycle through `{}`: {} (each is a member of the next)",
                            escape(&principal_names[edge.0 as usize]),
                            show_cycle(&path, len, |g| &principal_names[g as usize])
                        ),
                    );
                }
                Fault::TooDeep { node, parent } => {
                    let at = if group_origin.contains_key(&PrincipalIdx::new(node)) {
                        node
                    } else {
                        parent
                    };
                    let (doc, object) = group_object(at);
                    problems.push(
                        doc,
                        object,
                        format!(
                            "groups nest deeper than {MAX_GROUP_DEPTH} levels at `{}`",
                            escape(&principal_names[node as usize])
                        ),
                    );
                }
            }
        }
        member_of
    }

    /// Scope closure: each known scope's parents are its longest known proper prefix and
    /// its linked parents (known scopes too). Returns the ancestors (each scope's row
    /// holding itself) and the scopes on or below a cycle.
    fn close_scopes(&mut self, links: &Links) -> (Rows<ScopeIdx>, Vec<bool>) {
        let docs = self.docs;
        let Self {
            problems, scopes, ..
        } = self;

        let scope_count = scopes.scopes.len();
        let mut scope_parents: Vec<Vec<u32>> = scopes
            .scopes
            .iter()
            .map(|s| {
                scopes
                    .longest_known(s.key(), false)
                    .map(ScopeIdx::get)
                    .into_iter()
                    .collect()
            })
            .collect();
        // A scope's path parent comes first in its row; the edges after it are links.
        let has_path_parent: Vec<bool> = scope_parents.iter().map(|r| !r.is_empty()).collect();
        for (&child, (parents, _)) in links {
            let row = &mut scope_parents[child.index()];
            let path_parent = row.first().copied();
            row.extend(
                parents
                    .iter()
                    .map(|p| p.get())
                    .filter(|&p| Some(p) != path_parent),
            );
        }
        let Closed {
            rows: ancestors,
            faults,
            cyclic,
        } = close_over(&scope_parents, usize::MAX, |n| {
            usize::from(has_path_parent[n])
        });
        let ancestors = add_self(ancestors, scope_count).map(ScopeIdx::new);
        for fault in faults {
            // Scope depth is unbounded, so every fault is a cycle.
            let Fault::Cycle { edge, path, len } = fault else {
                continue;
            };
            let name = scopes.scopes[edge.0 as usize].as_str();
            let (doc, object) = match links.get(&ScopeIdx::new(edge.0)) {
                Some((_, (di, i))) => {
                    let (doc, d) = &docs[*di];
                    let text = d.scope_links.get(*i).map_or(name, |l| l.scope.as_str());
                    (doc.as_str(), named("scopeLinks", *i, text))
                }
                None => (
                    docs.first().map_or("", |(n, _)| n.as_str()),
                    "scopeLinks".to_owned(),
                ),
            };
            problems.push(
                doc,
                object,
                format!(
                    "scope graph has a cycle through `{}`: {} (each scope's parent is the next)",
                    escape(name),
                    show_cycle(&path, len, |s| scopes.scopes[s as usize].as_str())
                ),
            );
        }
        (ancestors, cyclic)
    }

    /// Phase 3: the checks that need the closures: assignable scopes, then
    /// `minAssignments` (which do not count rejected assignments). Returns the constraints
    /// as compiled.
    fn check(&mut self, declared: &Declared, closures: &Closures) -> Vec<Constraint> {
        let rejected = self.check_assignable(declared, closures);
        self.check_constraints(declared, closures, &rejected)
    }

    /// Assignable scopes, checked once per distinct (role, scope). Returns the rejected
    /// assignments (positions in policy order, sorted).
    fn check_assignable(&mut self, declared: &Declared, closures: &Closures) -> Vec<usize> {
        let docs = self.docs;
        let problems = &mut self.problems;
        let scopes = &self.scopes;
        let roles = &declared.roles.roles;
        let pending = &declared.assignments.pending;
        let ancestors = &closures.ancestors;
        let unsure = |s: ScopeIdx| closures.unsure(s);

        let mut rejected: Vec<usize> = Vec::new();
        let mut assignable: FastMap<(RoleIdx, ScopeIdx), bool> = FastMap::default();
        for (n, p) in pending.iter().enumerate() {
            let (a, scope) = (&p.placed.assignment, p.placed.scope);
            let role = &roles[a.role.index()];
            let ok = *assignable.entry((a.role, scope)).or_insert_with(|| {
                if unsure(scope) {
                    return true;
                }
                let anc = ancestors.row(scope);
                role.assignable_scopes
                    .iter()
                    .any(|s| anc.binary_search(s).is_ok())
            });
            if ok {
                continue;
            }
            let (doc, d) = &docs[p.doc as usize];
            let item = p.item as usize;
            let object = d
                .assignments
                .get(item)
                .map(|x| assignment_object(item, x))
                .unwrap_or_default();
            problems.push(
                doc,
                object,
                format!(
                    "scope `{}` is outside the assignable scopes of role `{}` ({})",
                    escape(scopes.scopes[scope.index()].as_str()),
                    escape(&role.name),
                    role.assignable_scopes
                        .iter()
                        .map(|&s| format!("`{}`", escape(scopes.scopes[s.index()].as_str())))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            rejected.push(n);
        }
        rejected
    }

    /// `minAssignments`: enough assignments of the role at the scope or above, with a
    /// window that is not empty.
    fn check_constraints(
        &mut self,
        declared: &Declared,
        closures: &Closures,
        rejected: &[usize],
    ) -> Vec<Constraint> {
        let problems = &mut self.problems;
        let scopes = &self.scopes;
        let roles = &declared.roles.roles;
        let pending = &declared.assignments.pending;
        let windows = &declared.assignments.windows;
        let ancestors = &closures.ancestors;
        let unsure = |s: ScopeIdx| closures.unsure(s);
        let constraints = &declared.constraints;

        let mut kept_constraints = Vec::with_capacity(constraints.len());
        for (doc, object, role, scope, count) in constraints.iter().cloned() {
            if unsure(scope) {
                continue;
            }
            let anc = ancestors.row(scope);
            let found = pending
                .iter()
                .enumerate()
                .filter(|(n, p)| {
                    // An empty window (notAfter equal to notBefore) is never active, so it
                    // guarantees nothing. Other windows count: the constraint is checked when
                    // the policy loads, and must not start failing as time passes.
                    let (from, until) = windows[p.placed.assignment.window as usize];
                    p.placed.assignment.role == role
                        && anc.binary_search(&p.placed.scope).is_ok()
                        && rejected.binary_search(n).is_err()
                        && from < until
                })
                .count();
            if found < count as usize {
                problems.push(&doc, object, format!(
                    "needs at least {count} assignment(s) of role `{}` at `{}` or above, found {found}",
                    escape(&roles[role.index()].name),
                    escape(scopes.scopes[scope.index()].as_str())
                ));
            } else {
                kept_constraints.push(Constraint {
                    role,
                    scope,
                    count,
                    found: pos(found),
                    doc: doc.into(),
                    object: object.into(),
                });
            }
        }
        kept_constraints
    }

    /// The end of validation: every problem found, or the resolved policy for the layout.
    fn finish(
        self,
        declared: Declared,
        closures: Closures,
        constraints: Vec<Constraint>,
    ) -> Result<Resolved, PolicyError> {
        let Self {
            docs,
            mut problems,
            scopes,
            principals,
        } = self;
        // Principal ids and scope keys are held as one text each, with `u32` offsets.
        let principal_bytes: usize = principals.names.iter().map(|n| n.len()).sum();
        let scope_bytes: usize = scopes.scopes.iter().map(|s| s.key().len()).sum();
        if principal_bytes > MAX_TEXT || scope_bytes > MAX_TEXT {
            problems.push(
                docs.first().map_or("", |(n, _)| n.as_str()),
                "policy",
                "principal ids or scopes exceed 4 GiB in total".into(),
            );
        }
        if !problems.0.is_empty() {
            return Err(PolicyError {
                problems: problems.0,
            });
        }
        let Declared {
            catalog,
            roles,
            groups,
            group_principals,
            links: _,
            assignments,
            denies,
            constraints: _,
            routes,
            identity,
            authzen_subject_types,
        } = declared;
        let universe = build_universe(docs, &catalog, &routes, &identity.assign_action);
        Ok(Resolved {
            sources: docs.iter().map(|(n, _)| n.clone()).collect(),
            tests: docs
                .iter()
                .flat_map(|(doc, d)| d.tests.iter().map(move |t| (doc.clone(), t.clone())))
                .collect(),
            catalog,
            roles,
            groups: groups.members.len(),
            group_principals,
            principal_names: principals.names,
            scopes: scopes.scopes,
            member_of: closures.member_of,
            ancestors: closures.ancestors,
            linked_scopes: closures.linked_scopes,
            assignments,
            denies,
            constraints,
            routes,
            identity,
            authzen_subject_types,
            universe,
        })
    }
}

/// A problem found while closing a parent relation.
enum Fault {
    /// The edge `edge` (child to parent) closes a cycle: `path` is the cycle from
    /// `edge.0` on (at most [`CYCLE_SHOWN`] nodes), `len` its length.
    Cycle {
        edge: (u32, u32),
        path: Vec<u32>,
        len: usize,
    },
    /// `node` lies deeper than allowed, first so below `parent`.
    TooDeep { node: u32, parent: u32 },
}

/// A closed parent relation.
struct Closed {
    /// Each node's ancestors, sorted (the node excluded).
    rows: Rows,
    faults: Vec<Fault>,
    /// The nodes on or below a cycle (that reach one), whose rows are left empty.
    cyclic: Vec<bool>,
}

/// The most nodes of a cycle a problem shows.
const CYCLE_SHOWN: usize = 16;

/// A cycle as `` `a` -> `b` -> `a` ``, shortened when long.
fn show_cycle<'a>(path: &[u32], len: usize, name: impl Fn(u32) -> &'a str) -> String {
    let mut out: Vec<String> = path
        .iter()
        .map(|&n| format!("`{}`", escape(name(n))))
        .collect();
    if len > path.len() {
        out.push(format!("... ({} more)", len - path.len()));
    }
    if let Some(&first) = path.first() {
        out.push(format!("`{}`", escape(name(first))));
    }
    out.join(" -> ")
}

/// Transitive closure of a parent relation (`parents[n]` are n's direct parents), as rows
/// of sorted ancestors (n excluded). Iterative, so deep graphs cannot overflow the stack.
///
/// Every cycle is reported once for each edge that closes it in a depth-first search
/// (so removing the reported edges leaves no cycle), and a node deeper than `max_depth`
/// (not on or below a cycle) is reported where the depth is first exceeded. Rows are
/// exact for the other nodes; nothing is collected for these, so a hostile graph costs
/// no more than a valid one. A cycle is reported at its first edge back from the closing
/// one that `blame_from` allows (edges `parents[n][blame_from(n)..]`), or at the closing
/// edge when none is.
fn close_over(
    parents: &[Vec<u32>],
    max_depth: usize,
    blame_from: impl Fn(usize) -> usize,
) -> Closed {
    let mut walk = Walk::new(parents, max_depth);
    for start in 0..parents.len() {
        walk.search(start, &blame_from);
    }
    walk.into_closed()
}

/// Where a node of [`close_over`]'s search is.
#[derive(Clone, Copy, PartialEq)]
enum State {
    New,
    Open,
    Done,
}

/// A node on the search path, the next of its parents to visit, and the stack position
/// of the nearest edge below it that a cycle may be blamed on.
#[derive(Clone, Copy)]
struct Frame {
    node: usize,
    next: usize,
    blame: Option<usize>,
}

/// The depth-first search of [`close_over`], iterative: its state between steps.
struct Walk<'p> {
    parents: &'p [Vec<u32>],
    max_depth: usize,
    state: Vec<State>,
    /// Each done node's ancestors (sorted), empty on or below a cycle or too deep.
    closure: Vec<Vec<u32>>,
    depth: Vec<usize>,
    cyclic: Vec<bool>,
    /// Where each open node is on the stack.
    position: Vec<usize>,
    faults: Vec<Fault>,
    /// The edges that closed a cycle (a parent listed twice closes it once).
    closing: HashSet<(usize, usize)>,
    stack: Vec<Frame>,
}

impl<'p> Walk<'p> {
    fn new(parents: &'p [Vec<u32>], max_depth: usize) -> Self {
        let n = parents.len();
        Self {
            parents,
            max_depth,
            state: vec![State::New; n],
            closure: vec![Vec::new(); n],
            depth: vec![0; n],
            cyclic: vec![false; n],
            position: vec![0; n],
            faults: Vec::new(),
            closing: HashSet::new(),
            stack: Vec::new(),
        }
    }

    /// Searches from `start`, unless an earlier search reached it, until its path is
    /// empty.
    fn search(&mut self, start: usize, blame_from: &impl Fn(usize) -> usize) {
        if self.state[start] != State::New {
            return;
        }
        self.open(start, None);
        while let Some(top) = self.stack.len().checked_sub(1) {
            let Frame { node, next, blame } = self.stack[top];
            match self.parents[node].get(next) {
                Some(&p) => {
                    self.stack[top].next += 1;
                    let blameable = next >= blame_from(node);
                    self.follow(top, node, p as usize, blameable, blame);
                }
                None => {
                    self.finish(node);
                    self.stack.pop();
                }
            }
        }
    }

    /// Puts `node` on the search path.
    fn open(&mut self, node: usize, blame: Option<usize>) {
        self.state[node] = State::Open;
        self.position[node] = self.stack.len();
        self.stack.push(Frame {
            node,
            next: 0,
            blame,
        });
    }

    /// The edge from `node` (at stack position `top`) to its parent `p`.
    fn follow(&mut self, top: usize, node: usize, p: usize, blameable: bool, blame: Option<usize>) {
        match self.state[p] {
            State::New => self.open(p, if blameable { Some(top) } else { blame }),
            // A parent listed twice closes the same cycle again.
            State::Open if !self.closing.insert((node, p)) => {}
            State::Open => self.cycle(top, node, p, blameable, blame),
            State::Done => {}
        }
    }

    /// The edge from `node` (at `top`) to the open `p` closes a cycle: the stack from p
    /// up to node, then back to p. Reported at the edge blame allows.
    fn cycle(&mut self, top: usize, node: usize, p: usize, blameable: bool, blame: Option<usize>) {
        self.cyclic[node] = true;
        let from = self.position[p];
        let len = top - from + 1;
        let at = if blameable {
            top
        } else {
            blame.filter(|&k| k >= from).unwrap_or(top)
        };
        let stack = &self.stack;
        let nth = |o: usize| pos(stack[from + (at - from + o) % len].node);
        self.faults.push(Fault::Cycle {
            edge: (nth(0), nth(1)),
            path: (0..len.min(CYCLE_SHOWN)).map(nth).collect(),
            len,
        });
    }

    /// Every parent of `node` is done: its row and depth, or its mark below a cycle.
    fn finish(&mut self, node: usize) {
        self.state[node] = State::Done;
        // A parent still open closed a cycle, marked then; a parent below a cycle was
        // marked when it was done.
        if self.parents[node].iter().any(|&p| self.cyclic[p as usize]) {
            self.cyclic[node] = true;
        }
        if self.cyclic[node] {
            return;
        }
        let mut all: Vec<u32> = Vec::new();
        let mut d = 0;
        let mut deepest = None;
        for &p in &self.parents[node] {
            all.push(p);
            all.extend_from_slice(&self.closure[p as usize]);
            if self.depth[p as usize] + 1 > d {
                d = self.depth[p as usize] + 1;
                deepest = Some(p);
            }
        }
        if d > self.max_depth {
            // Reported once where the bound is first passed; nothing is collected below,
            // so a long chain costs no more than a short one.
            if d - 1 == self.max_depth {
                self.faults.push(Fault::TooDeep {
                    node: pos(node),
                    parent: deepest.unwrap_or(pos(node)),
                });
            }
            all = Vec::new();
        } else {
            all.sort_unstable();
            all.dedup();
        }
        self.closure[node] = all;
        self.depth[node] = d;
    }

    fn into_closed(self) -> Closed {
        let n = self.closure.len();
        let pairs = self
            .closure
            .into_iter()
            .enumerate()
            .flat_map(|(i, row)| {
                let i = pos(i);
                row.into_iter().map(move |p| (i, p))
            })
            .collect();
        Closed {
            rows: Rows::build(n, pairs),
            faults: self.faults,
            cyclic: self.cyclic,
        }
    }
}

fn add_self(rows: Rows, n: usize) -> Rows {
    let mut pairs = Vec::with_capacity(rows.items.len() + n);
    for i in 0..n {
        let i = pos(i);
        pairs.push((i, i));
        pairs.extend(rows.row(i).iter().map(|&p| (i, p)));
    }
    Rows::build(n, pairs)
}

/// The action universe for delegation and ListPermissions: the catalog plus every literal
/// action string in the policy, each with its data flag, first spelling kept, sorted.
fn build_universe(
    docs: &[(String, Document)],
    catalog: &[CatalogAction],
    routes: &RouteTable,
    assign_action: &str,
) -> Vec<(Box<str>, bool)> {
    let mut seen: HashSet<(String, bool)> = HashSet::new();
    let mut out = Vec::new();
    let catalog_flag: HashMap<String, bool> = catalog
        .iter()
        .map(|c| (c.name.to_ascii_lowercase(), c.data_action))
        .collect();
    // A catalog action lives in its own plane only; any other literal may be asked for in
    // either plane (a role's `*` grants it in the plane that pattern belongs to), so it is
    // in the universe in both, the plane it was written in first.
    let mut add = |name: &str, data: bool| {
        if name.contains('*') || syntax::check_action(name).is_err() {
            return;
        }
        let lower = name.to_ascii_lowercase();
        let planes = match catalog_flag.get(&lower) {
            Some(&plane) => [Some(plane), None],
            None => [Some(data), Some(!data)],
        };
        for data in planes.into_iter().flatten() {
            if seen.insert((lower.clone(), data)) {
                out.push((Box::<str>::from(name), data));
            }
        }
    };
    for c in catalog {
        add(&c.name, c.data_action);
    }
    for c in catalog {
        for i in c.implies.iter() {
            add(
                i,
                catalog_flag
                    .get(&i.to_ascii_lowercase())
                    .copied()
                    .unwrap_or(c.data_action),
            );
        }
    }
    for (_, d) in docs {
        for r in &d.roles {
            r.actions
                .iter()
                .chain(&r.not_actions)
                .for_each(|a| add(a, false));
            r.data_actions
                .iter()
                .chain(&r.not_data_actions)
                .for_each(|a| add(a, true));
        }
        for x in &d.deny_assignments {
            x.actions
                .iter()
                .chain(&x.not_actions)
                .for_each(|a| add(a, false));
            x.data_actions
                .iter()
                .chain(&x.not_data_actions)
                .for_each(|a| add(a, true));
        }
    }
    add(assign_action, false);
    for (a, data) in routes.literal_actions() {
        add(a, data);
    }
    // Sorted (in any case, control plane first), so every list drawn from the universe
    // (ListPermissions, CheckAssign's missing actions) comes out sorted.
    out.sort_by_cached_key(|(name, data)| (name.to_ascii_lowercase(), *data));
    out
}

/// The object name of an assignment in problems: `assignments[i] (id `…`)`.
fn assignment_object(i: usize, a: &AssignmentDoc) -> String {
    match &a.id {
        Some(id) => format!("assignments[{i}] (id `{}`)", escape(id)),
        None => format!(
            "assignments[{i}] (`{}` as `{}`)",
            escape(&a.principal),
            escape(&a.role)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<(String, Document)> {
        let doc = SourceDocument::new("p.yaml", yaml).parse().unwrap();
        vec![("p.yaml".into(), doc)]
    }

    const POLICY: &str = r#"
version: 1
roles:
  - name: Reader
    actions: [a/b/read]
assignments:
  - { principal: "user:ana", role: Reader, scope: /x }
  - { principal: "user:bo", role: Reader, scope: /y }
  - { principal: "user:cy", role: Reader, scope: /z }
"#;

    #[test]
    fn a_count_over_the_limit_is_a_problem_naming_it_and_the_limit() {
        let docs = docs(POLICY);
        assert!(compile_within(&docs, 4).is_ok());
        let err = compile_within(&docs, 2).unwrap_err();
        let messages: Vec<&str> = err.problems.iter().map(|p| p.message.as_str()).collect();
        // Three assignments, and four scope mentions (the role's default `/` and three).
        assert_eq!(
            messages,
            [
                "3 assignments exceed the limit of 2 per policy",
                "3 principal mentions exceed the limit of 2 per policy",
                "4 scope mentions exceed the limit of 2 per policy",
            ]
        );
        assert_eq!(err.problems[0].object, "policy");
    }

    const PHASES: &str = r#"
version: 1
actions:
  - name: a/b/read
    implies: [a/b/list, a/b/peek]
  - name: a/b/list
roles:
  - name: Reader
    actions: [a/b/read]
  - name: Lister
    actions: [a/b/list]
    assignableScopes: [/apps]
groups:
  - id: "group:outer"
    members: ["group:inner"]
  - id: "group:inner"
    members: ["user:ana"]
scopeLinks:
  - scope: /sites/one
    parents: [/apps/fleet]
assignments:
  - { id: r1, principal: "user:bo", role: Reader, scope: /apps/fleet }
  - { id: r2, principal: "user:ana", role: Lister, scope: /sites/one }
  - { id: r3, principal: "user:cy", role: Lister, scope: /other }
  - { id: r4, principal: "user:cy", role: Nobody, scope: /apps }
constraints:
  - minAssignments: { role: Lister, scope: /sites/one, count: 1 }
  - minAssignments: { role: Lister, scope: /other, count: 1 }
"#;

    /// Runs the phases up to the checks, keeping what each returned.
    fn phases(yaml: &str) -> (Compiler<'static>, Declared, Closures, Vec<Constraint>) {
        let docs: &'static [(String, Document)] = Box::leak(docs(yaml).into_boxed_slice());
        let mut c = Compiler::new(docs);
        let declared = c.declare();
        let closures = c.close(&declared);
        let constraints = c.check(&declared, &closures);
        (c, declared, closures, constraints)
    }

    fn principal(c: &Compiler<'_>, name: &str) -> PrincipalIdx {
        c.principals.index[name]
    }

    fn scope(c: &Compiler<'_>, key: &str) -> ScopeIdx {
        c.scopes.index[key]
    }

    #[test]
    fn declaring_numbers_group_principals_first_and_drops_bad_assignments() {
        let (c, declared, _, _) = phases(PHASES);
        // The three principals named by group definitions come first.
        assert_eq!(declared.group_principals, 3);
        assert!(principal(&c, "user:ana").get() < 3);
        assert!(principal(&c, "user:bo").get() >= 3);
        // r4 names an undefined role: reported, and not pending.
        let pending = &declared.assignments.pending;
        assert_eq!(pending.len(), 3);
        assert!(c.problems.0.iter().any(|p| p.message.contains("`Nobody`")));
        // Reader grants a/b/read, which implies a/b/list and a/b/peek (outside the
        // catalog): both of its implied actions, and nothing else.
        let reader = &declared.roles.roles[declared.roles.lookup["reader"].index()];
        assert!(reader.grants("a/b/list", false));
        assert!(reader.grants("a/b/peek", false));
        assert!(!reader.grants("a/b/poke", false));
        assert!(!declared.roles.roles[1].grants("a/b/read", false));
    }

    #[test]
    fn closing_gives_transitive_groups_and_linked_ancestors() {
        let (c, _, closures, _) = phases(PHASES);
        let ana = principal(&c, "user:ana");
        let groups: Vec<u32> = closures.member_of.row(ana).to_vec();
        let mut want = vec![
            principal(&c, "group:inner").get(),
            principal(&c, "group:outer").get(),
        ];
        want.sort_unstable();
        assert_eq!(groups, want);
        let one = scope(&c, "/sites/one");
        let row = closures.ancestors.row(one);
        // Known scopes only: `/sites` is named nowhere.
        assert!(!c.scopes.index.contains_key("/sites"));
        for s in ["/", "/sites/one", "/apps", "/apps/fleet"] {
            assert!(row.contains(&scope(&c, s)), "{s}");
        }
        assert!(!row.contains(&scope(&c, "/other")));
        assert_eq!(closures.linked_scopes, [one]);
        assert!(!closures.unsure(one));
    }

    #[test]
    fn checking_rejects_unassignable_scopes_and_counts_constraints_without_them() {
        let (c, _, _, constraints) = phases(PHASES);
        let messages: Vec<&str> = c.problems.0.iter().map(|p| p.message.as_str()).collect();
        // r3: Lister at /other, outside /apps.
        assert!(
            messages
                .iter()
                .any(|m| m.contains("`/other` is outside the assignable scopes")),
            "{messages:?}"
        );
        // r3 is rejected, so it does not count for the constraint at /other.
        assert!(
            messages
                .iter()
                .any(|m| m.contains("at `/other` or above, found 0")),
            "{messages:?}"
        );
        // r2 counts for the constraint at its own scope.
        assert_eq!(constraints.len(), 1);
        assert_eq!((constraints[0].count, constraints[0].found), (1, 1));
    }

    #[test]
    fn the_layout_keeps_every_name_and_count() {
        let fixed = PHASES.replace("scope: /other", "scope: /apps").replace(
            "  - { id: r4, principal: \"user:cy\", role: Nobody, scope: /apps }\n",
            "",
        );
        let snapshot = compile_within(&docs(&fixed), MAX_ITEMS).unwrap();
        let c = snapshot.counts;
        assert_eq!(
            [
                c.roles,
                c.assignments,
                c.groups,
                c.principals,
                c.catalog_actions
            ],
            [2, 3, 2, 5, 2]
        );
        for (p, name) in [
            "group:outer",
            "group:inner",
            "user:ana",
            "user:bo",
            "user:cy",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(snapshot.principal_name(PrincipalIdx::at(p)), *name);
        }
        let ids: Vec<&str> = (0..3).filter_map(|i| snapshot.assignment_id(i)).collect();
        // Grouped by principal: ana (r2), bo (r1), cy (r3).
        assert_eq!(ids, ["r2", "r1", "r3"]);
        assert_eq!(snapshot.assignment_scope(1), "/apps/fleet");
    }

    /// `Snapshot::from_resolved` on its own, after the phases: every name and count is
    /// kept, and each principal's row holds exactly its own assignments, in policy order.
    #[test]
    fn from_resolved_lays_out_rows_by_principal_in_policy_order() {
        let fixed = PHASES.replace("scope: /other", "scope: /apps").replace(
            "  - { id: r4, principal: \"user:cy\", role: Nobody, scope: /apps }\n",
            "",
        );
        let (c, declared, closures, constraints) = phases(&fixed);
        let resolved = c.finish(declared, closures, constraints).unwrap();
        let names = resolved.principal_names.clone();
        let scopes = resolved.scopes.len();
        let assignments = resolved.assignments.pending.len();
        let snapshot = Snapshot::from_resolved(resolved);
        assert_eq!(snapshot.counts.principals, names.len());
        assert_eq!(snapshot.counts.scopes, scopes);
        assert_eq!(snapshot.counts.assignments, assignments);
        let mut seen = 0;
        for (p, name) in names.iter().enumerate() {
            let p = PrincipalIdx::at(p);
            assert_eq!(snapshot.principal_name(p), &**name);
            let [start, end] = snapshot.assignment_row(p);
            let orders: Vec<u32> = (start..end)
                .inspect(|&i| assert_eq!(snapshot.assignments.principal(i), p))
                .map(|i| snapshot.assignments.order(i))
                .collect();
            assert!(orders.is_sorted(), "{name}: {orders:?}");
            seen += end - start;
        }
        assert_eq!(seen as usize, assignments);
    }

    #[test]
    fn close_over_gives_ancestors_cycles_and_depth() {
        // 0 -> 1 -> 2; 3 -> 4 -> 3 (a cycle); 5 -> 3 (below it).
        let parents = vec![vec![1], vec![2], vec![], vec![4], vec![3], vec![3]];
        let closed = close_over(&parents, usize::MAX, |_| 0);
        assert_eq!(closed.rows.row(0u32), [1, 2]);
        assert_eq!(closed.rows.row(1u32), [2]);
        assert!(closed.rows.row(2u32).is_empty());
        assert_eq!(closed.cyclic, [false, false, false, true, true, true]);
        let cycles: Vec<(u32, u32, usize)> = closed
            .faults
            .iter()
            .filter_map(|f| match f {
                Fault::Cycle { edge, len, .. } => Some((edge.0, edge.1, *len)),
                Fault::TooDeep { .. } => None,
            })
            .collect();
        assert_eq!(cycles, [(4, 3, 2)]);
        // Depth 2 allowed, so node 0 (depth 2) is fine, and with 1, it is too deep once.
        assert!(close_over(&parents[..3], 2, |_| 0).faults.is_empty());
        let deep = close_over(&parents[..3], 1, |_| 0);
        assert!(matches!(
            deep.faults.as_slice(),
            [Fault::TooDeep { node: 0, parent: 1 }]
        ));
        assert!(deep.rows.row(0u32).is_empty());
    }
}
