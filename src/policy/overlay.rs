//! The incremental path of the store (SPEC §9 "applies each change without recompiling
//! the whole policy").
//!
//! A store policy is a *base* snapshot, compiled in full, plus an [`Overlay`]: the role
//! assignments changed since (created, deleted or rewritten) when nothing else changed.
//! The base is never modified; a batch of assignment writes makes a new overlay over the
//! same base (from every assignment changed since the base, so its cost is the overlay's
//! size, never the policy's), and a new [`Snapshot`] that shares the base's data.
//!
//! Architecture invariant: a snapshot with an overlay answers Check exactly as a fresh
//! compile of the same documents does, decision and reason. The reason names, of the
//! subjects holding a grant, the one a fresh compile numbers first, and of its grants the
//! first in policy order; both orders are reproduced here:
//! - policy order: a store assignment's place is its key's place among the store's keys
//!   (the store document lists them in key order, after the files), so an added
//!   assignment sorts between the base assignments around its key ([`OrderKey`]);
//! - principal numbering: principals named by group definitions come first (unchanged by
//!   assignment writes); every other principal is numbered by its first assignment in
//!   policy order, which writes can move: the overlay keeps the first live assignment of
//!   each principal it touches.
//!
//! A new scope (not in the base) is an ancestor of a request's scope when it is a path
//! prefix of it, or a path prefix of one of the base ancestors reached through
//! `scopeLinks` ([`Overlay::extra_ancestors`]); a new principal has no groups (a group
//! member is named by the group's definition, so it is in the base).
//!
//! Everything but Check (and the verdicts, validity windows and CheckAssign built on it)
//! answers from the full policy of the same state ([`Snapshot::full`]), compiled on first
//! use by whoever made the overlay.

use std::sync::{Arc, OnceLock};

use smallvec::SmallVec;

use super::document::AssignmentDoc;
use super::index::MAX_ITEMS;
use super::snapshot::{
    ActionRef, CheckRequest, FastMap, LowerBuf, PrincipalIdx, Reason, RequestError, RoleIdx,
    ScopeIdx, Snapshot, Subjects, TagIndex, Verdict, lower_into, pos,
};
use super::syntax::{self, Instant, Scope, parse_time, scope_key_prefixes};

/// A place in policy order comparable between base and overlay assignments: the base
/// assignment of order `n` is `(n + 1) << 32`; an added one between base orders `n - 1` and
/// `n` is `n << 32 | rank`, its rank (from 1) among the added ones there in key order.
pub(crate) type OrderKey = u64;

fn base_key(order: u32) -> OrderKey {
    (u64::from(order) + 1) << 32
}

/// Compiles the full policy of an overlay's state, for the queries that do not read the
/// overlay; `None` when it cannot.
pub type FullPolicy = Arc<dyn Fn() -> Option<Snapshot> + Send + Sync>;

/// An assignment added by the overlay.
#[derive(Debug, Clone)]
struct Added {
    /// A base principal, or `principal_count + n` for the overlay's new principal `n`.
    principal: PrincipalIdx,
    role: RoleIdx,
    /// A base scope, or `scope_count + n` for the overlay's new scope `n`.
    scope: ScopeIdx,
    window: (Instant, Instant),
    order: OrderKey,
    /// The assignment's id followed by its scope as the assignment spells it: one
    /// allocation, shared (not copied) by the overlays laid over this one.
    text: Arc<str>,
    /// Where the id ends in `text`.
    id_len: u32,
}

impl Added {
    fn id(&self) -> &str {
        self.text.get(..self.id_len as usize).unwrap_or_default()
    }

    /// The scope as the assignment spells it.
    fn written(&self) -> &str {
        self.text.get(self.id_len as usize..).unwrap_or_default()
    }
}

/// The assignment changes over a base snapshot.
pub(crate) struct Overlay {
    /// Base assignments removed (positions, sorted).
    removed: Vec<u32>,
    /// Added assignments, grouped by principal, each principal's in policy order.
    added: Vec<Added>,
    /// Each principal with added assignments: its span in `added`.
    rows: FastMap<PrincipalIdx, [u32; 2]>,
    /// Principals with removed or added assignments: the order key of their first live
    /// assignment (`u64::MAX`: none left).
    first: FastMap<PrincipalIdx, OrderKey>,
    /// Principals the base does not know, by id (numbered from the base's count).
    new_principals: FastMap<Arc<str>, PrincipalIdx>,
    new_principal_names: Vec<Arc<str>>,
    /// Scopes the base does not know: lowercase keys, indexed (numbered from the base's
    /// count).
    new_scope_keys: Vec<Arc<str>>,
    new_scope_text: String,
    new_scope_index: TagIndex,
    /// New scopes that are path prefixes of base scopes reached through `scopeLinks`,
    /// each with those base scopes (sorted).
    linked_prefixes: Vec<(ScopeIdx, Box<[ScopeIdx]>)>,
    /// Every `notBefore` / `notAfter` of the added assignments, sorted.
    boundaries: Vec<Instant>,
    base_assignments: u32,
    base_principals: u32,
    base_scopes: u32,
    full: OnceLock<Snapshot>,
    building: std::sync::Mutex<()>,
    make_full: Option<FullPolicy>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("removed", &self.removed.len())
            .field("added", &self.added.len())
            .finish_non_exhaustive()
    }
}

/// A base snapshot prepared for overlays: made once per base, off the request path.
#[derive(Debug)]
pub struct OverlayBase {
    snapshot: Snapshot,
    /// Positions of the assignments by policy order.
    by_order: Vec<u32>,
    /// The policy order of the first assignment of the last document (the store's).
    store_first: u32,
    /// The ids of the other documents' assignments.
    other_ids: FastMap<Box<str>, ()>,
    /// Base scopes reached from a linked scope (its ancestors), sorted.
    linked_reach: Vec<ScopeIdx>,
}

/// Why a change cannot be applied as an overlay: the caller compiles in full instead
/// (which also words the problem exactly as a fresh compile does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotIncremental(pub String);

impl OverlayBase {
    /// Prepares `snapshot` (compiled in full, no overlay) whose last document holds
    /// `last_document_assignments` assignments, in key (id) order.
    pub fn new(snapshot: &Snapshot, last_document_assignments: usize) -> Self {
        let total = snapshot.assignments.len();
        let mut by_order = vec![0u32; total];
        for (at, &order) in snapshot.assignments.all_orders().iter().enumerate() {
            if let Some(slot) = by_order.get_mut(order as usize) {
                *slot = pos(at);
            }
        }
        let store_first = pos(total.saturating_sub(last_document_assignments));
        let other_ids = by_order
            .get(..store_first as usize)
            .unwrap_or_default()
            .iter()
            .filter_map(|&pos| snapshot.assignment_id(pos))
            .map(|id| (Box::from(id), ()))
            .collect();
        let mut linked_reach: Vec<ScopeIdx> = snapshot
            .linked_scopes
            .iter()
            .flat_map(|&l| snapshot.ancestors.row(l).iter().copied())
            .collect();
        linked_reach.sort_unstable();
        linked_reach.dedup();
        Self {
            snapshot: snapshot.share(),
            by_order,
            store_first,
            other_ids,
            linked_reach,
        }
    }

    /// The base snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// What `previous`, if it is an overlay over this base, found for each change it held.
    fn reuse_of<'p>(&self, previous: Option<&'p Snapshot>) -> Option<Reuse<'p>> {
        let previous = previous?;
        let overlay = previous.overlay.as_deref()?;
        if !Arc::ptr_eq(&previous.core, &self.snapshot.core) {
            return None;
        }
        let mut by_id: FastMap<&'p str, Known<'p>> = FastMap::default();
        by_id.reserve(overlay.removed.len() + overlay.added.len());
        for &at in &overlay.removed {
            // The base's assignment (the same base: `previous` reads through to it).
            if let Some(id) = previous.assignment_id(at) {
                by_id.entry(id).or_default().removed = Some(at);
            }
        }
        for a in &overlay.added {
            by_id.entry(a.id()).or_default().added = Some(a);
        }
        Some(Reuse { overlay, by_id })
    }

    /// Where the store assignment `id` falls among the base's store assignments: how many
    /// have a smaller id, and its position when the base has it.
    fn place(&self, id: &str) -> (u32, Option<u32>) {
        let store = self
            .by_order
            .get(self.store_first as usize..)
            .unwrap_or_default();
        let id_at = |pos: u32| self.snapshot.assignment_id(pos).unwrap_or_default();
        let below = store.partition_point(|&pos| id_at(pos) < id);
        let found = store.get(below).copied().filter(|&pos| id_at(pos) == id);
        (pos(below), found)
    }

    /// The policy of the base with `changes` (every store assignment changed since the
    /// base, by id in key order: its value now, `None` if deleted) applied, validated by the rules
    /// that can fail for assignment changes (SPEC §2): principal, role, scope, times, ids,
    /// assignable scopes and `minAssignments`. `make_full` compiles the same state in
    /// full, for the other queries.
    pub fn apply<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, Option<&'a AssignmentDoc>)>,
        make_full: Option<FullPolicy>,
    ) -> Result<Snapshot, NotIncremental> {
        let changes = changes
            .into_iter()
            .map(|(id, value)| (id, move || Ok(value)));
        self.apply_over(None, |_| true, changes, make_full)
    }

    /// [`Self::apply`], reusing what `previous` (an overlay over this same base, made from
    /// the same changes but those `fresh` says changed since) found for each change it
    /// held: its base position, role, scope, principal and times, so that only the fresh
    /// changes are looked up in the base again. A write then costs the changes it makes,
    /// plus copying the overlay's tables, rather than every change since the base looked
    /// up again; the result is the same snapshot `apply` makes. A `previous` that is not an
    /// overlay over this base is ignored. Each change comes with a way to read its value
    /// (an error refuses the batch), called only for the changes looked up again.
    pub fn apply_over<'a, V>(
        &self,
        previous: Option<&Snapshot>,
        fresh: impl Fn(&str) -> bool,
        changes: impl IntoIterator<Item = (&'a str, V)>,
        make_full: Option<FullPolicy>,
    ) -> Result<Snapshot, NotIncremental>
    where
        V: FnOnce() -> Result<Option<&'a AssignmentDoc>, NotIncremental>,
    {
        let base = &self.snapshot;
        let principal_count = pos(base.principal_count());
        let scope_count = pos(base.scopes.len());
        let Gathered {
            mut removed,
            mut added,
            new_principals,
            new_principal_names,
            new_scope_keys,
        } = self.gather(self.reuse_of(previous), fresh, changes)?;
        removed.sort_unstable();
        added.sort_by_key(|a| (a.principal, a.order));
        let mut rows: FastMap<PrincipalIdx, [u32; 2]> = FastMap::default();
        if base.assignments.len() + added.len() > MAX_ITEMS {
            return Err(NotIncremental(format!("more than {MAX_ITEMS} assignments")));
        }
        for (i, a) in added.iter().enumerate() {
            let i = pos(i);
            rows.entry(a.principal)
                .and_modify(|r| r[1] = i + 1)
                .or_insert([i, i + 1]);
        }
        let (new_scope_text, new_scope_index, linked_prefixes) =
            self.lay_out_new_scopes(&new_scope_keys)?;
        let mut boundaries: Vec<Instant> = added
            .iter()
            .flat_map(|a| [a.window.0, a.window.1])
            .filter(|&t| t != Instant::MIN && t != Instant::MAX)
            .collect();
        boundaries.sort_unstable();
        boundaries.dedup();
        let mut overlay = Overlay {
            removed,
            added,
            rows,
            first: FastMap::default(),
            new_principals,
            new_principal_names,
            new_scope_keys,
            new_scope_text,
            new_scope_index,
            linked_prefixes,
            boundaries,
            base_assignments: pos(base.assignments.len()),
            base_principals: principal_count,
            base_scopes: scope_count,
            full: OnceLock::new(),
            building: std::sync::Mutex::new(()),
            make_full,
        };
        overlay.first = overlay.firsts(base);
        overlay.check_constraints(base)?;
        let mut counts = base.counts;
        counts.assignments = base.assignments.len() - overlay.removed.len() + overlay.added.len();
        counts.principals += overlay.new_principal_names.len();
        counts.scopes += overlay.new_scope_keys.len();
        Ok(Snapshot {
            revision: base.revision.clone(),
            counts,
            core: base.core.clone(),
            overlay: Some(Arc::new(overlay)),
        })
    }

    /// The changes read and checked one by one against the base (see [`Self::apply`]):
    /// the base positions removed, the assignments added, and the principals and scopes
    /// the base does not know. A change `reuse` knows (and `fresh` does not name) is taken
    /// from it, numbered again; the others are looked up in the base.
    fn gather<'a, V>(
        &self,
        reuse: Option<Reuse<'_>>,
        fresh: impl Fn(&str) -> bool,
        changes: impl IntoIterator<Item = (&'a str, V)>,
    ) -> Result<Gathered, NotIncremental>
    where
        V: FnOnce() -> Result<Option<&'a AssignmentDoc>, NotIncremental>,
    {
        let base = &self.snapshot;
        let mut counted = Newcomers {
            principals: Numbering::new(base.principal_count(), PrincipalIdx::at, "principals"),
            scopes: Numbering::new(base.scopes.len(), ScopeIdx::at, "scopes"),
        };
        let mut removed = Vec::new();
        let mut added: Vec<Added> = Vec::new();
        let mut gap = Gap::default();
        let mut buf = LowerBuf::new();
        let mut previous: Option<&str> = None;
        for (id, value) in changes {
            if previous.is_some_and(|p| p >= id) {
                return Err(NotIncremental("changes out of key order".into()));
            }
            previous = Some(id);
            let refuse =
                |why: String| NotIncremental(format!("assignment `{}`: {why}", syntax::escape(id)));
            let known = reuse
                .as_ref()
                .filter(|_| !fresh(id))
                .and_then(|r| r.by_id.get(id).map(|k| (r, k)));
            if let Some((r, known)) = known {
                removed.extend(known.removed);
                if let Some(prev) = known.added {
                    added.push(r.renumber(prev, &mut counted, &mut gap).map_err(refuse)?);
                }
                continue;
            }
            let value = value()?;
            let (below, found) = self.place(id);
            if let Some(pos) = found {
                removed.push(pos);
            }
            if let Some(a) = value {
                let g = self.store_first.saturating_add(below);
                let new = self
                    .prepare(id, a, &mut counted, &mut buf)
                    .map_err(refuse)?;
                added.push(Added {
                    order: gap.next(g),
                    ..new
                });
            }
        }
        Ok(Gathered {
            removed,
            added,
            new_principals: counted.principals.by_name,
            new_principal_names: counted.principals.names,
            new_scope_keys: counted.scopes.names,
        })
    }

    /// One written assignment checked against the base and numbered (its order is left
    /// for the caller): the rules that can fail for an assignment change (SPEC §2).
    fn prepare(
        &self,
        id: &str,
        a: &AssignmentDoc,
        counted: &mut Newcomers,
        buf: &mut LowerBuf,
    ) -> Result<Added, String> {
        let base = &self.snapshot;
        if a.id.as_deref() != Some(id) {
            return Err("the id is not its key's".into());
        }
        if self.other_ids.contains_key(id) {
            return Err("the id is defined twice".into());
        }
        if let Err(e) = syntax::principal_type(&a.principal) {
            return Err(format!("principal: {e}"));
        }
        let Some(&role) = base.role_lookup.get(lower_into(&a.role, buf)) else {
            return Err("unknown role".into());
        };
        let scope = Scope::parse(&a.scope).map_err(|e| format!("scope: {e}"))?;
        let time = |value: &Option<String>, default: Instant| match value {
            None => Ok(default),
            Some(t) => parse_time(t),
        };
        let (not_before, not_after) = match (
            time(&a.not_before, Instant::MIN),
            time(&a.not_after, Instant::MAX),
        ) {
            (Ok(nb), Ok(na)) if na >= nb => (nb, na),
            _ => return Err("bad times".into()),
        };
        let role_def = &base.roles[role.index()];
        let ancestors = base.ancestors_of(scope.key());
        if !role_def
            .assignable_scopes
            .iter()
            .any(|s| ancestors.binary_search(s).is_ok())
        {
            return Err("outside the role's assignable scopes".into());
        }
        let scope_idx = match base
            .scope_index
            .get(scope.key().as_bytes(), &base.scope_text)
        {
            Some(s) => ScopeIdx::new(s),
            None => counted
                .scopes
                .number(scope.key(), || Arc::from(scope.key()))?,
        };
        let principal = match base.principal_slot(&a.principal) {
            Some(slot) => slot.principal(),
            None => counted
                .principals
                .number(&a.principal, || Arc::from(a.principal.as_str()))?,
        };
        Ok(Added {
            principal,
            role,
            scope: scope_idx,
            window: (not_before, not_after),
            order: 0,
            text: [id, a.scope.as_str()].concat().into(),
            id_len: pos(id.len()),
        })
    }

    /// The overlay's new scopes laid out: their text, its index, and those that prefix a
    /// base scope reached through links.
    #[allow(clippy::type_complexity)]
    fn lay_out_new_scopes(
        &self,
        new_scope_keys: &[Arc<str>],
    ) -> Result<(String, TagIndex, Vec<(ScopeIdx, Box<[ScopeIdx]>)>), NotIncremental> {
        let base = &self.snapshot;
        let scope_count = pos(base.scopes.len());
        let mut new_scope_text = String::new();
        let mut spans = Vec::with_capacity(new_scope_keys.len());
        for key in new_scope_keys {
            let start = new_scope_text.len();
            new_scope_text.push_str(key);
            if base.scope_text.len() + new_scope_text.len() > u32::MAX as usize {
                return Err(NotIncremental("scopes exceed 4 GiB in total".into()));
            }
            spans.push((pos(start), pos(new_scope_text.len())));
        }
        let new_scope_index = TagIndex::build(&new_scope_text, spans.into_iter());
        let mut linked_prefixes = Vec::new();
        for (n, key) in new_scope_keys.iter().enumerate() {
            let below: Box<[ScopeIdx]> = self
                .linked_reach
                .iter()
                .copied()
                .filter(|&b| is_path_prefix(key, base.scopes[b.index()].key()))
                .collect();
            if !below.is_empty() {
                linked_prefixes.push((ScopeIdx::at(scope_count as usize + n), below));
            }
        }
        Ok((new_scope_text, new_scope_index, linked_prefixes))
    }
}

impl Overlay {
    /// The first live assignment (by policy order) of every principal the overlay
    /// touches.
    fn firsts(&self, base: &Snapshot) -> FastMap<PrincipalIdx, OrderKey> {
        let overlay = self;
        let principal_count = self.base_principals;
        let mut first_of = FastMap::default();
        let mut touched: Vec<PrincipalIdx> = overlay
            .removed
            .iter()
            .map(|&at| base.assignments.principal(at))
            .chain(overlay.added.iter().map(|a| a.principal))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for p in touched {
            let in_base = if p.get() < principal_count {
                // The row's removed positions, in order: found once, then walked along.
                let [start, end] = base.assignment_row(p);
                let from = overlay.removed.partition_point(|&r| r < start);
                let mut gone = overlay
                    .removed
                    .get(from..)
                    .unwrap_or_default()
                    .iter()
                    .peekable();
                (start..end)
                    .filter(|&i| gone.next_if_eq(&&i).is_none())
                    .map(|i| base_key(base.assignments.order(i)))
                    .min()
            } else {
                None
            };
            let in_overlay = overlay
                .rows
                .get(&p)
                .and_then(|&[s, _]| overlay.added.get(s as usize))
                .map(|a| a.order);
            let first = in_base
                .into_iter()
                .chain(in_overlay)
                .min()
                .unwrap_or(u64::MAX);
            first_of.insert(p, first);
        }
        first_of
    }

    /// `minAssignments`, counted again for the assignments removed and added.
    fn check_constraints(&self, base: &Snapshot) -> Result<(), NotIncremental> {
        let overlay = self;
        let scope_count = self.base_scopes;
        for c in &base.constraints {
            let row = base.ancestors.row(c.scope);
            let counts = |role: RoleIdx, scope: ScopeIdx, window: (Instant, Instant)| {
                role == c.role
                    && window.0 < window.1
                    && (row.binary_search(&scope).is_ok()
                        || (scope.get() >= scope_count
                            && overlay.new_scope_in(base, scope, c.scope, row)))
            };
            let gone = overlay
                .removed
                .iter()
                .filter(|&&pos| {
                    let a = base.assignments.record(pos);
                    let scope = base.assignments.scope(pos);
                    counts(a.role, scope, base.windows[a.window as usize])
                })
                .count();
            let new = overlay
                .added
                .iter()
                .filter(|a| counts(a.role, a.scope, a.window))
                .count();
            let found = (c.found as usize + new).saturating_sub(gone);
            if found < c.count as usize {
                return Err(NotIncremental(format!(
                    "{}: {}: too few assignments",
                    c.doc, c.object
                )));
            }
        }
        Ok(())
    }
}

/// What an earlier overlay over the same base found for the changes it held, by id.
struct Reuse<'p> {
    overlay: &'p Overlay,
    by_id: FastMap<&'p str, Known<'p>>,
}

/// What an earlier overlay found for one change: the base assignment it removed, and the
/// assignment it added.
#[derive(Default, Clone, Copy)]
struct Known<'p> {
    removed: Option<u32>,
    added: Option<&'p Added>,
}

impl Reuse<'_> {
    /// `prev`, added by the earlier overlay, numbered for this one: its new principal or
    /// scope (if the base does not know it) numbered again, and its rank in its gap
    /// between base orders counted again, as other changes may have joined the gap.
    fn renumber(
        &self,
        prev: &Added,
        counted: &mut Newcomers,
        gap: &mut Gap,
    ) -> Result<Added, String> {
        let overlay = self.overlay;
        let scope = match prev.scope.get().checked_sub(overlay.base_scopes) {
            None => prev.scope,
            Some(n) => counted.scopes.again(&overlay.new_scope_keys, n)?,
        };
        let principal = match prev.principal.get().checked_sub(overlay.base_principals) {
            None => prev.principal,
            Some(n) => counted.principals.again(&overlay.new_principal_names, n)?,
        };
        Ok(Added {
            principal,
            scope,
            order: gap.next((prev.order >> 32) as u32),
            ..prev.clone()
        })
    }
}

/// The principals and scopes a batch of changes names that the base does not know.
struct Newcomers {
    principals: Numbering<PrincipalIdx>,
    scopes: Numbering<ScopeIdx>,
}

/// Names the base does not know (principals, or scope keys), numbered from the base's
/// count in the order first met.
struct Numbering<I> {
    /// The base's count: the first new name's number.
    base: usize,
    /// Makes an index of a number.
    index: fn(usize) -> I,
    /// What is numbered, for the error past the limit.
    what: &'static str,
    by_name: FastMap<Arc<str>, I>,
    names: Vec<Arc<str>>,
}

impl<I: Copy> Numbering<I> {
    fn new(base: usize, index: fn(usize) -> I, what: &'static str) -> Self {
        Self {
            base,
            index,
            what,
            by_name: FastMap::default(),
            names: Vec::new(),
        }
    }

    /// The number of `name`, numbered now if not met yet; `shared` makes the text kept
    /// for it (an earlier overlay's, shared rather than copied, when it has one).
    fn number(&mut self, name: &str, shared: impl FnOnce() -> Arc<str>) -> Result<I, String> {
        if let Some(&i) = self.by_name.get(name) {
            return Ok(i);
        }
        let n = self.base + self.names.len();
        if n >= MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} {}", self.what));
        }
        let i = (self.index)(n);
        let name = shared();
        self.by_name.insert(name.clone(), i);
        self.names.push(name);
        Ok(i)
    }

    /// The name an earlier overlay numbered `n` (counted from its base's count), numbered
    /// for this one.
    fn again(&mut self, earlier: &[Arc<str>], n: u32) -> Result<I, String> {
        let name = earlier
            .get(n as usize)
            .ok_or_else(|| format!("an earlier overlay has no new {} {n}", self.what))?;
        self.number(name, || name.clone())
    }
}

/// The gap between base orders the last added assignment fell in, and how many added
/// ones it holds so far (the changes come in key order, so a gap's are consecutive).
struct Gap {
    at: u32,
    rank: u32,
}

impl Default for Gap {
    fn default() -> Self {
        Self {
            at: u32::MAX,
            rank: 0,
        }
    }
}

impl Gap {
    /// The order key of the next added assignment, in gap `g`.
    fn next(&mut self, g: u32) -> OrderKey {
        if self.at == g {
            self.rank += 1;
        } else {
            (self.at, self.rank) = (g, 1);
        }
        (u64::from(g) << 32) | u64::from(self.rank)
    }
}

/// What [`OverlayBase::gather`] found in the changes.
struct Gathered {
    removed: Vec<u32>,
    added: Vec<Added>,
    new_principals: FastMap<Arc<str>, PrincipalIdx>,
    new_principal_names: Vec<Arc<str>>,
    new_scope_keys: Vec<Arc<str>>,
}

/// Whether `prefix` is `key` or a path prefix of it (both lowercase keys).
fn is_path_prefix(prefix: &str, key: &str) -> bool {
    prefix == "/"
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Overlay {
    pub(crate) fn boundaries(&self) -> &[Instant] {
        &self.boundaries
    }

    /// Whether new scope `n` is an ancestor of base scope `t` (whose ancestors are `row`).
    fn new_scope_in(&self, base: &Snapshot, n: ScopeIdx, t: ScopeIdx, row: &[ScopeIdx]) -> bool {
        let Some(key) = self.new_scope_key(n) else {
            return false;
        };
        is_path_prefix(key, base.scopes[t.index()].key())
            || self
                .linked_prefixes
                .iter()
                .find(|(m, _)| *m == n)
                .is_some_and(|(_, below)| below.iter().any(|b| row.binary_search(b).is_ok()))
    }

    /// The lowercase key of new scope `n`.
    fn new_scope_key(&self, n: ScopeIdx) -> Option<&str> {
        let n = n.get().checked_sub(self.base_scopes)?;
        self.new_scope_keys.get(n as usize).map(|k| &**k)
    }

    /// The new scopes that are ancestors of a request's scope (`key`, normalized, any
    /// case), given its base ancestors: its path prefixes, and the path prefixes of base
    /// ancestors reached through `scopeLinks`.
    fn extra_ancestors(&self, key: &[u8], base_row: &[ScopeIdx]) -> SmallVec<[ScopeIdx; 8]> {
        let mut out: SmallVec<[ScopeIdx; 8]> = SmallVec::new();
        if self.new_scope_keys.is_empty() {
            return out;
        }
        for prefix in scope_key_prefixes(key) {
            if let Some(n) = self.new_scope_index.get(prefix, &self.new_scope_text) {
                out.push(ScopeIdx::new(self.base_scopes + n));
            }
        }
        for (n, below) in &self.linked_prefixes {
            if !out.contains(n) && below.iter().any(|b| base_row.binary_search(b).is_ok()) {
                out.push(*n);
            }
        }
        out
    }

    /// A principal the base does not know and the overlay does.
    fn new_principal(&self, name: &str) -> Option<PrincipalIdx> {
        if self.new_principals.is_empty() {
            return None;
        }
        self.new_principals.get(name).copied()
    }

    fn principal_name<'s>(&'s self, base: &'s Snapshot, p: PrincipalIdx) -> &'s str {
        match p.get().checked_sub(self.base_principals) {
            Some(n) => self.new_principal_names.get(n as usize).map_or("", |n| n),
            None => base.principal_name(p),
        }
    }

    /// The reason for a grant by added assignment `i`.
    pub(crate) fn grant_reason<'s>(&'s self, base: &'s Snapshot, i: usize) -> Reason<'s> {
        let Some(a) = self.added.get(i) else {
            return Reason::NoGrant;
        };
        Reason::RoleAssignment {
            role: base.roles.get(a.role.index()).map_or("", |r| &r.name),
            assignment_id: Some(a.id()),
            scope: a.written(),
            via: self.principal_name(base, a.principal),
        }
    }

    /// Whether the principal's assignments changed.
    fn touched(&self, p: PrincipalIdx) -> bool {
        !self.first.is_empty() && self.first.contains_key(&p)
    }

    /// Where a fresh compile would number subject `p` (which holds a grant): group
    /// definitions first, then by first assignment in policy order.
    fn rank(&self, base: &Snapshot, p: PrincipalIdx) -> (u8, OrderKey) {
        if p.get() < base.group_principals {
            return (0, u64::from(p.get()));
        }
        if let Some(&first) = self.first.get(&p) {
            return (1, first);
        }
        let [start, end] = base.assignment_row(p);
        let first = base
            .assignments
            .orders([start, end])
            .iter()
            .min()
            .map_or(u64::MAX, |&o| base_key(o));
        (1, first)
    }

    /// The first grant, in policy order, of subject `p` (base row `row`): its order key
    /// and verdict index (overlay assignments after the base's).
    #[allow(clippy::too_many_arguments)]
    fn first_grant_of(
        &self,
        base: &Snapshot,
        p: PrincipalIdx,
        row: [u32; 2],
        action: ActionRef<'_>,
        ancestors: &[ScopeIdx],
        extra: &[ScopeIdx],
        at: Instant,
    ) -> Option<(OrderKey, u32)> {
        let mut best: Option<(OrderKey, u32)> = None;
        if row[0] < row[1] {
            for group in base.rows_at(row, ancestors) {
                // Within one scope the row is in policy order.
                if let Some(i) = group.into_iter().find(|&i| {
                    self.removed.binary_search(&i).is_err() && base.grants(i, action, at)
                }) {
                    let key = base_key(base.assignments.order(i));
                    if best.is_none_or(|(b, _)| key < b) {
                        best = Some((key, i));
                    }
                }
            }
        }
        if let Some(&[start, end]) = self.rows.get(&p) {
            let found = (start..end).find(|&i| {
                let a = &self.added[i as usize];
                let here = if a.scope.get() < self.base_scopes {
                    ancestors.binary_search(&a.scope).is_ok()
                } else {
                    extra.contains(&a.scope)
                };
                here && a.window.0 <= at
                    && at < a.window.1
                    && action.granted_by(&base.roles, a.role)
            });
            if let Some(i) = found {
                let key = self.added[i as usize].order;
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, self.base_assignments + i));
                }
            }
        }
        best
    }

    /// The grant a fresh compile reports: of the subjects holding one, the first in its
    /// numbering, and of that subject's grants the first in policy order.
    #[allow(clippy::too_many_arguments)]
    fn find_grant(
        &self,
        base: &Snapshot,
        subjects: &Subjects,
        new_subjects: &[PrincipalIdx],
        action: ActionRef<'_>,
        ancestors: &[ScopeIdx],
        extra: &[ScopeIdx],
        at: Instant,
    ) -> Option<u32> {
        if new_subjects.is_empty() && extra.is_empty() && !subjects.iter().any(|&s| self.touched(s))
        {
            // Nothing this request reads changed: the base answers, in its own order.
            return base.find_grant(subjects, action, ancestors, at);
        }
        let mut best: Option<((u8, OrderKey), u32)> = None;
        let rows = subjects.rows();
        let candidates = subjects
            .iter()
            .zip(rows)
            .map(|(&s, &row)| (s, row))
            .chain(new_subjects.iter().map(|&s| (s, [0, 0])));
        for (s, row) in candidates {
            if let Some((_, i)) = self.first_grant_of(base, s, row, action, ancestors, extra, at) {
                let rank = self.rank(base, s);
                if best.is_none_or(|(b, _)| rank < b) {
                    best = Some((rank, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }
}

impl Snapshot {
    /// A snapshot sharing this one's data (cheap: the data is reference counted).
    pub fn share(&self) -> Snapshot {
        Snapshot {
            revision: self.revision.clone(),
            counts: self.counts,
            core: self.core.clone(),
            overlay: self.overlay.clone(),
        }
    }

    /// Whether this snapshot is a base plus an overlay of assignment changes.
    pub fn has_overlay(&self) -> bool {
        self.overlay.is_some()
    }

    /// How many assignment changes the overlay holds (0 without one).
    pub fn overlay_len(&self) -> usize {
        self.overlay
            .as_ref()
            .map_or(0, |o| o.removed.len() + o.added.len())
    }

    /// The heap the overlay holds (its tables and strings, hash tables at their
    /// capacity), for the benchmark's bytes per change; 0 without one.
    pub fn overlay_bytes(&self) -> usize {
        let Some(o) = &self.overlay else {
            return 0;
        };
        let entry = |key: usize, value: usize| key + value + 1;
        o.removed.capacity() * 4
            + o.added.capacity() * std::mem::size_of::<Added>()
            + o.added
                .iter()
                .map(|a| a.text.len() + 16)
                .sum::<usize>()
            + o.rows.capacity() * entry(4, 8)
            + o.first.capacity() * entry(4, 8)
            + o.new_principals.capacity() * entry(16, 4)
            // Each name's text is shared by the map and the list: its bytes and the
            // `Arc`'s two counts once, a pointer in the list.
            + o.new_principal_names
                .iter()
                .map(|n| n.len() + 16 + 16)
                .sum::<usize>()
            + o.new_scope_keys
                .iter()
                .map(|k| k.len() + 16 + 16)
                .sum::<usize>()
            + o.linked_prefixes.capacity() * 24
            + o.boundaries.capacity() * 16
            + std::mem::size_of::<Overlay>()
    }

    /// Gives an overlay made without a way to compile its full policy (the Admin API's
    /// validation makes one) that way, once it is to serve. `false` (nothing changed)
    /// without an overlay, or when the overlay is shared already.
    pub fn set_full_maker(&mut self, make_full: FullPolicy) -> bool {
        match self.overlay.as_mut().and_then(Arc::get_mut) {
            Some(o) => {
                o.make_full = Some(make_full);
                true
            }
            None => false,
        }
    }

    /// The same state compiled in full: this snapshot when it has no overlay; otherwise
    /// compiled on first use (by the overlay's maker) and kept. The queries that do not
    /// read the overlay themselves answer from it.
    pub fn full(&self) -> &Snapshot {
        let Some(o) = &self.overlay else {
            return self;
        };
        if let Some(full) = o.full.get() {
            return full;
        }
        let Some(make) = &o.make_full else {
            return self;
        };
        // Concurrent callers wait for the one compile; a failure is not kept (the next
        // caller tries again) and leaves the base's data to answer.
        let _one_at_a_time = o.building.lock();
        if let Some(full) = o.full.get() {
            return full;
        }
        match make() {
            Some(full) if !full.has_overlay() => {
                let _ = o.full.set(full);
                o.full.get().unwrap_or(self)
            }
            _ => self,
        }
    }

    /// With an overlay, the full policy of the same state when there is one to answer
    /// from (see [`Snapshot::full`]).
    pub(crate) fn full_other(&self) -> Option<&Snapshot> {
        self.overlay.as_ref()?;
        let full = self.full();
        (!std::ptr::eq(full, self)).then_some(full)
    }

    /// Every principal the policy knows, the overlay's new ones included (those whose
    /// last assignment the overlay removed too: they hold no grant).
    pub(crate) fn each_principal_name(&self) -> impl Iterator<Item = &str> {
        let base = (0..self.principal_count()).map(|p| self.principal_name(PrincipalIdx::at(p)));
        let new = self
            .overlay
            .iter()
            .flat_map(|o| o.new_principal_names.iter().map(|n| &**n));
        base.chain(new)
    }

    /// [`Snapshot::decide`] for a snapshot with an overlay: the same steps, over the
    /// base's subjects and ancestors plus the overlay's.
    pub(crate) fn decide_overlay(
        &self,
        o: &Overlay,
        req: &CheckRequest<'_>,
    ) -> Result<Verdict, RequestError> {
        let slot = self.principal_slot(req.principal);
        let new_principal = match slot {
            Some(_) => None,
            None => o.new_principal(req.principal),
        };
        let principal_type = if slot.is_some() || new_principal.is_some() {
            let colon = req.principal.bytes().position(|b| b == b':');
            colon
                .and_then(|colon| req.principal.get(..colon))
                .unwrap_or_default()
        } else {
            syntax::principal_type(req.principal).map_err(RequestError::Principal)?
        };
        for group in req.groups {
            syntax::group_id(group).map_err(RequestError::Group)?;
        }
        let mut action_buf = LowerBuf::new();
        let action = self.request_action(req, &mut action_buf)?;
        let ancestors = self.request_ancestors(req.scope)?;
        let extra = o.extra_ancestors(syntax::trim_scope(req.scope).as_bytes(), ancestors);
        let subjects = if req.groups.is_empty() {
            self.subjects_of(slot)
        } else {
            self.subjects(req.principal, req.groups)
        };
        let mut new_subjects: SmallVec<[PrincipalIdx; 4]> = SmallVec::new();
        if !o.new_principals.is_empty() {
            new_subjects.extend(new_principal);
            for g in req.groups {
                if let Some(p) = o.new_principal(g)
                    && !new_subjects.contains(&p)
                {
                    new_subjects.push(p);
                }
            }
        }
        if let Some(deny) = self.deny_of(&subjects, principal_type, action, ancestors) {
            return Ok(Verdict::Deny { deny });
        }
        Ok(
            match o.find_grant(
                self,
                &subjects,
                &new_subjects,
                action,
                ancestors,
                &extra,
                req.at,
            ) {
                Some(assignment) => Verdict::Grant { assignment },
                None => Verdict::NoGrant,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{SourceDocument, compile_sources};

    fn grant(id: &str, principal: &str) -> AssignmentDoc {
        serde_json::from_str(&format!(
            r#"{{"id":"{id}","principal":"{principal}","role":"R","scope":"/s"}}"#
        ))
        .unwrap()
    }

    /// What an overlay holds: the base positions removed, and each added assignment with
    /// its numbers and order.
    #[allow(clippy::type_complexity)]
    fn held(
        s: &Snapshot,
    ) -> (
        Vec<u32>,
        Vec<(PrincipalIdx, RoleIdx, ScopeIdx, OrderKey, Arc<str>)>,
        Vec<Arc<str>>,
    ) {
        let o = s.overlay.as_deref().unwrap();
        let added = o
            .added
            .iter()
            .map(|a| (a.principal, a.role, a.scope, a.order, a.id().into()))
            .collect();
        (o.removed.clone(), added, o.new_principal_names.clone())
    }

    /// Laid over the last overlay, the next one is the one `apply` makes from every
    /// change: the same removals, and the same assignments added with the same numbers
    /// and orders (a write joining a gap between base assignments moves the ranks of
    /// those already in it, which no decision shows, so the property test cannot).
    #[test]
    fn an_overlay_over_the_last_is_the_one_made_from_every_change() {
        let file = "version: 1\nroles:\n  - {name: R, actions: ['*']}\n";
        let store = "version: 1\nassignments:\n  - {id: a-1, principal: 'user:a', role: R, scope: /s}\n  - {id: a-9, principal: 'user:b', role: R, scope: /s}\n";
        let s = compile_sources(&[
            SourceDocument::new("f.yaml", file),
            SourceDocument::new("s.yaml", store),
        ])
        .unwrap();
        let base = OverlayBase::new(&s, 2);
        let (g3, g5, g7) = (
            grant("a-3", "user:n3"),
            grant("a-5", "user:n5"),
            grant("a-7", "user:n7"),
        );
        // a-5 and a-7 granted between a-1 and a-9, and a-9 revoked; then a-3 granted in
        // the same gap, before them.
        let first = base
            .apply(
                [("a-5", Some(&g5)), ("a-7", Some(&g7)), ("a-9", None)],
                None,
            )
            .unwrap();
        let changes = [
            ("a-3", Some(&g3)),
            ("a-5", Some(&g5)),
            ("a-7", Some(&g7)),
            ("a-9", None),
        ];
        let plain = base.apply(changes, None).unwrap();
        let stacked = base
            .apply_over(
                Some(&first),
                |id| id == "a-3",
                changes.map(|(id, v)| (id, move || Ok(v))),
                None,
            )
            .unwrap();
        assert_eq!(held(&stacked), held(&plain));
        let ranks: Vec<u64> = held(&stacked).1.iter().map(|a| a.3 & 0xffff_ffff).collect();
        assert_eq!(
            ranks,
            [1, 2, 3],
            "a-3, a-5, a-7 in key order within the gap"
        );
        assert_eq!(held(&stacked).0.len(), 1, "a-9 stays revoked");

        // Only what the caller says is fresh is looked up again: a value for a change
        // taken from the last overlay is never read.
        let unread = base
            .apply_over(
                Some(&stacked),
                |_| false,
                changes.map(|(id, v)| {
                    (id, move || -> Result<_, NotIncremental> {
                        let _ = v;
                        Err(NotIncremental("read".into()))
                    })
                }),
                None,
            )
            .unwrap();
        assert_eq!(held(&unread), held(&plain));
    }
}
