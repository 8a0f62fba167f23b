//! The compiled policy and its evaluation (SPEC §3).
//!
//! A [`Snapshot`] is immutable: every lookup structure is built once by
//! [`crate::policy::compile`] and `check` only reads it. Architecture invariant: `check`
//! does no I/O and no heap allocation on its allow/deny path; it borrows names from the
//! snapshot for the reason it returns.

use serde::Serialize;

/// Maps and sets keyed by strings from the policy. foldhash is several times faster than
/// SipHash on the long keys scopes make, and is seeded per process; only lookups (never
/// inserts) ever see request data, so colliding keys cannot degrade them.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use fixedbitset::FixedBitSet;
use smallvec::SmallVec;

use super::assignments::AssignmentTable;
use super::document::TestCaseDoc;
use super::identity::IdentityConfig;
use super::route::RouteTable;
use super::syntax::{self, ActionPattern, Instant, Scope, scope_key_prefixes};

pub(crate) use super::index::{Position, PrincipalIdx, RoleIdx, ScopeIdx, pos};

/// A compiled role definition.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: Box<str>,
    pub id: Option<Box<str>>,
    pub description: Option<Box<str>>,
    pub(crate) actions: Box<[ActionPattern]>,
    pub(crate) not_actions: Box<[ActionPattern]>,
    pub(crate) data_actions: Box<[ActionPattern]>,
    pub(crate) not_data_actions: Box<[ActionPattern]>,
    /// Lowercase actions implied, through the catalog, by actions the role grants.
    pub(crate) implied: ImpliedSet,
    pub(crate) implied_data: ImpliedSet,
    pub(crate) assignable_scopes: Box<[ScopeIdx]>,
}

/// Every action the catalog's `implies` name (lowercase), numbered, shared by the roles of
/// a policy.
#[derive(Debug, Default)]
pub(crate) struct ImpliedActions {
    names: Vec<Box<str>>,
    index: FastMap<Box<str>, u32>,
}

impl ImpliedActions {
    /// The number of `name`, added when new. There are no more names than the catalog's
    /// `implies` entries, which compilation bounds by [`super::index::MAX_ITEMS`].
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = pos(self.names.len());
        self.names.push(name.into());
        self.index.insert(name.into(), i);
        i
    }

    pub fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", |n| n)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// A set of implied actions: one bit per action of the shared [`ImpliedActions`], so that
/// many broad roles over a large catalog cost roles × actions bits, never a set of strings
/// per role.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImpliedSet {
    actions: std::sync::Arc<ImpliedActions>,
    /// Empty (no allocation) for a role that implies nothing.
    bits: FixedBitSet,
}

impl ImpliedSet {
    /// The actions numbered by the set bits of `bits` (one bit per action of `actions`).
    pub fn new(actions: std::sync::Arc<ImpliedActions>, bits: FixedBitSet) -> Self {
        // A role that implies nothing keeps no bits at all.
        let bits = if bits.is_clear() {
            FixedBitSet::new()
        } else {
            bits
        };
        Self { actions, bits }
    }

    /// Whether the (lowercase) action is in the set.
    pub fn contains(&self, lower: &str) -> bool {
        !self.bits.is_empty()
            && self
                .actions
                .index
                .get(lower)
                .is_some_and(|&i| self.bits.contains(i as usize))
    }

    /// The numbers of the actions in the set, in the shared [`ImpliedActions`].
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.ones().map(pos)
    }

    /// The shared table the set numbers its actions in.
    pub fn actions(&self) -> &std::sync::Arc<ImpliedActions> {
        &self.actions
    }
}

impl Role {
    /// Whether the role grants a (lowercase) action by its own patterns only.
    pub(crate) fn grants_directly(&self, lower: &str, data: bool) -> bool {
        let (allow, remove) = if data {
            (&self.data_actions, &self.not_data_actions)
        } else {
            (&self.actions, &self.not_actions)
        };
        allow.iter().any(|p| p.matches_lower(lower))
            && !remove.iter().any(|p| p.matches_lower(lower))
    }

    /// Whether the role grants a (lowercase) action: by its patterns or through `implies`.
    pub(crate) fn grants(&self, lower: &str, data: bool) -> bool {
        self.grants_directly(lower, data)
            || if data {
                self.implied_data.contains(lower)
            } else {
                self.implied.contains(lower)
            }
    }
}

/// A compiled role assignment (16 bytes), one row of the [`AssignmentTable`]: its scope
/// is in the table's key, its time window in [`Core::windows`] and its id in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub role: RoleIdx,
    /// Index into [`Snapshot::windows`]; 0 is "always".
    pub window: u32,
    pub principal: PrincipalIdx,
    /// Where the id ends in the id text; it starts where the previous assignment's ends.
    pub id_end: u32,
}

/// The `[notBefore, notAfter)` window of an assignment. Absent times are `Instant::MIN` /
/// `Instant::MAX`.
pub(crate) type Window = (Instant, Instant);

/// The window of assignments without `notBefore` and `notAfter`, always at index 0.
pub(crate) const ALWAYS: Window = (Instant::MIN, Instant::MAX);

/// Assignment ids as one text (no allocation per id); the caller keeps the offsets.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdText {
    text: String,
    /// Bit `i` set: assignment `i` has no id.
    missing: FixedBitSet,
}

impl IdText {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            missing: FixedBitSet::new(),
        }
    }

    /// Appends the id of assignment `i` (ids are pushed in order) and returns where it
    /// ends; `None` once the text outgrows `u32` offsets.
    pub fn push(&mut self, i: usize, id: Option<&str>) -> Option<u32> {
        if let Some(id) = id {
            self.text.push_str(id);
        } else {
            self.missing.grow_and_insert(i);
        }
        u32::try_from(self.text.len()).ok()
    }

    /// The id of assignment `i`, which spans `start..end` of the text.
    pub fn get(&self, i: usize, start: u32, end: u32) -> Option<&str> {
        if self.missing.contains(i) {
            return None;
        }
        self.text.get(start as usize..end as usize)
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// The bytes the text has room for (a test holds the table's ids to no slack).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.text.capacity()
    }
}

/// Where a principal's id and rows start: in [`Snapshot::principal_text`], in
/// [`Snapshot::member_rows`] and in the assignments. Entry `p + 1` ends those of `p`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PrincipalRows {
    pub name: u32,
    pub groups: u32,
    pub assignments: u32,
}

/// An ASCII-case-insensitive, string-keyed open-addressing index to dense `u32` values
/// whose (lowercase) keys are spans of one text held by the caller. A slot is 16 bytes: a
/// 32-bit hash tag, the value and the span of its key, so a lookup reads one slot and then
/// the key, with no pointer in between. A lookup takes the key in any case and never copies
/// it: the hash ignores case ([`folded_hash`]) and the comparison lowercases eight bytes at
/// a time where the words differ ([`folded_eq`]). Built once from policy keys; lookups
/// never insert, so request data cannot lengthen a probe.
#[derive(Debug, Clone, Default)]
pub(crate) struct TagIndex {
    /// `[tag, value + 1, key start, key end]`; a zero second word is an empty slot. At
    /// most half full.
    slots: Vec<[u32; 4]>,
    /// Per-process random seed of the hash.
    seed: u64,
    /// The length of the longest key: a longer key is answered without being hashed, so
    /// the cost of looking up every prefix of a request's scope (see
    /// [`Snapshot::ancestors_of`]) is bounded by the policy, not by the request.
    longest: usize,
}

impl TagIndex {
    /// Indexes keys given as `text[start..end]` spans: key `i` maps to `i`. The keys must
    /// be distinct.
    pub fn build(text: &str, spans: impl ExactSizeIterator<Item = (u32, u32)>) -> Self {
        let size = (spans.len() * 2).next_power_of_two().max(8);
        let mut index = Self {
            slots: vec![[0; 4]; size],
            seed: {
                use std::hash::BuildHasher;
                foldhash::fast::RandomState::default().hash_one(size)
            },
            longest: 0,
        };
        let mask = size - 1;
        for (value, (start, end)) in spans.enumerate() {
            let key = text
                .as_bytes()
                .get(start as usize..end as usize)
                .unwrap_or_default();
            let (tag, mut i) = index.hash(key, mask);
            while index.slots[i][1] != 0 {
                i = (i + 1) & mask;
            }
            let value = pos(value + 1);
            index.slots[i] = [tag, value, start, end];
            index.longest = index.longest.max(key.len());
        }
        index
    }

    /// The tag and the first slot of a key.
    fn hash(&self, key: &[u8], mask: usize) -> (u32, usize) {
        let h = folded_hash(self.seed, key);
        ((h >> 32) as u32, h as usize & mask)
    }

    /// The value of `key`, whose candidates are compared against `text`.
    pub fn get(&self, key: &[u8], text: &str) -> Option<u32> {
        self.entry(key, text).map(|(value, _)| value)
    }

    /// The value of `key` and where the key is in `text`.
    pub fn entry(&self, key: &[u8], text: &str) -> Option<(u32, std::ops::Range<usize>)> {
        if key.len() > self.longest {
            return None;
        }
        let mask = self.slots.len().checked_sub(1)?;
        let (tag, mut i) = self.hash(key, mask);
        for _ in 0..self.slots.len() {
            let [t, value, start, end] = self.slots[i];
            if value == 0 {
                return None;
            }
            let span = start as usize..end as usize;
            if t == tag
                && text
                    .as_bytes()
                    .get(span.clone())
                    .is_some_and(|lower| folded_eq(key, lower))
            {
                return Some((value - 1, span));
            }
            i = (i + 1) & mask;
        }
        None
    }
}

/// Principal ids up to this many bytes are held in their index slot.
const INLINE_KEY: usize = 32;

/// One slot of a [`PrincipalIndex`]: a cache line holding everything a check needs from
/// the principal before it reads its rows (its group and assignment row bounds, and the
/// id itself when it is short), so finding a principal costs one line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub(crate) struct PrincipalSlot {
    tag: u32,
    /// The principal's index plus one; 0 is an empty slot.
    value: u32,
    /// The span of the principal's groups in [`Snapshot::member_rows`].
    pub groups: [u32; 2],
    /// The span of the principal's assignments.
    pub assignments: [u32; 2],
    key_len: u32,
    /// Where the id starts in the principal text (read only for ids longer than
    /// [`INLINE_KEY`]).
    key_start: u32,
    inline: [u8; INLINE_KEY],
}

impl PrincipalSlot {
    pub fn principal(&self) -> PrincipalIdx {
        PrincipalIdx::new(self.value.wrapping_sub(1))
    }

    /// The principal's id (`text` is the principal text).
    pub fn name<'t>(&'t self, text: &'t str) -> &'t str {
        let len = self.key_len as usize;
        match self.inline.get(..len) {
            Some(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            None => {
                let start = self.key_start as usize;
                text.get(start..start + len).unwrap_or_default()
            }
        }
    }

    fn holds(&self, key: &[u8], text: &str) -> bool {
        if key.len() <= INLINE_KEY {
            self.inline.get(..key.len()) == Some(key)
        } else {
            let start = self.key_start as usize;
            text.as_bytes().get(start..start + key.len()) == Some(key)
        }
    }
}

/// The principal index: open addressing over [`PrincipalSlot`]s (at most half full).
/// Built once from the policy; lookups never insert.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrincipalIndex {
    slots: Vec<PrincipalSlot>,
    hasher: foldhash::fast::RandomState,
}

impl PrincipalIndex {
    /// Indexes the principals of `rows` (one more entry than principals), whose ids are
    /// spans of `text` and rows spans of `member_rows` and the assignments.
    pub fn build(text: &str, rows: &[PrincipalRows]) -> Self {
        let count = rows.len().saturating_sub(1);
        let size = (count * 2).next_power_of_two().max(8);
        let mut index = Self {
            slots: vec![PrincipalSlot::default(); size],
            hasher: foldhash::fast::RandomState::default(),
        };
        let mask = size - 1;
        for (p, w) in rows.windows(2).enumerate() {
            let (a, b) = (w[0], w[1]);
            let key = text
                .get(a.name as usize..b.name as usize)
                .unwrap_or_default();
            let (tag, mut i) = index.hash(key, mask);
            while index.slots[i].value != 0 {
                i = (i + 1) & mask;
            }
            let mut slot = PrincipalSlot {
                tag,
                value: pos(p + 1),
                groups: [a.groups, b.groups],
                assignments: [a.assignments, b.assignments],
                key_len: pos(key.len()),
                key_start: a.name,
                inline: [0; INLINE_KEY],
            };
            if let Some(dst) = slot.inline.get_mut(..key.len()) {
                dst.copy_from_slice(key.as_bytes());
            }
            index.slots[i] = slot;
        }
        index
    }

    fn hash(&self, key: &str, mask: usize) -> (u32, usize) {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        ((h >> 32) as u32, h as usize & mask)
    }

    /// The slot of principal `key`, whose long ids are compared against `text`.
    pub fn get(&self, key: &str, text: &str) -> Option<&PrincipalSlot> {
        let mask = self.slots.len().checked_sub(1)?;
        let (tag, mut i) = self.hash(key, mask);
        for _ in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.value == 0 {
                return None;
            }
            if slot.tag == tag
                && slot.key_len as usize == key.len()
                && slot.holds(key.as_bytes(), text)
            {
                return Some(slot);
            }
            i = (i + 1) & mask;
        }
        None
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Selector {
    Everyone,
    Type(Box<str>),
    Id(PrincipalIdx),
}

impl Selector {
    fn matches(&self, subjects: &[PrincipalIdx], principal_type: &str) -> bool {
        match self {
            Self::Everyone => true,
            Self::Type(t) => **t == *principal_type,
            Self::Id(p) => subjects.binary_search(p).is_ok(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DenyAssignment {
    pub name: Box<str>,
    pub principals: Box<[Selector]>,
    pub exclude: Box<[Selector]>,
    pub actions: Box<[ActionPattern]>,
    pub not_actions: Box<[ActionPattern]>,
    pub data_actions: Box<[ActionPattern]>,
    pub not_data_actions: Box<[ActionPattern]>,
    pub scope: ScopeIdx,
}

impl DenyAssignment {
    pub(crate) fn applies(&self, subjects: &[PrincipalIdx], principal_type: &str) -> bool {
        self.principals
            .iter()
            .any(|s| s.matches(subjects, principal_type))
            && !self
                .exclude
                .iter()
                .any(|s| s.matches(subjects, principal_type))
    }

    pub(crate) fn covers(&self, lower: &str, data: bool) -> bool {
        let (hit, miss) = if data {
            (&self.data_actions, &self.not_data_actions)
        } else {
            (&self.actions, &self.not_actions)
        };
        hit.iter().any(|p| p.matches_lower(lower)) && !miss.iter().any(|p| p.matches_lower(lower))
    }
}

/// An entry of the action catalog.
#[derive(Debug, Clone)]
pub struct CatalogAction {
    pub name: Box<str>,
    pub description: Option<Box<str>>,
    pub data_action: bool,
    pub implies: Box<[Box<str>]>,
}

/// Compressed rows: `items[offsets[i]..offsets[i + 1]]` belongs to row `i`.
#[derive(Debug, Clone)]
pub(crate) struct Rows<T = u32> {
    pub offsets: Vec<u32>,
    pub items: Vec<T>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Self {
            offsets: Vec::new(),
            items: Vec::new(),
        }
    }
}

impl<T: Copy + Ord> Rows<T> {
    /// Builds rows from `(row, item)` pairs (at most [`super::index::MAX_ITEMS`]).
    pub fn build(rows: usize, mut pairs: Vec<(u32, T)>) -> Self {
        pairs.sort_unstable();
        let mut offsets = Vec::with_capacity(rows + 1);
        let mut items = Vec::with_capacity(pairs.len());
        let mut next = 0;
        for row in 0..rows {
            offsets.push(pos(items.len()));
            while next < pairs.len() && pairs[next].0 as usize == row {
                items.push(pairs[next].1);
                next += 1;
            }
        }
        offsets.push(pos(items.len()));
        Self { offsets, items }
    }

    /// The same rows with each item mapped (in place: `U` is as large as `T`).
    pub fn map<U>(self, f: impl Fn(T) -> U) -> Rows<U> {
        Rows {
            offsets: self.offsets,
            items: self.items.into_iter().map(f).collect(),
        }
    }

    pub fn row(&self, row: impl Position) -> &[T] {
        let row = row.position();
        match (self.offsets.get(row), self.offsets.get(row + 1)) {
            (Some(&a), Some(&b)) => &self.items[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// Sizes of a loaded policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub documents: usize,
    pub roles: usize,
    pub assignments: usize,
    pub deny_assignments: usize,
    pub groups: usize,
    pub principals: usize,
    pub scopes: usize,
    pub catalog_actions: usize,
    pub routes: usize,
}

/// One compiled, immutable policy: its data ([`Core`], shared), and, for a policy made
/// from a store's base policy and the assignment changes since, the [`Overlay`] of those
/// changes (see `overlay.rs`). Field reads fall through to the core (`Deref`).
#[derive(Debug)]
pub struct Snapshot {
    /// Lowercase hex SHA-256 of the sources' bytes in load order.
    pub revision: String,
    pub counts: Counts,
    pub(crate) core: std::sync::Arc<Core>,
    pub(crate) overlay: Option<std::sync::Arc<super::overlay::Overlay>>,
}

impl std::ops::Deref for Snapshot {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// The compiled data of a policy, immutable and shared by the snapshots made from it.
#[derive(Debug)]
pub struct Core {
    /// Names of the documents, in load order.
    pub sources: Vec<String>,
    pub routes: RouteTable,
    pub identity: IdentityConfig,
    /// AuthZEN subject types renamed to principal types (`authzen.subjectTypes`).
    pub authzen_subject_types: std::collections::BTreeMap<String, String>,
    /// The `tests:` cases with the document each came from.
    pub tests: Vec<(String, TestCaseDoc)>,
    /// Principal ids by index, as one text (see [`PrincipalRows`]).
    pub(crate) principal_text: String,
    pub(crate) principal_index: PrincipalIndex,
    /// For each principal, every group that contains it, transitively (sorted), each with
    /// its assignment row: `[group, start, end]`, so a principal's groups come with their
    /// rows in one read. A principal's span is in its [`PrincipalSlot`] and
    /// [`PrincipalRows`].
    pub(crate) member_rows: Vec<[u32; 3]>,
    /// For each principal and one more, where its id and rows start (adjacent, so one
    /// cache line gives all of them).
    pub(crate) principal_rows: Vec<PrincipalRows>,
    /// Principals below this index were first named by a group definition; the others
    /// are numbered by their first mention in assignments (then deny assignments).
    pub(crate) group_principals: u32,
    /// Lowercase scope keys by index, as one text (spans in `scope_index`).
    pub(crate) scope_text: String,
    pub(crate) scope_index: TagIndex,
    pub(crate) scopes: Vec<Scope>,
    /// For each known scope, its ancestors among known scopes, itself included (sorted).
    pub(crate) ancestors: Rows<ScopeIdx>,
    /// The scopes that have `scopeLinks` parents of their own (sorted).
    pub(crate) linked_scopes: Vec<ScopeIdx>,
    pub(crate) roles: Vec<Role>,
    pub(crate) role_lookup: FastMap<Box<str>, RoleIdx>,
    /// Every assignment, grouped by principal (`principal_rows` gives the range of each).
    pub(crate) assignments: AssignmentTable,
    /// Distinct time windows of assignments; `windows[0]` is [`ALWAYS`].
    pub(crate) windows: Vec<Window>,
    pub(crate) denies: Vec<DenyAssignment>,
    pub(crate) denies_by_scope: Rows,
    /// Bit `s` set: scope `s` has deny assignments (a few bytes that stay in cache, so a
    /// check reads `denies_by_scope` only at the scopes that have some).
    pub(crate) deny_scopes: Vec<u64>,
    pub(crate) catalog: Vec<CatalogAction>,
    /// The plane of each catalog action (lowercase name; `true` for a data action).
    pub(crate) catalog_planes: FastMap<Box<str>, bool>,
    /// Catalog actions plus every literal action in the policy: `(spelling, data)`.
    pub(crate) universe: Vec<(Box<str>, bool)>,
    /// The roles granting each action of the universe.
    pub(crate) grant_table: GrantTable,
    /// Every `notBefore` / `notAfter` instant, sorted.
    pub(crate) boundaries: Vec<Instant>,
    /// The longest action (bytes) any role could grant, control plane then data plane;
    /// `None` when a pattern with `*` grants actions of any length
    /// ([`longest_grantable`]).
    pub(crate) longest_grantable: [Option<usize>; 2],
    /// The `minAssignments` constraints, with how many assignments satisfied each.
    pub(crate) constraints: Vec<Constraint>,
}

/// A `minAssignments` constraint as compiled: the role, the scope, the count asked for and
/// the count found (assignments of the role at the scope or an ancestor, with a window
/// that is not empty).
#[derive(Debug, Clone)]
pub(crate) struct Constraint {
    pub role: RoleIdx,
    pub scope: ScopeIdx,
    pub count: u32,
    pub found: u32,
    /// The document and object the constraint is reported under.
    pub doc: Box<str>,
    pub object: Box<str>,
}

/// The longest action, in bytes, a role of `roles` could grant in the plane `data` says:
/// its literal patterns and every implied action (denies only take away, so they play no
/// part). `None` when some role has a pattern with `*` there, which matches actions of any
/// length.
pub(crate) fn longest_grantable(roles: &[Role], data: bool) -> Option<usize> {
    let mut longest = 0;
    for role in roles {
        let (patterns, implied) = if data {
            (&role.data_actions, &role.implied_data)
        } else {
            (&role.actions, &role.implied)
        };
        for pattern in patterns.iter() {
            longest = longest.max(pattern.literal()?.len());
        }
        let names = implied.actions();
        for i in implied.ids() {
            longest = longest.max(names.name(i).len());
        }
    }
    Some(longest)
}

/// A question for [`Snapshot::check`].
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    pub principal: &'a str,
    /// Caller-supplied groups (from a token), full `group:` ids.
    pub groups: &'a [String],
    pub action: &'a str,
    pub data_action: bool,
    pub scope: &'a str,
    pub at: Instant,
}

/// A request the engine cannot evaluate: the caller's mistake, never a decision. Each
/// variant carries the typed problem of the field it names; the message (which quotes
/// request text only escaped) is rendered here, once, for every adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("invalid principal: {0}")]
    Principal(syntax::PrincipalError),
    #[error("invalid group: {0}")]
    Group(syntax::PrincipalError),
    #[error("invalid action: {0}")]
    Action(syntax::ActionError),
    #[error("invalid scope: {0}")]
    Scope(syntax::ScopeError),
    /// A role name or id the policy does not define (as given).
    #[error("unknown role: role `{}` is not defined", syntax::escape(.role))]
    Role { role: String },
    #[error("invalid at: {0}")]
    At(syntax::TimestampError),
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Reason<'s> {
    #[serde(rename_all = "camelCase")]
    RoleAssignment {
        role: &'s str,
        /// `null` when the assignment has none (docs/reference.md).
        assignment_id: Option<&'s str>,
        scope: &'s str,
        via: &'s str,
    },
    Public,
    #[serde(rename_all = "camelCase")]
    DenyAssignment {
        deny_assignment: &'s str,
    },
    NoGrant,
    NoRoute,
    Malformed {
        message: String,
    },
    NoIdentity,
}

impl Reason<'_> {
    /// The reason kind as SPEC §8 spells it.
    /// Every value [`Reason::kind`] takes (SPEC §8).
    pub const KINDS: [&'static str; 7] = [
        "roleAssignment",
        "public",
        "denyAssignment",
        "noGrant",
        "noRoute",
        "malformed",
        "noIdentity",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::RoleAssignment { .. } => "roleAssignment",
            Self::Public => "public",
            Self::DenyAssignment { .. } => "denyAssignment",
            Self::NoGrant => "noGrant",
            Self::NoRoute => "noRoute",
            Self::Malformed { .. } => "malformed",
            Self::NoIdentity => "noIdentity",
        }
    }
}

/// A decision as indices into the snapshot that made it: `Copy`, lifetime-free, and only
/// meaningful with that snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Allowed by this assignment (index into the snapshot's assignments).
    Grant { assignment: u32 },
    /// Denied by this deny assignment.
    Deny { deny: u32 },
    /// Nothing grants it.
    NoGrant,
}

impl Verdict {
    pub fn allowed(self) -> bool {
        matches!(self, Self::Grant { .. })
    }
}

/// An allow or a deny, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision<'s> {
    pub allowed: bool,
    pub reason: Reason<'s>,
}

impl<'s> Decision<'s> {
    pub fn deny(reason: Reason<'s>) -> Self {
        Self {
            allowed: false,
            reason,
        }
    }
}

/// A small on-stack buffer for ASCII-lowercasing request strings without allocating.
pub(crate) type LowerBuf = SmallVec<[u8; 192]>;

pub(crate) fn lower_into<'b>(text: &str, buf: &'b mut LowerBuf) -> &'b str {
    buf.clear();
    buf.extend_from_slice(text.as_bytes());
    buf.make_ascii_lowercase();
    // ASCII lowercasing keeps UTF-8 valid, so this never fails.
    std::str::from_utf8(buf.as_slice()).unwrap_or_default()
}

/// A hash of `key` that ignores ASCII case, sixteen bytes per multiply. ASCII upper and
/// lower case letters differ only in bit 5 (0x20), and lowercasing changes nothing else, so
/// hashing every byte with that bit set is case-insensitive without lowercasing (other
/// bytes that differ only in that bit collide, and the comparison tells them apart).
pub(crate) fn folded_hash(seed: u64, key: &[u8]) -> u64 {
    let mut h = seed.wrapping_add((key.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut pairs = key.chunks_exact(16);
    for pair in &mut pairs {
        h = mix(h, word_of(&pair[..8]), word_of(&pair[8..]));
    }
    if !pairs.remainder().is_empty() {
        // The last sixteen bytes (or fewer), overlapping what the loop already took.
        let (a, b) = match key.len() {
            n if n >= 16 => (word_of(&key[n - 16..n - 8]), word_of(&key[n - 8..])),
            n if n >= 8 => (word_of(&key[..8]), word_of(&key[n - 8..])),
            _ => (last_word(key), 0),
        };
        h = mix(h, a, b);
    }
    folded_multiply(h, seed | 1)
}

/// One step of [`folded_hash`]: the state `h` with two words of the key, each with bit 5
/// set in every byte (so ASCII case does not count).
#[inline]
fn mix(h: u64, a: u64, b: u64) -> u64 {
    const CASE: u64 = 0x2020_2020_2020_2020;
    // Every byte has bit 5 clear, so `word | CASE` xor this is never zero.
    const K: u64 = 0x1f0f_9f8f_5b47_1d03;
    folded_multiply((a | CASE) ^ h, (b | CASE) ^ K)
}

/// Whether `key`, lowercased, equals `lower`: a word that is already equal (a lowercase
/// part of the key) needs no lowercasing.
pub(crate) fn folded_eq(key: &[u8], lower: &[u8]) -> bool {
    let same = |k: u64, l: u64| k == l || lower_word(k) == l;
    key.len() == lower.len()
        && key
            .chunks_exact(8)
            .zip(lower.chunks_exact(8))
            .all(|(k, l)| same(word_of(k), word_of(l)))
        && (key.len().is_multiple_of(8) || same(last_word(key), last_word(lower)))
}

/// Eight bytes as a little-endian word.
fn word_of(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().unwrap_or_default())
}

/// The last eight bytes of `bytes` as a word (overlapping the previous word), or all of
/// them, zero-padded, when there are fewer.
fn last_word(bytes: &[u8]) -> u64 {
    match bytes.len().checked_sub(8) {
        Some(start) => word_of(&bytes[start..]),
        None => {
            let mut word = [0; 8];
            for (w, b) in word.iter_mut().zip(bytes) {
                *w = *b;
            }
            u64::from_le_bytes(word)
        }
    }
}

/// The 128-bit product of two words, folded to 64 bits by XOR.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// ASCII-lowercases the eight bytes of a word (bytes at or above 0x80 are kept).
fn lower_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = word & (ONES * 0x7f);
    // The top bit of each byte: at least `A`, and above `Z`, for bytes below 0x80.
    let at_least_a = low7 + ONES * (0x80 - b'A' as u64);
    let above_z = low7 + ONES * (0x80 - b'Z' as u64 - 1);
    let upper = at_least_a & !above_z & !word & (ONES * 0x80);
    word | (upper >> 2)
}

/// Which roles grant each action the policy knows (the catalog and every literal action
/// in it), computed once at compile time so that a check tests one bit per candidate
/// assignment instead of matching the role's patterns. An action outside the table is
/// matched against the patterns, as before.
#[derive(Debug, Clone, Default)]
pub(crate) struct GrantTable {
    /// The lowercase actions, as one text (spans in `index`).
    text: String,
    index: TagIndex,
    /// `u64` words per row: one bit per role.
    words: usize,
    /// Row `2 * action + data` holds the roles granting that action as a control-plane
    /// (`data` 0) or data action (`data` 1).
    bits: Vec<u64>,
}

impl GrantTable {
    /// At most this many (action, role) pairs are evaluated at compile time; a policy with
    /// more gets no table (every check matches patterns).
    pub const BUDGET: usize = 1 << 22;

    /// Builds the table for distinct lowercase actions: per role, its patterns are applied
    /// to the actions at once (a literal through an index, a wildcard by one scan), so the
    /// cost is the roles' wildcards times the actions, not every role times every action.
    /// `plane[i]` is the catalogued plane of `actions[i]` (`Some(true)` for a data action),
    /// `None` for an action outside the catalog: a role grants a catalog action only in its
    /// own plane (SPEC §3 "Planes").
    pub fn build(roles: &[Role], actions: &[&str], plane: &[Option<bool>]) -> Self {
        if actions.len().saturating_mul(roles.len()) > Self::BUDGET || roles.is_empty() {
            return Self::default();
        }
        let words = roles.len().div_ceil(64);
        let index: FastMap<&str, usize> =
            actions.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let mark = |flags: &mut [bool], patterns: &[ActionPattern]| {
            for p in patterns {
                match p.literal() {
                    Some(literal) => {
                        if let Some(&i) = index.get(literal) {
                            flags[i] = true;
                        }
                    }
                    None => {
                        for (flag, action) in flags.iter_mut().zip(actions) {
                            *flag |= p.matches_lower(action);
                        }
                    }
                }
            }
        };
        let mut bits = vec![0u64; actions.len() * 2 * words];
        let mut allowed = vec![false; actions.len()];
        let mut removed = vec![false; actions.len()];
        // The column of each implied action, worked out once per shared table (every role
        // of a compiled policy shares one), not once per role.
        let mut columns: Option<(*const ImpliedActions, Vec<Option<usize>>)> = None;
        for (r, role) in roles.iter().enumerate() {
            for data in [false, true] {
                let (allow, remove, implied) = if data {
                    (
                        &role.data_actions,
                        &role.not_data_actions,
                        &role.implied_data,
                    )
                } else {
                    (&role.actions, &role.not_actions, &role.implied)
                };
                allowed.fill(false);
                removed.fill(false);
                mark(&mut allowed, allow);
                mark(&mut removed, remove);
                // `Role::grants`: granted by its patterns, or implied.
                for (a, gone) in allowed.iter_mut().zip(&removed) {
                    *a &= !*gone;
                }
                let table = implied.actions();
                if columns
                    .as_ref()
                    .is_none_or(|(t, _)| !std::ptr::eq(*t, &**table))
                {
                    let column = (0..table.len() as u32)
                        .map(|i| index.get(table.name(i)).copied())
                        .collect();
                    columns = Some((&**table, column));
                }
                let column = columns
                    .as_ref()
                    .map(|(_, c)| c.as_slice())
                    .unwrap_or_default();
                for i in implied
                    .ids()
                    .filter_map(|id| column.get(id as usize).copied().flatten())
                {
                    allowed[i] = true;
                }
                for (i, _) in allowed
                    .iter()
                    .enumerate()
                    .filter(|&(i, a)| *a && plane.get(i).copied().flatten() != Some(!data))
                {
                    bits[Self::row(i, data, words) + r / 64] |= 1 << (r % 64);
                }
            }
        }
        let bytes: usize = actions.iter().map(|a| a.len()).sum();
        if u32::try_from(bytes).is_err() {
            // Spans are `u32`: beyond 4 GiB of action names, no table (as over budget).
            return Self::default();
        }
        let mut text = String::with_capacity(bytes);
        let mut spans = Vec::with_capacity(actions.len());
        for action in actions {
            let start = pos(text.len());
            text.push_str(action);
            spans.push((start, pos(text.len())));
        }
        let index = TagIndex::build(&text, spans.into_iter());
        Self {
            text,
            index,
            words,
            bits,
        }
    }

    /// A known (lowercase) action: its spelling in the table and the roles granting it.
    pub fn get(&self, lower: &[u8], data: bool) -> Option<(&str, &[u64])> {
        if self.words == 0 {
            return None;
        }
        let (i, span) = self.index.entry(lower, &self.text)?;
        let row = Self::row(i as usize, data, self.words);
        Some((self.text.get(span)?, self.bits.get(row..row + self.words)?))
    }

    /// Where the row of action `i` as a control-plane or data action starts in `bits`.
    fn row(i: usize, data: bool, words: usize) -> usize {
        (2 * i + usize::from(data)) * words
    }
}

/// The action of a check, lowercase, with the roles that grant it when the policy knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActionRef<'a> {
    pub lower: &'a str,
    pub data: bool,
    roles: Option<&'a [u64]>,
}

impl ActionRef<'_> {
    /// Whether role `r` grants the action.
    pub(crate) fn granted_by(&self, roles: &[Role], r: RoleIdx) -> bool {
        match self.roles {
            Some(bits) => bits
                .get(r.index() / 64)
                .is_some_and(|w| w >> (r.get() % 64) & 1 != 0),
            None => roles
                .get(r.index())
                .is_some_and(|role| role.grants(self.lower, self.data)),
        }
    }
}

/// The subjects of a request: the principal, its token groups and every containing group
/// (sorted), with the requesting principal's assignment row when it is known.
#[derive(Debug, Clone, Default)]
pub(crate) struct Subjects {
    list: SmallVec<[PrincipalIdx; 16]>,
    /// The assignment row of each subject (parallel to `list`).
    rows: SmallVec<[[u32; 2]; 16]>,
}

impl Subjects {
    /// The assignment row (`[start, end)` in the snapshot's assignments) of each subject.
    pub(crate) fn rows(&self) -> &[[u32; 2]] {
        &self.rows
    }
}

impl std::ops::Deref for Subjects {
    type Target = [PrincipalIdx];

    fn deref(&self) -> &[PrincipalIdx] {
        &self.list
    }
}

/// How the keys of an [`AssignmentTable`] split their 32 bits: the scope above, as few bits
/// as the policy's scopes need, and the role below, in the bits left.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyLayout {
    role_bits: u32,
    /// Whether every role index fits below the all-ones "read the record" value.
    roles_fit: bool,
}

impl KeyLayout {
    pub fn new(scopes: usize, roles: usize) -> Self {
        // At least one scope bit, so shifts stay below 32.
        let scope_bits = (usize::BITS - scopes.saturating_sub(1).leading_zeros()).max(1);
        let role_bits = 32u32.saturating_sub(scope_bits);
        Self {
            role_bits,
            roles_fit: (roles as u64) < (1u64 << role_bits) - 1,
        }
    }

    fn role_mask(self) -> u32 {
        ((1u64 << self.role_bits) - 1) as u32
    }

    /// The key of an assignment at `scope`.
    pub fn key(self, scope: ScopeIdx, a: &Assignment) -> u32 {
        let role = if a.window == 0 && self.roles_fit {
            a.role.get()
        } else {
            self.role_mask()
        };
        self.first_key(scope) | role
    }

    /// The scope of a key.
    pub fn scope(self, key: u32) -> ScopeIdx {
        ScopeIdx::new(key >> (self.role_bits & 31))
    }

    /// The smallest key at `scope`.
    pub(crate) fn first_key(self, scope: ScopeIdx) -> u32 {
        scope.get() << (self.role_bits & 31)
    }

    /// The role of a key, when the key holds it (always active, and the role fits).
    fn role(self, key: u32) -> Option<RoleIdx> {
        let role = key & self.role_mask();
        (role != self.role_mask()).then_some(RoleIdx::new(role))
    }
}

impl Snapshot {
    /// Whether no role of the policy could grant `action` in the plane `data` says, by its
    /// length alone: it is longer than every action the roles grant and no pattern with `*`
    /// grants that plane. Such an action is allowed nowhere and to no one, so the queries
    /// that walk the policy for an action answer it at once.
    pub fn grants_nothing_to(&self, action: &str, data: bool) -> bool {
        self.longest_grantable[usize::from(data)].is_some_and(|longest| action.len() > longest)
    }

    /// Evaluates one request (SPEC §3).
    pub fn check(&self, req: &CheckRequest<'_>) -> Result<Decision<'_>, RequestError> {
        self.decide(req).map(|(v, slot)| self.explain_with(v, slot))
    }

    /// Evaluates one request to a [`Verdict`]: the decision as indices into this snapshot,
    /// which [`Snapshot::explain`] turns into names. Caches keep verdicts.
    pub fn verdict(&self, req: &CheckRequest<'_>) -> Result<Verdict, RequestError> {
        self.decide(req).map(|(v, _)| v)
    }

    /// The verdict, with the requesting principal's index slot when it is known.
    fn decide(
        &self,
        req: &CheckRequest<'_>,
    ) -> Result<(Verdict, Option<&PrincipalSlot>), RequestError> {
        if let Some(overlay) = &self.overlay {
            return self.decide_overlay(overlay, req).map(|v| (v, None));
        }
        // A principal, action or scope the policy knows is valid (the policy's own were
        // checked when it was compiled), so only unknown ones are validated here: the
        // errors, and their order (principal, groups, action, scope), are the same.
        let slot = self.principal_slot(req.principal);
        let principal_type = match slot {
            // Types are short: a plain scan beats `memchr`'s set-up.
            Some(_) => {
                let colon = req.principal.bytes().position(|b| b == b':');
                colon
                    .and_then(|colon| req.principal.get(..colon))
                    .unwrap_or_default()
            }
            None => syntax::principal_type(req.principal).map_err(RequestError::Principal)?,
        };
        for group in req.groups {
            syntax::group_id(group).map_err(RequestError::Group)?;
        }
        let mut action_buf = LowerBuf::new();
        let action = self.request_action(req, &mut action_buf)?;
        let ancestors = self.request_ancestors(req.scope)?;
        let subjects = if req.groups.is_empty() {
            self.subjects_of(slot)
        } else {
            self.subjects(req.principal, req.groups)
        };
        let verdict = self.evaluate(&subjects, principal_type, action, ancestors, req.at);
        Ok((verdict, slot))
    }

    /// The action of a request, validated unless the policy knows it.
    pub(crate) fn request_action<'a>(
        &'a self,
        req: &CheckRequest<'_>,
        buf: &'a mut LowerBuf,
    ) -> Result<ActionRef<'a>, RequestError> {
        Ok(
            match self.grant_table.get(req.action.as_bytes(), req.data_action) {
                Some((lower, roles)) => ActionRef {
                    lower,
                    data: req.data_action,
                    roles: Some(roles),
                },
                None => {
                    syntax::check_action(req.action).map_err(RequestError::Action)?;
                    let lower = lower_into(req.action, buf);
                    ActionRef {
                        lower,
                        data: req.data_action,
                        roles: self.other_plane(lower, req.data_action).then_some(&[][..]),
                    }
                }
            },
        )
    }

    /// The decision a verdict stands for, with names from this snapshot.
    pub fn explain(&self, verdict: Verdict) -> Decision<'_> {
        self.explain_with(verdict, None)
    }

    /// [`Snapshot::explain`], taking the requesting principal's id from its slot.
    fn explain_with<'s>(
        &'s self,
        verdict: Verdict,
        slot: Option<&'s PrincipalSlot>,
    ) -> Decision<'s> {
        match verdict {
            Verdict::Grant { assignment } => Decision {
                allowed: true,
                reason: match &self.overlay {
                    Some(o) if assignment as usize >= self.assignments.len() => {
                        o.grant_reason(self, assignment as usize - self.assignments.len())
                    }
                    _ => self.grant_reason_with(assignment, slot),
                },
            },
            Verdict::Deny { deny } => Decision::deny(Reason::DenyAssignment {
                deny_assignment: &self.denies[deny as usize].name,
            }),
            Verdict::NoGrant => Decision::deny(Reason::NoGrant),
        }
    }

    /// The window of time around `at` in which no assignment starts or ends: a decision made
    /// at `at` holds for every instant in `[from, until)`.
    pub fn validity(&self, at: Instant) -> (Instant, Instant) {
        let (from, until) = validity_in(&self.boundaries, at);
        match &self.overlay {
            Some(o) => {
                let (f, u) = validity_in(o.boundaries(), at);
                (from.max(f), until.min(u))
            }
            None => (from, until),
        }
    }
}

/// The window around `at` in which none of `boundaries` (sorted) falls.
fn validity_in(boundaries: &[Instant], at: Instant) -> (Instant, Instant) {
    {
        let i = boundaries.partition_point(|&b| b <= at);
        let from = if i == 0 {
            Instant::MIN
        } else {
            boundaries[i - 1]
        };
        let until = boundaries.get(i).copied().unwrap_or(Instant::MAX);
        (from, until)
    }
}

impl Snapshot {
    /// Subjects(P) ∪ G, closed under group membership, sorted and deduplicated.
    pub(crate) fn subjects(&self, principal: &str, groups: &[String]) -> Subjects {
        if groups.is_empty() {
            return self.subjects_of(self.principal_slot(principal));
        }
        let mut subjects = Subjects::default();
        for name in std::iter::once(principal).chain(groups.iter().map(String::as_str)) {
            if let Some(slot) = self.principal_slot(name) {
                subjects.list.push(slot.principal());
                subjects.list.extend(
                    self.member_rows
                        .get(slot.groups[0] as usize..slot.groups[1] as usize)
                        .unwrap_or_default()
                        .iter()
                        .map(|&[g, _, _]| PrincipalIdx::new(g)),
                );
            }
        }
        subjects.list.sort_unstable();
        subjects.list.dedup();
        let rows = subjects
            .list
            .iter()
            .map(|&s| {
                let s = s.index();
                match (self.principal_rows.get(s), self.principal_rows.get(s + 1)) {
                    (Some(a), Some(b)) => [a.assignments, b.assignments],
                    _ => [0, 0],
                }
            })
            .collect();
        subjects.rows = rows;
        subjects
    }

    /// The subjects of one principal without token groups: it and its groups, whose rows
    /// come with them.
    pub(crate) fn subjects_of(&self, slot: Option<&PrincipalSlot>) -> Subjects {
        let mut subjects = Subjects::default();
        let Some(slot) = slot else {
            return subjects;
        };
        let p = slot.principal();
        let span = slot.groups[0] as usize..slot.groups[1] as usize;
        let groups = self.member_rows.get(span).unwrap_or_default();
        // The closure of one principal is already sorted and never holds the principal.
        let at = groups.partition_point(|&[g, _, _]| g < p.get());
        for &[g, start, end] in &groups[..at] {
            subjects.list.push(PrincipalIdx::new(g));
            subjects.rows.push([start, end]);
        }
        subjects.list.push(p);
        subjects.rows.push(slot.assignments);
        for &[g, start, end] in &groups[at..] {
            subjects.list.push(PrincipalIdx::new(g));
            subjects.rows.push([start, end]);
        }
        subjects
    }

    /// WhoCan's walk: every principal the policy knows (each with its policy groups only)
    /// that `check` allows the action at the scope, given to `visit`, in index order; ends
    /// early once `stop` says so (asked every 64 principals). The action and the scope are
    /// validated, lowercased, looked up and matched against every role once, not once per
    /// principal: a long unknown action costs its length once, then a bit test per grant.
    /// With an overlay, every principal (the overlay's new ones too) goes through `check`.
    pub(crate) fn each_allowed_principal<'s>(
        &'s self,
        action: &str,
        data: bool,
        scope: &str,
        at: Instant,
        stop: &dyn Fn() -> bool,
        mut visit: impl FnMut(&'s str),
    ) -> Result<(), RequestError> {
        if self.overlay.is_some() {
            // With an overlay, each principal (its new ones too) through `check`, which
            // reads the overlay.
            for (p, name) in self.each_principal_name().enumerate() {
                if p % 64 == 0 && stop() {
                    break;
                }
                let request = CheckRequest {
                    principal: name,
                    groups: &[],
                    action,
                    data_action: data,
                    scope,
                    at,
                };
                if self.check(&request)?.allowed {
                    visit(name);
                }
            }
            return Ok(());
        }
        let mut buf = LowerBuf::new();
        let mut bits: Vec<u64> = Vec::new();
        let action = match self.grant_table.get(action.as_bytes(), data) {
            Some((lower, roles)) => ActionRef {
                lower,
                data,
                roles: Some(roles),
            },
            None => {
                syntax::check_action(action).map_err(RequestError::Action)?;
                let lower = lower_into(action, &mut buf);
                // The roles whose patterns (or implied actions) grant it; none for a
                // catalog action of the other plane, as in `check`.
                if !self.other_plane(lower, data) {
                    bits = vec![0; self.roles.len().div_ceil(64)];
                    for (r, role) in self.roles.iter().enumerate() {
                        if role.grants(lower, data)
                            && let Some(word) = bits.get_mut(r / 64)
                        {
                            *word |= 1 << (r % 64);
                        }
                    }
                }
                ActionRef {
                    lower,
                    data,
                    roles: Some(&bits),
                }
            }
        };
        let ancestors = self.request_ancestors(scope)?;
        for p in 0..self.principal_count() {
            if p % 64 == 0 && stop() {
                break;
            }
            let name = self.principal_name(PrincipalIdx::at(p));
            let principal_type = name.split_once(':').map_or("", |(t, _)| t);
            let subjects = self.subjects_of(self.principal_slot(name));
            if self
                .evaluate(&subjects, principal_type, action, ancestors, at)
                .allowed()
            {
                visit(name);
            }
        }
        Ok(())
    }

    /// The index slot of a known principal.
    pub(crate) fn principal_slot(&self, name: &str) -> Option<&PrincipalSlot> {
        self.principal_index.get(name, &self.principal_text)
    }

    /// Ancestors(S) among the scopes the policy knows: the closure of S's longest known
    /// path prefix, which already holds every shorter prefix and every linked parent.
    pub(crate) fn ancestors_of(&self, scope: &str) -> &[ScopeIdx] {
        self.ancestors_of_key(scope.as_bytes())
    }

    /// [`Snapshot::ancestors_of`] a normalized scope in any case.
    fn ancestors_of_key(&self, key: &[u8]) -> &[ScopeIdx] {
        scope_key_prefixes(key)
            .find_map(|prefix| self.scope_index.get(prefix, &self.scope_text))
            .map_or(&[], |s| self.ancestors.row(s))
    }

    /// [`Snapshot::ancestors_of`] a request's scope, which is validated unless the policy
    /// knows it (a known scope is valid: the policy's scopes were checked when compiled).
    pub(crate) fn request_ancestors(&self, scope: &str) -> Result<&[ScopeIdx], RequestError> {
        let key = syntax::trim_scope(scope).as_bytes();
        if let Some(s) = self.scope_index.get(key, &self.scope_text) {
            return Ok(self.ancestors.row(s));
        }
        syntax::normalize_scope(scope).map_err(RequestError::Scope)?;
        Ok(self.ancestors_of_key(key))
    }

    /// The action of a query, with the roles that grant it when the policy knows it.
    pub(crate) fn action<'a>(&'a self, lower: &'a str, data: bool) -> ActionRef<'a> {
        ActionRef {
            lower,
            data,
            roles: self
                .grant_table
                .get(lower.as_bytes(), data)
                .map(|(_, roles)| roles)
                .or_else(|| self.other_plane(lower, data).then_some(&[][..])),
        }
    }

    /// Whether a (lowercase) action is a catalog action of the other plane than `data`
    /// says: no role grants it in this plane (SPEC §3 "Planes").
    pub(crate) fn other_plane(&self, lower: &str, data: bool) -> bool {
        !self.catalog_planes.is_empty()
            && self
                .catalog_planes
                .get(lower)
                .is_some_and(|&plane| plane != data)
    }

    /// Whether role `role` grants the (lowercase) action in the plane `data` says: by its
    /// patterns or implied, and only in the catalogued plane of a catalog action.
    pub(crate) fn role_grants(&self, role: &Role, lower: &str, data: bool) -> bool {
        !self.other_plane(lower, data) && role.grants(lower, data)
    }

    /// Steps 3 to 5 of SPEC §3 over precomputed subjects and ancestors.
    pub(crate) fn evaluate(
        &self,
        subjects: &Subjects,
        principal_type: &str,
        action: ActionRef<'_>,
        ancestors: &[ScopeIdx],
        at: Instant,
    ) -> Verdict {
        if let Some(deny) = self.deny_of(subjects, principal_type, action, ancestors) {
            return Verdict::Deny { deny };
        }
        match self.find_grant(subjects, action, ancestors, at) {
            Some(assignment) => Verdict::Grant { assignment },
            None => Verdict::NoGrant,
        }
    }

    /// Step 3 of SPEC §3: the deny assignment that applies, if any; of several, the first
    /// in policy order.
    pub(crate) fn deny_of(
        &self,
        subjects: &Subjects,
        principal_type: &str,
        action: ActionRef<'_>,
        ancestors: &[ScopeIdx],
    ) -> Option<u32> {
        if !self.denies.is_empty() {
            let has_denies = |s: ScopeIdx| {
                self.deny_scopes
                    .get(s.index() / 64)
                    .is_some_and(|w| w >> (s.get() % 64) & 1 != 0)
            };
            // Of the deny assignments that apply, the first in policy order: the answer
            // must not depend on how the scopes happen to be numbered (which a write of an
            // unrelated assignment at a new scope changes).
            let mut first: Option<u32> = None;
            for &scope in ancestors.iter().filter(|&&s| has_denies(s)) {
                for &d in self.denies_by_scope.row(scope) {
                    if first.is_some_and(|f| f <= d) {
                        continue;
                    }
                    let deny = &self.denies[d as usize];
                    if deny.covers(action.lower, action.data)
                        && deny.applies(subjects, principal_type)
                    {
                        first = Some(d);
                    }
                }
            }
            return first;
        }
        None
    }

    /// The first active assignment that grants the action at one of the ancestors: the
    /// first subject (in index order) holding one, and of its grants the first in policy
    /// order. Returns a position in `assignments`.
    pub(crate) fn find_grant(
        &self,
        subjects: &Subjects,
        action: ActionRef<'_>,
        ancestors: &[ScopeIdx],
        at: Instant,
    ) -> Option<u32> {
        let (Some(&low), Some(&high)) = (ancestors.first(), ancestors.last()) else {
            return None;
        };
        // First the rows whose scope range meets the ancestors': one tight pass over the
        // rows' ends, so their cache misses overlap.
        let mut live: SmallVec<[[u32; 2]; 16]> = SmallVec::new();
        for &[start, end] in &subjects.rows {
            let row = self.assignments.keys([start, end]);
            let layout = self.assignments.layout();
            if let (Some(&first), Some(&last)) = (row.first(), row.last())
                && layout.scope(first) <= high
                && layout.scope(last) >= low
            {
                live.push([start, end]);
            }
        }
        live.iter()
            .find_map(|&row| self.first_grant_in_row(row, action, ancestors, at))
    }

    /// The grant of one subject's row: of its active assignments granting the action at
    /// one of the ancestors, the first in policy order.
    pub(crate) fn first_grant_in_row(
        &self,
        row: [u32; 2],
        action: ActionRef<'_>,
        ancestors: &[ScopeIdx],
        at: Instant,
    ) -> Option<u32> {
        let earliest = |best: Option<u32>, i: u32| {
            Some(best.map_or(i, |b| {
                std::cmp::min_by_key(b, i, |&x| self.assignments.order(x))
            }))
        };
        let keys = self.assignments.keys(row);
        let layout = self.assignments.layout();
        let mut best: Option<u32> = None;
        if keys.len() > 64 {
            // A long row: a binary search per ancestor.
            for group in self.rows_at(row, ancestors) {
                // Within one scope the row is in policy order: the first grant is the
                // earliest of the group.
                if let Some(i) = group
                    .into_iter()
                    .find(|&i| self.grants_keyed(i, action, at))
                {
                    best = earliest(best, i);
                }
            }
            return best;
        }
        // A short row: one merge of the row (sorted by scope) with the sorted ancestors.
        let mut next = ancestors.iter().copied().peekable();
        let mut granted_scope = None;
        for (i, &key) in (row[0]..).zip(keys) {
            let scope = layout.scope(key);
            while next.next_if(|&a| a < scope).is_some() {}
            match next.peek() {
                None => break,
                Some(&a) if a != scope || granted_scope == Some(scope) => continue,
                Some(_) => {}
            }
            // Within one scope the row is in policy order: the first grant is the
            // earliest of the scope.
            if self.grants_keyed(i, action, at) {
                granted_scope = Some(scope);
                best = earliest(best, i);
            }
        }
        best
    }

    /// Every active assignment of subject `s` granting the action at one of the ancestors,
    /// in policy order (positions in `assignments`).
    pub(crate) fn grants_of(
        &self,
        s: PrincipalIdx,
        action: ActionRef<'_>,
        ancestors: &[ScopeIdx],
        at: Instant,
    ) -> SmallVec<[u32; 8]> {
        let row = match (
            self.principal_rows.get(s.index()),
            self.principal_rows.get(s.index() + 1),
        ) {
            (Some(a), Some(b)) => [a.assignments, b.assignments],
            _ => [0, 0],
        };
        let mut out: SmallVec<[u32; 8]> = self
            .rows_at(row, ancestors)
            .flatten()
            .filter(|&i| self.grants(i, action, at))
            .collect();
        out.sort_unstable_by_key(|&i| self.assignments.order(i));
        out
    }

    /// The assignment row of principal `s`: its range in `assignments`.
    pub(crate) fn assignment_row(&self, s: PrincipalIdx) -> [u32; 2] {
        match (
            self.principal_rows.get(s.index()),
            self.principal_rows.get(s.index() + 1),
        ) {
            (Some(a), Some(b)) => [a.assignments, b.assignments],
            _ => [0, 0],
        }
    }

    /// For each ancestor, the positions of the assignments of row `start..end` at that
    /// scope: a binary search in the principal's row, so independent of how many it holds.
    pub(crate) fn rows_at<'a>(
        &'a self,
        [start, end]: [u32; 2],
        ancestors: &'a [ScopeIdx],
    ) -> impl Iterator<Item = std::ops::Range<u32>> + 'a {
        let mut rest = self.assignments.keys([start, end]);
        let mut base = start;
        let layout = self.assignments.layout();
        ancestors.iter().map_while(move |&scope| {
            if rest.is_empty() {
                return None;
            }
            let low = layout.first_key(scope);
            // Ancestors are sorted, so the search resumes where the previous one ended: a
            // merge on short rows, a binary search on long ones.
            let skip = if rest.len() <= 64 {
                // Sorted, so this counts a prefix; without an early exit it vectorizes.
                rest.iter().filter(|&&x| x < low).count()
            } else {
                rest.partition_point(|&x| x < low)
            };
            rest = &rest[skip..];
            base += skip as u32;
            let len = rest
                .iter()
                .take_while(|&&x| layout.scope(x) == scope)
                .count();
            let group = base..base + len as u32;
            rest = &rest[len..];
            base += len as u32;
            Some(group)
        })
    }

    /// [`Snapshot::grants`], reading the record only for assignments with a time window.
    fn grants_keyed(&self, i: u32, action: ActionRef<'_>, at: Instant) -> bool {
        match self
            .assignments
            .key(i)
            .and_then(|key| self.assignments.layout().role(key))
        {
            Some(role) => action.granted_by(&self.roles, role),
            None => self.grants(i, action, at),
        }
    }

    /// Whether the assignment at position `i` is active at `at` and its role grants the
    /// (lowercase) action.
    pub(crate) fn grants(&self, i: u32, action: ActionRef<'_>, at: Instant) -> bool {
        let a = self.assignments.record(i);
        self.active(a, at) && action.granted_by(&self.roles, a.role)
    }

    pub(crate) fn active(&self, a: &Assignment, at: Instant) -> bool {
        a.window == 0 || {
            let (from, until) = self.windows[a.window as usize];
            from <= at && at < until
        }
    }

    /// The reason for a grant by the assignment at position `i`.
    pub(crate) fn grant_reason(&self, i: u32) -> Reason<'_> {
        self.grant_reason_with(i, None)
    }

    /// [`Snapshot::grant_reason`], taking the holder's id from `slot` when it is theirs.
    fn grant_reason_with<'s>(&'s self, i: u32, slot: Option<&'s PrincipalSlot>) -> Reason<'s> {
        let a = self.assignments.record(i);
        let via = match slot {
            Some(slot) if slot.principal() == a.principal => slot.name(&self.principal_text),
            _ => self.principal_name(a.principal),
        };
        Reason::RoleAssignment {
            role: &self.roles[a.role.index()].name,
            assignment_id: self.assignment_id(i),
            scope: self.assignment_scope(i),
            via,
        }
    }

    /// The scope of the assignment at position `i`, as that assignment spells it.
    pub(crate) fn assignment_scope(&self, i: u32) -> &str {
        if let Some(written) = self.assignments.spelling(i) {
            return written;
        }
        self.scopes[self.assignments.scope(i).index()].as_str()
    }

    pub(crate) fn assignment_id(&self, i: u32) -> Option<&str> {
        self.assignments.id(i)
    }

    /// Finds a role by name (case-insensitive) or id.
    pub fn role(&self, name_or_id: &str) -> Option<&Role> {
        let key = name_or_id.to_ascii_lowercase();
        self.role_lookup
            .get(key.as_str())
            .map(|&r| &self.roles[r.index()])
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn catalog(&self) -> &[CatalogAction] {
        &self.catalog
    }

    /// The spelling of a known principal.
    pub(crate) fn principal_name(&self, p: PrincipalIdx) -> &str {
        let p = p.index();
        match (self.principal_rows.get(p), self.principal_rows.get(p + 1)) {
            (Some(a), Some(b)) => self
                .principal_text
                .get(a.name as usize..b.name as usize)
                .unwrap_or_default(),
            _ => "",
        }
    }

    /// How many principals the policy knows.
    pub(crate) fn principal_count(&self) -> usize {
        self.principal_rows.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every byte value at every position of words, tails and overlapping tails.
    fn samples() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for len in 0..=19 {
            for b in 0..=255u8 {
                for at in 0..len {
                    let mut key = vec![b'q'; len];
                    key[at] = b;
                    out.push(key);
                }
            }
        }
        out
    }

    #[test]
    fn words_lowercase_exactly_as_ascii_does() {
        for key in samples() {
            let expected = key.to_ascii_lowercase();
            let mut word = [0u8; 8];
            for chunk in key.chunks(8) {
                word[..chunk.len()].copy_from_slice(chunk);
                let lowered = lower_word(u64::from_le_bytes(word)).to_le_bytes();
                let want: Vec<u8> = word.iter().map(u8::to_ascii_lowercase).collect();
                assert_eq!(lowered.as_slice(), want.as_slice(), "{key:?}");
            }
            assert!(folded_eq(&key, &expected), "{key:?}");
            assert_eq!(
                folded_hash(7, &key),
                folded_hash(7, &expected),
                "{key:?} hashes apart from its lowercase form"
            );
        }
    }

    #[test]
    fn folded_comparison_tells_different_keys_apart() {
        let keys = samples();
        for key in keys.iter().filter(|k| !k.is_empty()).step_by(37) {
            let lower = key.to_ascii_lowercase();
            for at in 0..key.len() {
                let mut other = lower.clone();
                other[at] = other[at].wrapping_add(1);
                if other.to_ascii_lowercase() != lower {
                    assert!(!folded_eq(key, &other.to_ascii_lowercase()), "{key:?}");
                }
            }
            let mut longer = lower.clone();
            longer.push(b'x');
            assert!(!folded_eq(key, &longer));
        }
    }

    /// The hash reads every byte of a key, of every length: changing any one byte (to
    /// another that is not its other case) changes the hash, and so does the length or
    /// the seed.
    #[test]
    fn the_folded_hash_reads_every_byte_of_every_length() {
        for seed in [0u64, 7, 0x243f_6a88_85a3_08d3] {
            let mut seen = HashSet::new();
            for len in 0..=40usize {
                let key: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let base = folded_hash(seed, &key);
                assert!(seen.insert(base), "length {len} hashes as a shorter key");
                for at in 0..len {
                    for byte in [b'0', b'/', b'~', 0xc3] {
                        let mut other = key.clone();
                        other[at] = byte;
                        assert_ne!(
                            folded_hash(seed, &other),
                            base,
                            "seed {seed}, length {len}: byte {at} set to {byte:#x}"
                        );
                    }
                }
            }
            assert_ne!(folded_hash(seed, b"/a"), folded_hash(seed ^ 1, b"/a"));
        }
    }

    #[test]
    fn tag_index_finds_keys_in_any_case_and_nothing_else() {
        let keys = [
            "/",
            "/subscriptions/s1",
            "/subscriptions/s1/resourcegroups/rg-1",
        ];
        let text: String = keys.concat();
        let mut spans = Vec::new();
        let mut at = 0u32;
        for k in keys {
            spans.push((at, at + k.len() as u32));
            at += k.len() as u32;
        }
        let index = TagIndex::build(&text, spans.into_iter());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(index.get(k.as_bytes(), &text), Some(i as u32));
            assert_eq!(
                index.get(k.to_ascii_uppercase().as_bytes(), &text),
                Some(i as u32)
            );
        }
        for miss in [
            "",
            "/subscriptions",
            "/subscriptions/s1/",
            "/subscriptions/s2",
        ] {
            assert_eq!(index.get(miss.as_bytes(), &text), None, "{miss}");
        }
    }

    /// The index is at most half full, so a miss ends at an empty slot within a probe or
    /// two.
    #[test]
    fn a_tag_index_is_at_most_half_full() {
        for n in [1usize, 5, 100, 1000] {
            let text: String = (0..n).map(|i| format!("/k{i:04}")).collect();
            let spans = (0..n).map(|i| (6 * i as u32, 6 * i as u32 + 6));
            let index = TagIndex::build(&text, spans.collect::<Vec<_>>().into_iter());
            assert!(
                index.slots.len() >= 2 * n,
                "{n} keys in {} slots",
                index.slots.len()
            );
            assert!(index.slots.len().is_power_of_two());
            assert_eq!(index.get(b"/k0000", &text), Some(0));
        }
    }

    /// Keys spread over the slots and their tags, and a tag that matches is only a
    /// candidate: the key's text decides.
    #[test]
    fn a_tag_index_spreads_its_keys_and_confirms_every_candidate() {
        let n = 1000;
        let text: String = (0..n).map(|i| format!("/k{i:04}")).collect();
        let spans: Vec<(u32, u32)> = (0..n).map(|i| (6 * i, 6 * i + 6)).collect();
        let mut index = TagIndex::build(&text, spans.iter().copied());
        let mask = index.slots.len() - 1;
        let keys = || {
            spans
                .iter()
                .map(|&(a, b)| &text.as_bytes()[a as usize..b as usize])
        };
        let homes: HashSet<usize> = keys().map(|k| index.hash(k, mask).1).collect();
        let tags: HashSet<u32> = keys().map(|k| index.hash(k, mask).0).collect();
        assert!(homes.len() > n as usize / 2, "{} home slots", homes.len());
        assert!(tags.len() > n as usize * 9 / 10, "{} tags", tags.len());
        // A key the index does not hold, whose first slot is taken (so the lookup reads
        // a candidate), and every slot made to carry its tag.
        let missing = (0..n)
            .map(|i| format!("/m{i:04}"))
            .find(|k| index.slots[index.hash(k.as_bytes(), mask).1][1] != 0)
            .unwrap();
        let (tag, _) = index.hash(missing.as_bytes(), mask);
        for slot in index.slots.iter_mut().filter(|s| s[1] != 0) {
            slot[0] = tag;
        }
        assert_eq!(index.get(missing.as_bytes(), &text), None);
    }

    /// Short ids (held in the slot) and long ones (read from the text) are found with
    /// their rows and names; the index is at most half full and spreads its keys; and a
    /// slot whose tag and length match is only a candidate: the id decides.
    #[test]
    fn a_principal_index_finds_short_and_long_ids_and_confirms_every_candidate() {
        let long = |i: usize| format!("user:{}-{i:04}", "x".repeat(INLINE_KEY));
        let ids: Vec<String> = (0..200)
            .map(|i| {
                if i % 2 == 0 {
                    format!("user:u{i:04}")
                } else {
                    long(i)
                }
            })
            .collect();
        let text: String = ids.concat();
        let mut rows = Vec::new();
        let mut at = 0;
        for (i, id) in ids.iter().enumerate() {
            rows.push(PrincipalRows {
                name: at,
                groups: 3 * i as u32,
                assignments: 5 * i as u32,
            });
            at += id.len() as u32;
        }
        rows.push(PrincipalRows {
            name: at,
            groups: 3 * ids.len() as u32,
            assignments: 5 * ids.len() as u32,
        });
        let mut index = PrincipalIndex::build(&text, &rows);
        assert!(
            index.slots.len() >= 2 * ids.len(),
            "{} slots",
            index.slots.len()
        );
        for (i, id) in ids.iter().enumerate() {
            let slot = index.get(id, &text).unwrap_or_else(|| panic!("{id}"));
            assert_eq!(slot.principal(), PrincipalIdx::at(i));
            assert_eq!(slot.name(&text), id);
            let i = i as u32;
            assert_eq!(slot.groups, [3 * i, 3 * i + 3]);
            assert_eq!(slot.assignments, [5 * i, 5 * i + 5]);
        }
        let mask = index.slots.len() - 1;
        let homes: HashSet<usize> = ids.iter().map(|id| index.hash(id, mask).1).collect();
        let tags: HashSet<u32> = ids.iter().map(|id| index.hash(id, mask).0).collect();
        assert!(homes.len() > ids.len() / 2, "{} home slots", homes.len());
        assert!(tags.len() > ids.len() * 9 / 10, "{} tags", tags.len());
        // Ids the index does not hold, one short and one long, each of the same length as
        // held ones: every slot made to carry their tag still does not answer for them.
        // (Each with its first slot taken, so the lookup reads a candidate.)
        let taken =
            |index: &PrincipalIndex, id: &str| index.slots[index.hash(id, mask).1].value != 0;
        let short = (9000..)
            .map(|i| format!("user:u{i:04}"))
            .find(|id| taken(&index, id))
            .unwrap();
        let long = (9000..).map(long).find(|id| taken(&index, id)).unwrap();
        for missing in [short, long] {
            let (tag, _) = index.hash(&missing, mask);
            for slot in index.slots.iter_mut().filter(|s| s.value != 0) {
                slot.tag = tag;
            }
            assert!(index.get(&missing, &text).is_none(), "{missing}");
        }
    }

    #[test]
    fn assignment_keys_hold_the_scope_and_the_role_when_it_fits() {
        let record = |role: u32, window: u32| Assignment {
            role: RoleIdx::new(role),
            window,
            principal: PrincipalIdx::new(0),
            id_end: 0,
        };
        for (scopes, roles) in [
            (0, 0),
            (1, 5),
            (2, 3),
            (10_000, 200),
            (1 << 20, 4094),
            (1 << 20, 4095),
            (usize::MAX >> 1, 1),
        ] {
            let layout = KeyLayout::new(scopes, roles);
            let last_scope = scopes.saturating_sub(1).min(u32::MAX as usize) as u32;
            let fits = (roles as u64) < (1u64 << layout.role_bits) - 1;
            for scope in [0, last_scope / 2, last_scope].map(ScopeIdx::new) {
                for role in [0, roles.saturating_sub(1) as u32] {
                    let key = layout.key(scope, &record(role, 0));
                    assert_eq!(layout.scope(key), scope, "{scopes} scopes, {roles} roles");
                    assert_eq!(layout.role(key), fits.then_some(RoleIdx::new(role)));
                    assert!(layout.first_key(scope) <= key);
                    // A timed assignment's role is always read from its record.
                    assert_eq!(layout.role(layout.key(scope, &record(role, 1))), None);
                }
            }
            if last_scope > 0 {
                let below = layout.key(ScopeIdx::new(last_scope - 1), &record(0, 1));
                assert!(below < layout.first_key(ScopeIdx::new(last_scope)));
            }
        }
    }

    #[test]
    fn the_grant_table_agrees_with_role_grants() {
        let patterns = |list: &[&str]| -> Box<[ActionPattern]> {
            list.iter()
                .map(|p| ActionPattern::parse(p).unwrap_or_else(|e| panic!("{e}")))
                .collect()
        };
        let implied = |list: &[&str]| -> ImpliedSet {
            let mut actions = ImpliedActions::default();
            let mut bits = FixedBitSet::new();
            for a in list {
                bits.grow_and_insert(actions.intern(a) as usize);
            }
            ImpliedSet::new(std::sync::Arc::new(actions), bits)
        };
        let role =
            |actions: &[&str], not: &[&str], data: &[&str], not_data: &[&str], imp: &[&str]| Role {
                name: "r".into(),
                id: None,
                description: None,
                actions: patterns(actions),
                not_actions: patterns(not),
                data_actions: patterns(data),
                not_data_actions: patterns(not_data),
                implied: implied(imp),
                implied_data: implied(&["p/q/read"]),
                assignable_scopes: Box::new([]),
            };
        let roles: Vec<Role> = (0..70)
            .map(|i| match i % 5 {
                0 => role(&["*"], &["a/*/delete", "B/X/WRITE"], &[], &[], &[]),
                1 => role(
                    &["a/*", "p/q/read"],
                    &["a/x/*"],
                    &["a/*"],
                    &["*/read"],
                    &["c/d/read"],
                ),
                2 => role(&["*/read"], &[], &["*"], &[], &["a/x/delete"]),
                3 => role(
                    &["A/X/Read", "b/x/write", "zz/none"],
                    &["a/x/read"],
                    &[],
                    &[],
                    &[],
                ),
                _ => role(&[], &[], &[], &[], &[]),
            })
            .collect();
        let actions = [
            "a/x/read",
            "a/x/delete",
            "a/y/read",
            "a/y/delete",
            "b/x/write",
            "c/d/read",
            "p/q/read",
            "p/q/write",
        ];
        // Two catalog actions, one per plane: granted only in their own.
        let planes: Vec<Option<bool>> = actions
            .iter()
            .map(|a| match *a {
                "c/d/read" => Some(true),
                "p/q/read" => Some(false),
                _ => None,
            })
            .collect();
        let table = GrantTable::build(&roles, &actions, &planes);
        for (action, plane) in actions.into_iter().zip(&planes) {
            for data in [false, true] {
                let Some((_, bits)) = table.get(action.as_bytes(), data) else {
                    panic!("{action} is not in the table");
                };
                for (r, role) in roles.iter().enumerate() {
                    assert_eq!(
                        bits[r / 64] >> (r % 64) & 1 != 0,
                        role.grants(action, data) && *plane != Some(!data),
                        "role {r}, {action}, data {data}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_grant_table_is_skipped_beyond_its_budget() {
        let role = Role {
            name: "r".into(),
            id: None,
            description: None,
            actions: vec![ActionPattern::parse("a/*").unwrap_or_else(|e| panic!("{e}"))].into(),
            not_actions: Box::new([]),
            data_actions: Box::new([]),
            not_data_actions: Box::new([]),
            implied: ImpliedSet::default(),
            implied_data: ImpliedSet::default(),
            assignable_scopes: Box::new([]),
        };
        let table = GrantTable::build(std::slice::from_ref(&role), &["a/b", "c/d"], &[None, None]);
        assert_eq!(
            table.get(b"A/B", false).map(|(a, r)| (a, r[0])),
            Some(("a/b", 1))
        );
        assert_eq!(table.get(b"a/b", true).map(|(_, r)| r[0]), Some(0));
        assert_eq!(table.get(b"c/d", false).map(|(_, r)| r[0]), Some(0));
        assert_eq!(table.get(b"e/f", false), None);
        // 64 roles times just over BUDGET / 64 actions: one pair over the budget, without
        // four million action names.
        let roles = vec![role; 64];
        let within: Vec<String> = (0..GrantTable::BUDGET / 64)
            .map(|i| format!("a/{i}"))
            .collect();
        let mut names: Vec<&str> = within.iter().map(String::as_str).collect();
        let kept = GrantTable::build(&roles, &names, &[]);
        assert_eq!(kept.get(b"a/1", false).map(|(_, r)| r[0]), Some(u64::MAX));
        names.push("a/over");
        let skipped = GrantTable::build(&roles, &names, &[]);
        assert_eq!(skipped.get(b"a/1", false), None);
    }
}

#[cfg(test)]
mod grantable_tests {
    fn snapshot(yaml: &str) -> crate::policy::Snapshot {
        crate::policy::compile_sources(&[crate::policy::SourceDocument::new("p.yaml", yaml)])
            .unwrap()
    }

    /// The longest action a role could grant: literal patterns and implied actions count,
    /// a pattern with `*` makes it unbounded in its plane, and denies play no part.
    #[test]
    fn an_action_longer_than_any_role_grants_is_granted_by_none() {
        let s = snapshot(
            "version: 1\nactions:\n  - {name: a/b, implies: [a/implied/long/name]}\n\
             roles: [{name: R, actions: [a/b], dataActions: ['d/*']}]\n\
             denyAssignments: [{name: n, principals: ['user:x'], actions: ['*'], scope: /}]\n",
        );
        assert!(!s.grants_nothing_to("a/implied/long/name", false));
        assert!(!s.grants_nothing_to("A/IMPLIED/LONG/NAM", false));
        assert!(s.grants_nothing_to("a/implied/long/name2", false));
        // `d/*` grants data actions of any length.
        assert!(!s.grants_nothing_to(&"d/x".repeat(1000), true));
        // No role has data actions: none is granted, whatever its length.
        let s = snapshot("version: 1\nroles: [{name: R, actions: ['*']}]\n");
        assert!(!s.grants_nothing_to(&"x".repeat(100_000), false));
        assert!(s.grants_nothing_to("x", true));
    }
}

/// `check` end to end on small policies: what each step of SPEC §3 decides, in the unit
/// tests that judge this file's mutants (the property tests against the reference model
/// are in the integration binary).
#[cfg(test)]
mod check_tests {
    use super::{CheckRequest, Decision, PrincipalIdx, Reason, RequestError, Snapshot, Verdict};
    use crate::policy::syntax::{Instant, parse_time};

    fn snapshot(yaml: &str) -> Snapshot {
        crate::policy::compile_sources(&[crate::policy::SourceDocument::new("p.yaml", yaml)])
            .unwrap()
    }

    fn time(text: &str) -> Instant {
        parse_time(text).unwrap()
    }

    fn at() -> Instant {
        time("2026-06-01T00:00:00Z")
    }

    fn ask<'s>(
        s: &'s Snapshot,
        principal: &str,
        groups: &[String],
        action: &str,
        data: bool,
        scope: &str,
        at: Instant,
    ) -> Result<Decision<'s>, RequestError> {
        let req = CheckRequest {
            principal,
            groups,
            action,
            data_action: data,
            scope,
            at,
        };
        let decision = s.check(&req)?;
        // The verdict names the same decision.
        assert_eq!(s.explain(s.verdict(&req)?), decision);
        Ok(decision)
    }

    fn check<'s>(s: &'s Snapshot, principal: &str, action: &str, scope: &str) -> Decision<'s> {
        ask(s, principal, &[], action, false, scope, at()).unwrap()
    }

    /// The assignment id and scope of a grant, or the kind of a denial.
    fn why(d: &Decision<'_>) -> String {
        match &d.reason {
            Reason::RoleAssignment {
                assignment_id,
                scope,
                via,
                role,
            } => format!("{role} {} {scope} {via}", assignment_id.unwrap_or("-")),
            Reason::DenyAssignment { deny_assignment } => format!("deny {deny_assignment}"),
            other => other.kind().to_owned(),
        }
    }

    const WINDOWS: &str = r#"
version: 1
roles:
  - name: Reader
    actions: [a/b/read]
assignments:
  - id: timed
    principal: "user:ana"
    role: Reader
    scope: /x
    notBefore: "2026-01-01T00:00:00Z"
    notAfter: "2026-12-01T00:00:00Z"
  - id: later
    principal: "user:bo"
    role: Reader
    scope: /x
    notBefore: "2027-01-01T00:00:00Z"
"#;

    /// `[notBefore, notAfter)`: the start is in, the end is out; the validity of a decision
    /// is the window between the boundaries around it.
    #[test]
    fn a_time_window_includes_its_start_and_excludes_its_end() {
        let s = snapshot(WINDOWS);
        let start = time("2026-01-01T00:00:00Z");
        let end = time("2026-12-01T00:00:00Z");
        let bo = time("2027-01-01T00:00:00Z");
        let ana = |at| {
            ask(&s, "user:ana", &[], "a/b/read", false, "/x/y", at)
                .unwrap()
                .allowed
        };
        assert!(!ana(start - 1));
        assert!(ana(start));
        assert!(ana(end - 1));
        assert!(!ana(end));
        assert_eq!(s.validity(start - 1), (Instant::MIN, start));
        assert_eq!(s.validity(start), (start, end));
        assert_eq!(s.validity(end - 1), (start, end));
        assert_eq!(s.validity(end), (end, bo));
        assert_eq!(s.validity(bo + 5), (bo, Instant::MAX));
        let bo_at = |at| {
            ask(&s, "user:bo", &[], "a/b/read", false, "/x", at)
                .unwrap()
                .allowed
        };
        assert!(!bo_at(bo - 1) && bo_at(bo) && bo_at(Instant::MAX - 1));
        let d = ask(&s, "user:ana", &[], "a/b/read", false, "/x", start).unwrap();
        assert_eq!(why(&d), "Reader timed /x user:ana");
    }

    const DENIES: &str = r#"
version: 1
roles:
  - name: All
    actions: ["*"]
    dataActions: ["*"]
groups:
  - id: "group:ops"
    members: ["user:ana", "user:bo", "device:d1"]
assignments:
  - { id: ops, principal: "group:ops", role: All, scope: / }
  # Numbers /x/y before /x.
  - { principal: "user:zz", role: All, scope: /x/y }
denyAssignments:
  - name: first-higher
    principals: ["group:ops"]
    excludePrincipals: ["user:bo"]
    actions: ["a/b/delete"]
    scope: /x
  - name: second-deeper
    principals: ["user:*"]
    actions: ["a/*/delete"]
    notActions: ["a/keep/delete"]
    scope: /x/y
  - name: data-only
    principals: ["*"]
    dataActions: ["d/write"]
    scope: /
"#;

    /// Of the deny assignments that apply, the first in policy order wins, wherever its
    /// scope is; exclusions, type selectors, `notActions` and planes narrow a deny.
    #[test]
    fn deny_assignments_apply_by_principal_action_plane_and_scope() {
        let s = snapshot(DENIES);
        assert_eq!(
            why(&check(&s, "user:ana", "a/b/delete", "/x/y/z")),
            "deny first-higher"
        );
        assert!(!check(&s, "user:ana", "a/b/delete", "/x/y/z").allowed);
        // Excluded from the first, still a user for the second.
        assert_eq!(
            why(&check(&s, "user:bo", "a/b/delete", "/x/y")),
            "deny second-deeper"
        );
        // Above the second's scope: the exclusion holds.
        assert_eq!(
            why(&check(&s, "user:bo", "a/b/delete", "/x")),
            "All ops / group:ops"
        );
        // A device is no user, but is in the group.
        assert_eq!(
            why(&check(&s, "device:d1", "a/c/delete", "/x/y")),
            "All ops / group:ops"
        );
        assert_eq!(
            why(&check(&s, "device:d1", "a/b/delete", "/x")),
            "deny first-higher"
        );
        // `notActions` takes an action out of a deny.
        assert_eq!(
            why(&check(&s, "user:ana", "a/keep/delete", "/x/y")),
            "All ops / group:ops"
        );
        assert_eq!(
            why(&check(&s, "user:ana", "a/c/delete", "/x/y")),
            "deny second-deeper"
        );
        // A data-action deny leaves the control plane alone.
        assert!(check(&s, "user:ana", "d/write", "/x").allowed);
        let data = ask(&s, "user:ana", &[], "d/write", true, "/x", at()).unwrap();
        assert_eq!(why(&data), "deny data-only");
        // Outside every deny's scope.
        assert!(check(&s, "user:ana", "a/b/delete", "/z").allowed);
        // Unknown principals are in no group: nothing grants, denies or not.
        assert_eq!(why(&check(&s, "user:zed", "a/b/read", "/x")), "noGrant");
    }

    /// Of a subject's grants at the ancestors, the first in policy order, on a short row
    /// (merged with the ancestors) and on a long one (searched per ancestor).
    #[test]
    fn the_first_grant_in_policy_order_is_named_on_short_and_long_rows() {
        for filler in [0, 80] {
            let mut yaml = String::from(
                "version: 1\nroles:\n  - {name: R, actions: [a/b/read]}\n  - {name: W, actions: [a/b/write]}\nassignments:\n",
            );
            yaml.push_str("  - {id: deep, principal: 'user:ana', role: R, scope: /p/q/r}\n");
            for i in 0..filler {
                yaml.push_str(&format!(
                    "  - {{id: f{i}, principal: 'user:ana', role: W, scope: /f/{i}}}\n"
                ));
            }
            yaml.push_str("  - {id: top, principal: 'user:ana', role: R, scope: /p}\n");
            yaml.push_str("  - {id: mid, principal: 'user:ana', role: R, scope: /P/Q}\n");
            yaml.push_str("  - {id: other, principal: 'user:bo', role: R, scope: /p/q/r/s}\n");
            let s = snapshot(&yaml);
            let name = |scope| why(&check(&s, "user:ana", "a/b/read", scope));
            assert_eq!(name("/p/q/r/s"), "R deep /p/q/r user:ana", "{filler}");
            assert_eq!(name("/p/q/x"), "R top /p user:ana", "{filler}");
            assert_eq!(name("/p/Q"), "R top /p user:ana", "{filler}");
            assert_eq!(name("/p"), "R top /p user:ana", "{filler}");
            assert_eq!(name("/"), "noGrant", "{filler}");
            assert_eq!(name("/q"), "noGrant", "{filler}");
            assert_eq!(name("/f/3"), "noGrant", "{filler}");
            if filler > 0 {
                assert_eq!(
                    why(&check(&s, "user:ana", "a/b/write", "/f/79/x")),
                    "W f79 /f/79 user:ana"
                );
                assert_eq!(
                    why(&check(&s, "user:ana", "a/b/write", "/f/0")),
                    "W f0 /f/0 user:ana"
                );
            }
            assert_eq!(
                why(&check(&s, "user:bo", "a/b/read", "/p/q/r/s/t")),
                "R other /p/q/r/s user:bo"
            );
            assert_eq!(why(&check(&s, "user:bo", "a/b/read", "/p/q/r")), "noGrant");
        }
    }

    const GROUPS: &str = r#"
version: 1
roles:
  - name: R
    actions: [a/b/read]
groups:
  - id: "group:outer"
    members: ["group:inner"]
  - id: "group:inner"
    members: ["user:ana"]
assignments:
  - { principal: "group:outer", role: R, scope: /o }
  - { id: t, principal: "group:token", role: R, scope: /t }
  - { id: self, principal: "user:ana", role: R, scope: /a }
"#;

    /// A policy of 71 roles (two words of role bits) and 141 users: role `R{r}` grants
    /// `x/r{r}/*`, the even ones the catalog's `x/cat/read`, every third the data action
    /// `x/dat/read`; user `u{r}` holds `R{r}` at `/s` (in the file), `v{r}` at `/o` (in
    /// the second document, a store's, ids in key order); `star` holds `Star` (`x/*`, the
    /// control plane only) at `/`.
    fn walk_policy() -> [String; 2] {
        use std::fmt::Write;
        let mut file = String::from(
            "version: 1\nactions:\n  - {name: x/cat/read}\n  - {name: x/dat/read, dataAction: true}\nroles:\n",
        );
        let mut store = String::from("version: 1\nassignments:\n");
        for r in 0..70 {
            let cat = if r % 2 == 0 { ", x/cat/read" } else { "" };
            let data = if r % 3 == 0 { "x/dat/*" } else { "" };
            writeln!(
                file,
                "  - {{name: R{r}, actions: ['x/r{r}/*'{cat}], dataActions: [{data}]}}"
            )
            .unwrap();
            writeln!(
                store,
                "  - {{id: s{r:02}, principal: 'user:v{r}', role: R{r}, scope: /o}}"
            )
            .unwrap();
        }
        // Star grants every control-plane `x/` action, never the catalog's data action.
        file.push_str("  - {name: Star, actions: ['x/*']}\nassignments:\n");
        file.push_str("  - {principal: 'user:star', role: Star, scope: /}\n");
        for r in 0..70 {
            writeln!(
                file,
                "  - {{principal: 'user:u{r}', role: R{r}, scope: /s}}"
            )
            .unwrap();
        }
        [file, store]
    }

    fn compile_pair([file, store]: &[String; 2]) -> Snapshot {
        crate::policy::compile_sources(&[
            crate::policy::SourceDocument::new("p.yaml", file.as_str()),
            crate::policy::SourceDocument::new("store.yaml", store.as_str()),
        ])
        .unwrap()
    }

    /// Whom the walk allows, sorted.
    fn walked(s: &Snapshot, action: &str, data: bool, scope: &str) -> Vec<String> {
        let mut got = Vec::new();
        s.each_allowed_principal(action, data, scope, at(), &|| false, |n| {
            got.push(n.to_owned())
        })
        .unwrap();
        got.sort();
        got
    }

    /// Whom `check` allows among `names`, sorted.
    fn checked<'a>(
        s: &Snapshot,
        names: impl Iterator<Item = &'a str>,
        action: &str,
        data: bool,
        scope: &str,
    ) -> Vec<String> {
        let mut want: Vec<String> = names
            .filter(|n| ask(s, n, &[], action, data, scope, at()).unwrap().allowed)
            .map(str::to_owned)
            .collect();
        want.sort();
        want
    }

    const WALKS: [(&str, bool, &str); 8] = [
        ("x/r67/read", false, "/s"),
        ("x/r3/write", false, "/s/t"),
        ("x/cat/read", false, "/s"),
        ("x/cat/read", true, "/s"),
        ("x/dat/read", true, "/o"),
        ("x/dat/read", false, "/o"),
        ("x/none/read", false, "/s"),
        ("x/r5/read", false, "/elsewhere"),
    ];

    /// WhoCan's walk allows exactly the principals `check` allows: catalog actions in
    /// their plane and the other, pattern-only actions of roles past the 64th, unknown
    /// actions and scopes; with an overlay too, against a fresh compile of its objects.
    #[test]
    fn the_walk_allows_whom_check_allows() {
        let docs = walk_policy();
        let s = compile_pair(&docs);
        let names: Vec<String> = (0..s.principal_count())
            .map(|p| s.principal_name(PrincipalIdx::at(p)).to_owned())
            .collect();
        for (action, data, scope) in WALKS {
            let want = checked(&s, names.iter().map(String::as_str), action, data, scope);
            assert_eq!(
                walked(&s, action, data, scope),
                want,
                "{action} {data} {scope}"
            );
        }
        assert_eq!(
            walked(&s, "x/r67/read", false, "/s"),
            ["user:star", "user:u67"]
        );
        assert_eq!(walked(&s, "x/dat/read", true, "/o").len(), 24);
        assert_eq!(walked(&s, "x/dat/read", false, "/o"), ["user:star"][..0]);
        assert_eq!(walked(&s, "x/none/read", false, "/o"), ["user:star"]);
        assert!(walked(&s, "x/cat/read", false, "/s").contains(&"user:star".to_owned()));

        // An overlay: v67 revoked, w1 (a new principal) granted R67 at /s.
        let base = crate::policy::overlay::OverlayBase::new(&s, 70);
        let grant: crate::policy::document::AssignmentDoc =
            serde_json::from_str(r#"{"id":"s99","principal":"user:w1","role":"R67","scope":"/s"}"#)
                .unwrap();
        let overlay = base
            .apply([("s67", None), ("s99", Some(&grant))], None)
            .unwrap();
        let [file, store] = &docs;
        let store = store.replace(
            "  - {id: s67, principal: 'user:v67', role: R67, scope: /o}\n",
            "",
        ) + "  - {id: s99, principal: 'user:w1', role: R67, scope: /s}\n";
        let fresh = compile_pair(&[file.clone(), store]);
        for (action, data, scope) in WALKS.into_iter().chain([("x/r67/read", false, "/o")]) {
            assert_eq!(
                walked(&overlay, action, data, scope),
                walked(&fresh, action, data, scope),
                "{action} {data} {scope}"
            );
        }
        assert_eq!(
            walked(&overlay, "x/r67/read", false, "/s"),
            ["user:star", "user:u67", "user:w1"]
        );
        // Reasons name the overlay's grant and the base's alike.
        let reason = |who| why(&check(&overlay, who, "x/r67/read", "/s"));
        assert_eq!(reason("user:w1"), "R67 s99 /s user:w1");
        assert_eq!(reason("user:u67"), "R67 - /s user:u67");
    }

    /// The walk asks `stop` once every 64 principals, from the first, and ends when it
    /// says so: what it gave until then is the first 64 principals' answer.
    #[test]
    fn the_walk_asks_to_stop_every_64_principals() {
        let docs = walk_policy();
        let plain = compile_pair(&docs);
        let base = crate::policy::overlay::OverlayBase::new(&plain, 70);
        let overlay = base.apply([], None).unwrap();
        for s in [&plain, &overlay] {
            let names: Vec<&str> = s.each_principal_name().collect();
            assert!(names.len() > 128);
            let want = checked(s, names[..64].iter().copied(), "x/cat/read", false, "/s");
            assert!(!want.is_empty());
            let calls = std::cell::Cell::new(0);
            let mut got = Vec::new();
            s.each_allowed_principal(
                "x/cat/read",
                false,
                "/s",
                at(),
                &|| {
                    calls.set(calls.get() + 1);
                    calls.get() == 2
                },
                |n| got.push(n.to_owned()),
            )
            .unwrap();
            got.sort();
            assert_eq!(got, want, "overlay: {}", s.has_overlay());
            assert_eq!(calls.get(), 2);
        }
    }

    /// Deny assignments are found at scopes past the first 64 (the second word of the
    /// bit set of scopes with denies) and at scopes other than the first.
    #[test]
    fn deny_assignments_apply_at_every_scope_number() {
        use std::fmt::Write;
        let mut text = String::from(
            "version: 1\nroles: [{name: R, actions: ['a/*']}]\nassignments:\n  - {principal: 'user:ana', role: R, scope: /}\n",
        );
        for i in 0..100 {
            writeln!(text, "  - {{principal: 'user:bo', role: R, scope: /s{i}}}").unwrap();
        }
        text.push_str("denyAssignments:\n");
        for i in [5, 70] {
            writeln!(
                text,
                "  - {{name: no-{i}, principals: ['user:ana'], actions: ['a/*'], scope: /s{i}}}"
            )
            .unwrap();
        }
        let s = snapshot(&text);
        for i in 0..100 {
            let reason = why(&check(&s, "user:ana", "a/b", &format!("/s{i}/x")));
            let want = if i == 5 || i == 70 {
                format!("deny no-{i}")
            } else {
                "R - / user:ana".to_owned()
            };
            assert_eq!(reason, want, "/s{i}/x");
        }
    }

    /// Of two grants at different ancestors, the first in policy order wins even when its
    /// scope is numbered after the other's (numbers follow first mention), in a short row
    /// and in a long one.
    #[test]
    fn the_first_grant_in_policy_order_wins_whatever_the_scope_numbers() {
        use std::fmt::Write;
        for extra in [0, 70] {
            let mut text = String::from(
                "version: 1\nroles: [{name: R, actions: ['a/*']}]\nassignments:\n  - {principal: 'user:bo', role: R, scope: /x/y}\n  - {id: first, principal: 'user:ana', role: R, scope: /x}\n  - {id: second, principal: 'user:ana', role: R, scope: /x/y}\n",
            );
            for i in 0..extra {
                writeln!(text, "  - {{principal: 'user:ana', role: R, scope: /o{i}}}").unwrap();
            }
            let s = snapshot(&text);
            assert_eq!(
                why(&check(&s, "user:ana", "a/b", "/x/y/z")),
                "R first /x user:ana",
                "{extra} more"
            );
        }
    }

    /// ListPermissions names, for each allowed action, every grant of every subject at
    /// every ancestor and no other: subject by subject (groups, then the principal, in
    /// index order), each subject's in policy order.
    #[test]
    fn each_permission_lists_every_grant_in_policy_order() {
        let s = snapshot(
            r#"
version: 1
roles:
  - {name: R, actions: ['a/*']}
  - {name: W, actions: ['a/write']}
groups:
  - {id: "group:g", members: ["user:ana"]}
assignments:
  - {principal: 'user:bo', role: R, scope: /x/y}
  - {id: one, principal: 'user:ana', role: R, scope: /x}
  - {id: two, principal: 'group:g', role: W, scope: /x/y}
  - {id: three, principal: 'user:ana', role: R, scope: /x/y}
  - {id: other, principal: 'user:ana', role: R, scope: /z}
  - {id: four, principal: 'group:g', role: R, scope: /}
"#,
        );
        let mut got = Vec::new();
        s.each_permission("user:ana", &[], "/x/y/z", at(), |p| {
            let ids: Vec<String> = p
                .assignments
                .iter()
                .map(|r| match r {
                    Reason::RoleAssignment { assignment_id, .. } => {
                        assignment_id.unwrap_or("-").to_owned()
                    }
                    other => other.kind().to_owned(),
                })
                .collect();
            got.push((p.action.to_owned(), ids));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        let write = got.iter().find(|(a, _)| a == "a/write").map(|(_, ids)| ids);
        assert_eq!(
            write,
            Some(&vec![
                "two".into(),
                "four".into(),
                "one".into(),
                "three".into()
            ]),
            "{got:?}"
        );
    }

    /// A subject's row spans exactly its own assignments, with or without token groups.
    #[test]
    fn subjects_come_with_their_assignment_rows() {
        let s = snapshot(GROUPS);
        let own = |subject: PrincipalIdx| -> Vec<u32> {
            (0..s.assignments.len() as u32)
                .filter(|&i| s.assignments.principal(i) == subject)
                .collect()
        };
        for groups in [vec![], vec!["group:token".to_owned()]] {
            let subjects = s.subjects("user:ana", &groups);
            // ana, inner, outer, and the token's group when given.
            assert_eq!(subjects.len(), 3 + groups.len(), "{groups:?}");
            assert_eq!(subjects.rows().len(), subjects.len());
            for (&subject, &[start, end]) in subjects.iter().zip(subjects.rows()) {
                let held: Vec<u32> = (start..end).collect();
                assert_eq!(held, own(subject), "{subject:?} with {groups:?}");
            }
            // Every subject but inner holds one assignment.
            let held: usize = subjects.rows().iter().map(|r| (r[1] - r[0]) as usize).sum();
            assert_eq!(held, 2 + groups.len(), "{groups:?}");
        }
    }

    /// Groups from the policy nest; groups from a token add their own grants and the
    /// groups that contain them.
    #[test]
    fn policy_and_token_groups_grant() {
        let s = snapshot(GROUPS);
        assert_eq!(
            why(&check(&s, "user:ana", "a/b/read", "/o/1")),
            "R - /o group:outer"
        );
        assert_eq!(why(&check(&s, "user:ana", "a/b/read", "/t")), "noGrant");
        assert_eq!(
            why(&check(&s, "user:ana", "a/b/read", "/a")),
            "R self /a user:ana"
        );
        let token = |principal, group: &str, scope| {
            let groups = [group.to_owned()];
            ask(&s, principal, &groups, "a/b/read", false, scope, at())
                .map(|d| why(&d))
                .map_err(|e| matches!(e, RequestError::Group(..)))
        };
        assert_eq!(
            token("user:ana", "group:token", "/t"),
            Ok("R t /t group:token".into())
        );
        assert_eq!(
            token("user:ana", "group:token", "/a"),
            Ok("R self /a user:ana".into())
        );
        assert_eq!(
            token("user:zed", "group:inner", "/o"),
            Ok("R - /o group:outer".into())
        );
        assert_eq!(token("user:zed", "group:token", "/o"), Ok("noGrant".into()));
        assert_eq!(token("user:ana", "user:bo", "/t"), Err(true));
    }

    /// A request's principal, groups, action and scope are validated in that order unless
    /// the policy knows them; a scope the policy does not know finds its longest known
    /// prefix.
    #[test]
    fn requests_are_validated_in_order_and_unknown_scopes_find_their_prefix() {
        let s = snapshot(GROUPS);
        let err = |principal, action, scope| {
            ask(&s, principal, &[], action, false, scope, at()).map(|d| why(&d))
        };
        assert!(matches!(
            err("ana", "a/*", "x"),
            Err(RequestError::Principal(..))
        ));
        assert!(matches!(
            err("user:ana", "a/*", "x"),
            Err(RequestError::Action(..))
        ));
        assert!(matches!(
            err("user:ana", "a b", "/a"),
            Err(RequestError::Action(..))
        ));
        assert!(matches!(
            err("user:ana", "a/b/read", "x"),
            Err(RequestError::Scope(..))
        ));
        assert!(matches!(
            err("user:ana", "a/b/read", "//"),
            Err(RequestError::Scope(..))
        ));
        assert!(matches!(
            err("user:ana", "a/b/read", "/a//b"),
            Err(RequestError::Scope(..))
        ));
        assert_eq!(
            err("user:ana", "A/B/READ", "/A/x/"),
            Ok("R self /a user:ana".into())
        );
        assert_eq!(
            err("user:ana", "a/b/read", "/a/"),
            Ok("R self /a user:ana".into())
        );
        assert_eq!(err("user:new", "a/b/read", "/a"), Ok("noGrant".into()));
        assert_eq!(err("user:ana", "a/b/write", "/a"), Ok("noGrant".into()));
        // The token's groups come after the principal and before the action and scope.
        let bad_group = ["user:bob".to_owned()];
        let with =
            |principal, action, scope| ask(&s, principal, &bad_group, action, false, scope, at());
        assert!(matches!(
            with("ana", "a b", "x"),
            Err(RequestError::Principal(..))
        ));
        assert!(matches!(
            with("user:ana", "a b", "x"),
            Err(RequestError::Group(..))
        ));
        assert!(matches!(
            with("user:ana", "a/b/read", "/a"),
            Err(RequestError::Group(..))
        ));
    }

    const PLANES: &str = r#"
version: 1
actions:
  - { name: d/telemetry/read, dataAction: true }
  - { name: c/things/read, implies: [c/things/list] }
  - { name: c/things/list }
roles:
  - name: Everything
    actions: ["*"]
    dataActions: ["*"]
  - name: Implied
    actions: [c/things/read]
  - name: Data
    dataActions: [d/*]
assignments:
  - { id: e, principal: "user:ana", role: Everything, scope: / }
  - { id: i, principal: "user:bo", role: Implied, scope: / }
  - { id: d, principal: "user:cy", role: Data, scope: / }
"#;

    /// A catalog action is granted only in its own plane; an action the catalog implies is
    /// granted with the one that implies it; roles are found by name in any case.
    #[test]
    fn planes_and_implied_actions() {
        let s = snapshot(PLANES);
        let allowed = |p, action, data| ask(&s, p, &[], action, data, "/s", at()).unwrap().allowed;
        assert!(allowed("user:ana", "d/telemetry/read", true));
        assert!(!allowed("user:ana", "d/telemetry/read", false));
        assert!(allowed("user:ana", "c/things/read", false));
        assert!(!allowed("user:ana", "c/things/read", true));
        // Outside the catalog, both planes.
        assert!(allowed("user:ana", "x/y/z", false) && allowed("user:ana", "x/y/z", true));
        assert!(allowed("user:bo", "c/things/list", false));
        assert!(allowed("user:bo", "C/Things/List", false));
        assert!(!allowed("user:bo", "c/things/list", true));
        assert!(!allowed("user:bo", "c/things/write", false));
        assert!(allowed("user:cy", "d/telemetry/read", true));
        assert!(allowed("user:cy", "d/other", true));
        assert!(!allowed("user:cy", "d/other", false));
        assert_eq!(s.role("everything").map(|r| &*r.name), Some("Everything"));
        assert!(s.role("nobody").is_none());
        assert_eq!(s.roles().len(), 3);
        assert_eq!(s.catalog().len(), 3);
        let direct = s.role("Implied").unwrap();
        assert!(direct.grants("c/things/list", false));
        assert!(!direct.grants_directly("c/things/list", false));
        assert!(s.role_grants(direct, "c/things/read", false));
        assert!(!s.role_grants(direct, "c/things/read", true));
        // In its plane, an action the role does not grant stays refused.
        assert!(!s.role_grants(direct, "z/unrelated/read", false));
        // A catalog data action is of the other plane for a control-plane question.
        assert!(s.other_plane("d/telemetry/read", false));
        assert!(!s.other_plane("d/telemetry/read", true));
        assert!(!s.other_plane("z/unrelated/read", false));
    }

    #[test]
    fn a_verdict_is_allowed_only_for_a_grant() {
        assert!(Verdict::Grant { assignment: 0 }.allowed());
        assert!(!Verdict::Deny { deny: 0 }.allowed());
        assert!(!Verdict::NoGrant.allowed());
        assert_eq!(
            Reason::KINDS,
            [
                Reason::RoleAssignment {
                    role: "",
                    assignment_id: None,
                    scope: "",
                    via: ""
                }
                .kind(),
                Reason::Public.kind(),
                Reason::DenyAssignment {
                    deny_assignment: ""
                }
                .kind(),
                Reason::NoGrant.kind(),
                Reason::NoRoute.kind(),
                Reason::Malformed {
                    message: String::new()
                }
                .kind(),
                Reason::NoIdentity.kind(),
            ]
        );
    }
}
