//! Dense indices into a compiled policy and the limits that keep them in 32 bits.
//!
//! Principals, scopes and roles are numbered from 0 in a [`crate::policy::Snapshot`]. Each
//! kind has its own newtype, so passing a scope where a principal is expected does not
//! compile. The newtypes are `#[repr(transparent)]` over `u32`: a slice of them is laid out
//! exactly as a slice of `u32`, so the check path reads the same bytes as before.
//!
//! Every count that becomes a `u32` (an index, a position, an offset) is checked once
//! against [`MAX_ITEMS`] where the count is known: [`check_sizes`] bounds the documents
//! before compilation, and the store's overlay checks what it adds. Past those checks a
//! position always fits, and [`pos`] converts it.

use super::document::Document;
use super::error::{PolicyError, Problem};

/// The most items of one kind (assignments, roles, principals, scopes, ...) a policy may
/// hold. Indices are `u32` and `u32::MAX` is kept free for "none", and a slot stores an
/// index plus one: so one below `u32::MAX`.
pub const MAX_ITEMS: usize = u32::MAX as usize - 1;

macro_rules! index_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) struct $name(u32);

        impl $name {
            /// The index numbered `i`.
            #[inline]
            pub(crate) const fn new(i: u32) -> Self {
                Self(i)
            }

            /// The index at position `i` of a checked count (see [`pos`]).
            #[inline]
            pub(crate) fn at(i: usize) -> Self {
                Self(pos(i))
            }

            /// The index as a number.
            #[inline]
            pub(crate) const fn get(self) -> u32 {
                self.0
            }

            /// The index as a position in a slice.
            #[inline]
            pub(crate) const fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl Position for $name {
            #[inline]
            fn position(self) -> usize {
                self.0 as usize
            }
        }
    };
}

index_type!(
    /// A principal (user, group, service principal, ...) of a policy, by index.
    PrincipalIdx
);
index_type!(
    /// A scope the policy names, by index.
    ScopeIdx
);
index_type!(
    /// A role definition, by index.
    RoleIdx
);

/// Something that names a position in a slice: a plain `u32` or an index newtype.
pub(crate) trait Position: Copy {
    fn position(self) -> usize;
}

impl Position for u32 {
    #[inline]
    fn position(self) -> usize {
        self as usize
    }
}

/// Position `i` of a count already checked against [`MAX_ITEMS`], as a `u32`.
///
/// Every caller converts a position below a count that [`check_sizes`] (or the overlay's
/// own check) bounded, so the conversion is lossless; a debug build asserts it.
#[inline]
pub(crate) fn pos(i: usize) -> u32 {
    debug_assert!(i <= u32::MAX as usize, "position {i} was not checked");
    i as u32
}

/// The sizes of a set of documents that bound every count compilation turns into a
/// `u32`: each is an upper bound of what it names (a principal named twice is counted
/// twice), so that nothing counted after these checks can overflow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub assignments: usize,
    pub roles: usize,
    pub deny_assignments: usize,
    pub catalog_actions: usize,
    /// Principal names in groups, assignments and deny assignments.
    pub principal_mentions: usize,
    /// Scope names in roles, links, assignments, deny assignments and constraints.
    pub scope_mentions: usize,
    /// Actions named by the catalog's `implies`.
    pub implied_actions: usize,
}

impl Sizes {
    /// Counts the items of `docs`.
    pub(crate) fn of(docs: &[(String, Document)]) -> Self {
        let mut s = Self::default();
        for (_, d) in docs {
            s.assignments += d.assignments.len();
            s.roles += d.roles.len();
            s.deny_assignments += d.deny_assignments.len();
            s.catalog_actions += d.actions.len();
            s.implied_actions += d.actions.iter().map(|a| a.implies.len()).sum::<usize>();
            s.principal_mentions += d.assignments.len()
                + d.groups.iter().map(|g| 1 + g.members.len()).sum::<usize>()
                + d.deny_assignments
                    .iter()
                    .map(|x| x.principals.len() + x.exclude_principals.len())
                    .sum::<usize>();
            s.scope_mentions += d.assignments.len()
                + d.deny_assignments.len()
                + d.constraints.len()
                + d.roles
                    .iter()
                    .map(|r| r.assignable_scopes.as_ref().map_or(1, Vec::len))
                    .sum::<usize>()
                + d.scope_links
                    .iter()
                    .map(|l| 1 + l.parents.len())
                    .sum::<usize>();
        }
        s
    }

    /// Each count that exceeds `limit`, named.
    pub(crate) fn over(&self, limit: usize) -> Vec<(&'static str, usize)> {
        [
            ("assignments", self.assignments),
            ("roles", self.roles),
            ("deny assignments", self.deny_assignments),
            ("catalog actions", self.catalog_actions),
            ("principal mentions", self.principal_mentions),
            ("scope mentions", self.scope_mentions),
            ("implied actions", self.implied_actions),
        ]
        .into_iter()
        .filter(|&(_, n)| n > limit)
        .collect()
    }
}

/// Checks that no count of `docs` exceeds `limit` (the policy's is [`MAX_ITEMS`]): one
/// problem per count over it, naming the count and the limit.
pub(crate) fn check_sizes(docs: &[(String, Document)], limit: usize) -> Result<(), PolicyError> {
    let over = Sizes::of(docs).over(limit);
    if over.is_empty() {
        return Ok(());
    }
    let document = docs.first().map_or("", |(n, _)| n.as_str());
    Err(PolicyError {
        problems: over
            .into_iter()
            .map(|(what, n)| {
                Problem::new(
                    document,
                    "policy",
                    format!("{n} {what} exceed the limit of {limit} per policy"),
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_keep_their_number() {
        let s = ScopeIdx::new(7);
        assert_eq!((s.get(), s.index()), (7, 7));
        assert_eq!(PrincipalIdx::at(3), PrincipalIdx::new(3));
        assert!(RoleIdx::new(1) < RoleIdx::new(2));
    }

    #[test]
    fn indices_are_laid_out_as_u32() {
        assert_eq!(size_of::<[ScopeIdx; 4]>(), size_of::<[u32; 4]>());
        assert_eq!(align_of::<PrincipalIdx>(), align_of::<u32>());
    }
}
