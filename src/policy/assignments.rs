//! The role assignments of a compiled policy: one [`AssignmentTable`], one row per
//! assignment, with its invariants kept by the type.
//!
//! The table stores columns (a record, a key, a policy order, an id, a respelled scope),
//! not rows of structs: a check reads only the 4-byte keys of a principal's row, and the
//! 16-byte record only for a candidate whose key cannot answer. Every column is parallel
//! to the others and only this module builds them, so adding an attribute means adding a
//! column here and an accessor.

use super::index::{PrincipalIdx, ScopeIdx, pos};
use super::snapshot::{Assignment, FastMap, IdText, KeyLayout};

/// An assignment as validated, before layout: its record (whose `id_end` is not set yet)
/// and its scope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingAssignment {
    pub assignment: Assignment,
    pub scope: ScopeIdx,
}

impl AsRef<PendingAssignment> for PendingAssignment {
    fn as_ref(&self) -> &PendingAssignment {
        self
    }
}

/// Every assignment of a policy, grouped by principal (`principal_rows` of the snapshot
/// gives each principal's range); within a principal sorted by scope, then by policy
/// order. Positions (`u32`) index every column.
#[derive(Debug, Default)]
pub(crate) struct AssignmentTable {
    /// Role, window, principal and where the id ends.
    records: Vec<Assignment>,
    /// The scope of each assignment (high bits) and, when it is always active and the
    /// role fits, its role (the low bits of the [`KeyLayout`]; all ones when the record
    /// must be read), in 4 bytes: a principal's row is contiguous and sorted by scope, so a
    /// probe for one scope reads a cache line or two, and a candidate whose role does not
    /// grant the action is rejected without its record.
    keys: Vec<u32>,
    layout: KeyLayout,
    /// The policy (load) order of each assignment: among the grants of a subject, the
    /// first in this order is reported.
    order: Vec<u32>,
    ids: IdText,
    /// The scope of each assignment that spells it otherwise than the scope's first mention
    /// in the policy (usually none), so that a reason shows the assignment's own spelling.
    spellings: FastMap<u32, Box<str>>,
}

impl AssignmentTable {
    /// Lays out `pending` (in policy order, positions checked against
    /// [`super::index::MAX_ITEMS`]) for `principals` principals, `scopes` scopes and
    /// `roles` roles. `ids` holds the ids in policy order, `id_ends[n]` ending that of
    /// pending assignment `n`; `respelled` maps a pending assignment to its own spelling of
    /// the scope. Returns the table and where each principal's row starts (one entry more
    /// than principals).
    pub(crate) fn build<P: AsRef<PendingAssignment>>(
        pending: &[P],
        ids: &IdText,
        id_ends: &[u32],
        mut respelled: FastMap<usize, Box<str>>,
        [principals, scopes, roles]: [usize; 3],
    ) -> (Self, Vec<u32>) {
        // Grouped by principal (a counting sort, which keeps policy order), then each
        // principal's row sorted by scope, ties in policy order.
        let mut rows = vec![0u32; principals + 1];
        for p in pending.iter().map(AsRef::as_ref) {
            rows[p.assignment.principal.index() + 1] += 1;
        }
        for i in 1..rows.len() {
            rows[i] += rows[i - 1];
        }
        let mut slots: Vec<(ScopeIdx, u32)> = vec![(ScopeIdx::default(), 0); pending.len()];
        {
            let mut cursor = rows.clone();
            for (n, p) in pending.iter().map(AsRef::as_ref).enumerate() {
                let c = &mut cursor[p.assignment.principal.index()];
                slots[*c as usize] = (p.scope, pos(n));
                *c += 1;
            }
        }
        for w in rows.windows(2) {
            slots[w[0] as usize..w[1] as usize].sort_unstable();
        }
        // Ids laid out in the order of the assignments, each record holding where its id
        // ends.
        let mut table = Self {
            records: Vec::with_capacity(slots.len()),
            keys: Vec::with_capacity(slots.len()),
            layout: KeyLayout::new(scopes, roles),
            order: Vec::with_capacity(slots.len()),
            ids: IdText::with_capacity(ids.len()),
            spellings: FastMap::default(),
        };
        for (i, &(scope, n)) in slots.iter().enumerate() {
            let n = n as usize;
            if !respelled.is_empty()
                && let Some(written) = respelled.remove(&n)
            {
                table.spellings.insert(pos(i), written);
            }
            let start = n.checked_sub(1).map_or(0, |m| id_ends[m]);
            let mut a = pending[n].as_ref().assignment;
            a.id_end = table
                .ids
                .push(i, ids.get(n, start, id_ends[n]))
                .unwrap_or(0);
            table.keys.push(table.layout.key(scope, &a));
            table.order.push(pos(n));
            table.records.push(a);
        }
        (table, rows)
    }

    /// How many assignments the table holds.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// The record at position `i`.
    #[inline]
    pub(crate) fn record(&self, i: u32) -> &Assignment {
        &self.records[i as usize]
    }

    /// The principal holding the assignment at position `i`.
    #[inline]
    pub(crate) fn principal(&self, i: u32) -> PrincipalIdx {
        self.records[i as usize].principal
    }

    /// The keys of the positions `row[0]..row[1]` (empty when out of range).
    #[inline]
    pub(crate) fn keys(&self, row: [u32; 2]) -> &[u32] {
        self.keys
            .get(row[0] as usize..row[1] as usize)
            .unwrap_or_default()
    }

    /// The key of the assignment at position `i`.
    #[inline]
    pub(crate) fn key(&self, i: u32) -> Option<u32> {
        self.keys.get(i as usize).copied()
    }

    /// How the keys split their bits.
    #[inline]
    pub(crate) fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// The scope of the assignment at position `i`.
    #[inline]
    pub(crate) fn scope(&self, i: u32) -> ScopeIdx {
        self.layout.scope(self.keys[i as usize])
    }

    /// The policy order of the assignment at position `i`.
    #[inline]
    pub(crate) fn order(&self, i: u32) -> u32 {
        self.order[i as usize]
    }

    /// The policy orders of the positions `row[0]..row[1]`.
    pub(crate) fn orders(&self, row: [u32; 2]) -> &[u32] {
        self.order
            .get(row[0] as usize..row[1] as usize)
            .unwrap_or_default()
    }

    /// Every policy order, by position.
    pub(crate) fn all_orders(&self) -> &[u32] {
        &self.order
    }

    /// The id of the assignment at position `i`, if it has one.
    pub(crate) fn id(&self, i: u32) -> Option<&str> {
        let i = i as usize;
        let start = match i.checked_sub(1) {
            Some(j) => self.records.get(j)?.id_end,
            None => 0,
        };
        let end = self.records.get(i)?.id_end;
        self.ids.get(i, start, end)
    }

    /// The assignment's own spelling of its scope, when it differs from the scope's.
    #[inline]
    pub(crate) fn spelling(&self, i: u32) -> Option<&str> {
        if self.spellings.is_empty() {
            return None;
        }
        self.spellings.get(&i).map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::index::RoleIdx;

    fn pending(principal: u32, scope: u32, role: u32) -> PendingAssignment {
        PendingAssignment {
            assignment: Assignment {
                role: RoleIdx::new(role),
                window: 0,
                principal: PrincipalIdx::new(principal),
                id_end: 0,
            },
            scope: ScopeIdx::new(scope),
        }
    }

    #[test]
    fn rows_are_grouped_by_principal_sorted_by_scope_then_policy_order() {
        // Policy order: n = 0..5.
        let list = [
            pending(1, 2, 0),
            pending(0, 1, 1),
            pending(1, 0, 2),
            pending(1, 2, 3),
            pending(0, 0, 4),
        ];
        let mut ids = IdText::default();
        let names = ["a", "b", "", "d", "e"];
        let mut ends = Vec::new();
        for (n, id) in names.iter().enumerate() {
            ends.push(ids.push(n, (!id.is_empty()).then_some(*id)).unwrap());
        }
        let mut respelled = FastMap::default();
        respelled.insert(3, Box::<str>::from("/Two"));
        let (table, rows) = AssignmentTable::build(&list, &ids, &ends, respelled, [2, 3, 5]);
        assert_eq!(rows, [0, 2, 5]);
        assert_eq!(table.len(), 5);
        // Principal 0: scope 0 (n = 4), scope 1 (n = 1); principal 1: scope 0 (n = 2),
        // then scope 2 in policy order (n = 0, n = 3).
        assert_eq!(table.all_orders(), [4, 1, 2, 0, 3]);
        let scopes: Vec<u32> = (0..5).map(|i| table.scope(i).get()).collect();
        assert_eq!(scopes, [0, 1, 0, 2, 2]);
        let principals: Vec<u32> = (0..5).map(|i| table.principal(i).get()).collect();
        assert_eq!(principals, [0, 0, 1, 1, 1]);
        let ids: Vec<Option<&str>> = (0..5).map(|i| table.id(i)).collect();
        assert_eq!(ids, [Some("e"), Some("b"), None, Some("a"), Some("d")]);
        assert_eq!(table.spelling(4), Some("/Two"));
        assert_eq!(table.spelling(3), None);
        assert_eq!(table.orders([2, 5]), [2, 0, 3]);
        assert_eq!(table.keys([0, 2]).len(), 2);
        assert_eq!(table.record(1).role, RoleIdx::new(1));
        // The ids' text is allocated once, to its size: no slack kept in the snapshot.
        assert_eq!(table.ids.len(), "abde".len());
        assert_eq!(table.ids.capacity(), table.ids.len());
    }
}
