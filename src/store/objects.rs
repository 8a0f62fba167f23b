//! Store objects (SPEC §9): one section-2 object per key, `PREFIX + KIND + "/" + ID`, the
//! value the object's JSON. Decoding checks the key's shape, the size limit, the JSON
//! (unknown keys are errors, as in files) and that the key's ID is the object's own.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::policy::document::{AssignmentDoc, DenyAssignmentDoc, Document, GroupDoc, RoleDoc};
use crate::policy::syntax::escape;

/// Keys under `PREFIX + "meta/"` are the store's own (the admin write marker), not policy.
pub const META: &str = "meta/";

/// The largest value accepted for one object, by default (1 MiB; etcd's own request limit
/// is 1.5 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The kinds of object the store holds, in their key spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Assignments,
    Roles,
    Groups,
    DenyAssignments,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Assignments,
        Kind::Roles,
        Kind::Groups,
        Kind::DenyAssignments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Assignments => "assignments",
            Kind::Roles => "roles",
            Kind::Groups => "groups",
            Kind::DenyAssignments => "denyAssignments",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One object of the store.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Object {
    Assignment(AssignmentDoc),
    Role(RoleDoc),
    Group(GroupDoc),
    DenyAssignment(DenyAssignmentDoc),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Assignment(_) => Kind::Assignments,
            Object::Role(_) => Kind::Roles,
            Object::Group(_) => Kind::Groups,
            Object::DenyAssignment(_) => Kind::DenyAssignments,
        }
    }

    /// The ID the object is stored under: an assignment's `id`, a role's `id` (else its
    /// `name`), a group's `id`, a deny assignment's `name`.
    pub fn id(&self) -> Option<&str> {
        match self {
            Object::Assignment(a) => a.id.as_deref(),
            Object::Role(r) => Some(r.id.as_deref().unwrap_or(&r.name)),
            Object::Group(g) => Some(&g.id),
            Object::DenyAssignment(d) => Some(&d.name),
        }
    }

    /// The key relative to the prefix.
    pub fn key(&self) -> Option<String> {
        self.id().map(|id| format!("{}/{id}", self.kind().as_str()))
    }

    /// The value stored: the object's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A key or value under the prefix that is not a policy object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("the key is not UTF-8")]
    KeyNotUtf8,
    #[error("the key is not KIND/ID (KIND: assignments, roles, groups, denyAssignments)")]
    KeyShape,
    #[error(
        "unknown kind `{}` (expected assignments, roles, groups or denyAssignments)",
        escape(.kind)
    )]
    UnknownKind { kind: String },
    #[error("the key's ID is empty")]
    EmptyId,
    #[error("the value is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The value is not the JSON of the kind: where (`None`: at the top, or after the
    /// value) and the parser's reason, shown with control characters escaped.
    #[error("{}", json_message(.path.as_deref(), .reason))]
    InvalidJson {
        path: Option<String>,
        reason: String,
    },
    /// The key's ID names another object than the value (`field`: which field of the
    /// object the ID is).
    #[error(
        "the key's ID `{}` is not the object's {field} (`{}`)",
        escape(.id),
        escape(.object_id)
    )]
    IdMismatch {
        id: String,
        field: &'static str,
        object_id: String,
    },
}

fn json_message(path: Option<&str>, reason: &str) -> String {
    let message = match path {
        None => format!("invalid JSON: {reason}"),
        Some(path) => format!("invalid JSON at `{path}`: {reason}"),
    };
    crate::policy::syntax::escape_controls(&message).into_owned()
}

/// Decodes one key (relative to the prefix) and its value. `Ok(None)`: a key of the store's
/// own (`meta/...`), not policy.
pub fn decode(key: &[u8], value: &[u8], max_bytes: usize) -> Result<Option<Object>, ObjectError> {
    let key = std::str::from_utf8(key).map_err(|_| ObjectError::KeyNotUtf8)?;
    if key.starts_with(META) {
        return Ok(None);
    }
    let Some((kind, id)) = key.split_once('/') else {
        return Err(ObjectError::KeyShape);
    };
    let Some(kind) = Kind::parse(kind) else {
        return Err(ObjectError::UnknownKind { kind: kind.into() });
    };
    if id.is_empty() {
        return Err(ObjectError::EmptyId);
    }
    if value.len() > max_bytes {
        return Err(ObjectError::TooLarge {
            size: value.len(),
            limit: max_bytes,
        });
    }
    let object = parse_object(kind, value)?;
    let matches = match &object {
        Object::Role(r) => r.id.as_deref() == Some(id) || (r.id.is_none() && r.name == id),
        other => other.id() == Some(id),
    };
    if !matches {
        return Err(ObjectError::IdMismatch {
            id: id.into(),
            field: match kind {
                Kind::Roles => "id (or, without one, name)",
                Kind::DenyAssignments => "name",
                _ => "id",
            },
            object_id: object.id().unwrap_or("").into(),
        });
    }
    Ok(Some(object))
}

/// Parses the JSON of one object of `kind` (unknown keys are errors).
pub fn parse_object(kind: Kind, value: &[u8]) -> Result<Object, ObjectError> {
    /// The plain parse first (a million objects are read at start-up); only a value it
    /// refuses is parsed again to name the place of the problem.
    fn parse<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, ObjectError> {
        if let Ok(parsed) = serde_json::from_slice(value) {
            return Ok(parsed);
        }
        let mut de = serde_json::Deserializer::from_slice(value);
        let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            ObjectError::InvalidJson {
                path: (path != ".").then_some(path),
                reason: e.into_inner().to_string(),
            }
        })?;
        de.end()
            .map_err(|e| ObjectError::InvalidJson {
                path: None,
                reason: e.to_string(),
            })
            .map(|()| parsed)
    }
    Ok(match kind {
        Kind::Assignments => Object::Assignment(parse(value)?),
        Kind::Roles => Object::Role(parse(value)?),
        Kind::Groups => Object::Group(parse(value)?),
        Kind::DenyAssignments => Object::DenyAssignment(parse(value)?),
    })
}

/// What the store holds: every key under the prefix (relative), decoded or not.
pub type Objects = BTreeMap<String, Result<Object, ObjectError>>;

/// The store's objects as one policy document (in key order), or the keys that could not
/// be decoded.
pub fn document(objects: &Objects) -> Result<Document, Vec<(String, ObjectError)>> {
    let mut doc = Document {
        version: Some(1),
        ..Document::default()
    };
    // Sized first: a million assignments are not copied again and again as the list grows.
    let count = |kind: Kind| {
        let prefix = kind.as_str();
        objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .count()
    };
    doc.assignments.reserve(count(Kind::Assignments));
    let mut bad = Vec::new();
    copy_into(&mut doc, &mut bad, objects, None, usize::MAX);
    if bad.is_empty() { Ok(doc) } else { Err(bad) }
}

/// Copies into `doc` at most `limit` objects, in key order, from the first key past
/// `after` (from the first key when `None`); those that could not be decoded go to `bad`.
/// Returns the last key copied when more objects follow it, so that a caller can copy a
/// large store a piece at a time.
pub fn copy_into(
    doc: &mut Document,
    bad: &mut Vec<(String, ObjectError)>,
    objects: &Objects,
    after: Option<&str>,
    limit: usize,
) -> Option<String> {
    let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let mut range = objects.range::<str, _>((from, std::ops::Bound::Unbounded));
    let mut last = None;
    for (key, object) in range.by_ref().take(limit) {
        match object {
            Ok(Object::Assignment(a)) => doc.assignments.push(a.clone()),
            Ok(Object::Role(r)) => doc.roles.push(r.clone()),
            Ok(Object::Group(g)) => doc.groups.push(g.clone()),
            Ok(Object::DenyAssignment(d)) => doc.deny_assignments.push(d.clone()),
            Err(e) => bad.push((key.clone(), e.clone())),
        }
        last = Some(key);
    }
    if range.next().is_some() {
        last.cloned()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(key: &[u8], value: &[u8], max: usize) -> Option<ObjectError> {
        decode(key, value, max).err()
    }

    #[test]
    fn decodes_an_assignment_whose_key_is_its_id() {
        let value = br#"{"principal":"user:a","role":"Reader","scope":"/s","id":"a-1"}"#;
        let Ok(Some(Object::Assignment(a))) = decode(b"assignments/a-1", value, 1024) else {
            panic!("not decoded");
        };
        assert_eq!(a.principal, "user:a");
        assert_eq!(
            err(b"assignments/a-2", value, 1024),
            Some(ObjectError::IdMismatch {
                id: "a-2".into(),
                field: "id",
                object_id: "a-1".into()
            })
        );
        assert_eq!(
            err(b"assignments/a-1", value, 10),
            Some(ObjectError::TooLarge {
                size: value.len(),
                limit: 10
            })
        );
        assert_eq!(
            err(b"widgets/a-1", value, 1024),
            Some(ObjectError::UnknownKind {
                kind: "widgets".into()
            })
        );
        assert_eq!(err(b"\xff/a", value, 1024), Some(ObjectError::KeyNotUtf8));
        assert_eq!(
            err(b"assignments", value, 1024),
            Some(ObjectError::KeyShape)
        );
        assert_eq!(
            err(b"assignments/", value, 1024),
            Some(ObjectError::EmptyId)
        );
        assert_eq!(
            err(b"assignments/a-2", value, 1024).unwrap().to_string(),
            "the key's ID `a-2` is not the object's id (`a-1`)"
        );
        assert!(decode(b"meta/write", b"x", 1024).unwrap().is_none());
    }

    #[test]
    fn refuses_unknown_keys_and_malformed_json() {
        let err = decode(
            b"assignments/a-1",
            br#"{"principal":"user:a","role":"R","scope":"/","id":"a-1","notActions":[]}"#,
            1024,
        )
        .unwrap_err();
        let ObjectError::InvalidJson { path, reason } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path.as_deref(), Some("notActions"));
        assert!(reason.contains("unknown field"), "{err}");
        let err = decode(b"groups/g", br#"{"id":"g","members":[1]}"#, 1024).unwrap_err();
        assert!(
            matches!(&err, ObjectError::InvalidJson { path: Some(p), .. } if p == "members[0]"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("invalid JSON at `members[0]`: "),
            "{err}"
        );
        let err = decode(b"groups/g", b"{not json", 1024).unwrap_err();
        assert!(matches!(err, ObjectError::InvalidJson { .. }), "{err:?}");
    }

    #[test]
    fn a_role_is_keyed_by_its_id_or_else_its_name() {
        let with_id = br#"{"name":"Reader","id":"r-1"}"#;
        assert!(decode(b"roles/r-1", with_id, 1024).is_ok());
        assert!(decode(b"roles/Reader", with_id, 1024).is_err());
        assert!(decode(b"roles/Reader", br#"{"name":"Reader"}"#, 1024).is_ok());
    }
}
