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

/// Decodes one key (relative to the prefix) and its value. `Ok(None)`: a key of the store's
/// own (`meta/...`), not policy.
pub fn decode(key: &[u8], value: &[u8], max_bytes: usize) -> Result<Option<Object>, String> {
    let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_string())?;
    if key.starts_with(META) {
        return Ok(None);
    }
    let Some((kind, id)) = key.split_once('/') else {
        return Err(
            "the key is not KIND/ID (KIND: assignments, roles, groups, denyAssignments)".into(),
        );
    };
    let Some(kind) = Kind::parse(kind) else {
        return Err(format!(
            "unknown kind `{}` (expected assignments, roles, groups or denyAssignments)",
            escape(kind)
        ));
    };
    if id.is_empty() {
        return Err("the key's ID is empty".into());
    }
    if value.len() > max_bytes {
        return Err(format!(
            "the value is {} bytes, over the limit of {max_bytes}",
            value.len()
        ));
    }
    let object = parse_object(kind, value)?;
    let matches = match &object {
        Object::Role(r) => r.id.as_deref() == Some(id) || (r.id.is_none() && r.name == id),
        other => other.id() == Some(id),
    };
    if !matches {
        return Err(format!(
            "the key's ID `{}` is not the object's {} (`{}`)",
            escape(id),
            match kind {
                Kind::Roles => "id (or, without one, name)",
                Kind::DenyAssignments => "name",
                _ => "id",
            },
            escape(object.id().unwrap_or(""))
        ));
    }
    Ok(Some(object))
}

/// Parses the JSON of one object of `kind` (unknown keys are errors).
pub fn parse_object(kind: Kind, value: &[u8]) -> Result<Object, String> {
    /// The plain parse first (a million objects are read at start-up); only a value it
    /// refuses is parsed again to name the place of the problem.
    fn parse<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, String> {
        if let Ok(parsed) = serde_json::from_slice(value) {
            return Ok(parsed);
        }
        let mut de = serde_json::Deserializer::from_slice(value);
        let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            crate::policy::syntax::escape_controls(&if path == "." {
                format!("invalid JSON: {inner}")
            } else {
                format!("invalid JSON at `{path}`: {inner}")
            })
            .into_owned()
        })?;
        de.end()
            .map_err(|e| format!("invalid JSON: {e}"))
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
pub type Objects = BTreeMap<String, Result<Object, String>>;

/// The store's objects as one policy document (in key order), or the keys that could not
/// be decoded.
pub fn document(objects: &Objects) -> Result<Document, Vec<(String, String)>> {
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
    for (key, object) in objects {
        match object {
            Ok(Object::Assignment(a)) => doc.assignments.push(a.clone()),
            Ok(Object::Role(r)) => doc.roles.push(r.clone()),
            Ok(Object::Group(g)) => doc.groups.push(g.clone()),
            Ok(Object::DenyAssignment(d)) => doc.deny_assignments.push(d.clone()),
            Err(e) => bad.push((key.clone(), e.clone())),
        }
    }
    if bad.is_empty() { Ok(doc) } else { Err(bad) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_assignment_whose_key_is_its_id() {
        let value = br#"{"principal":"user:a","role":"Reader","scope":"/s","id":"a-1"}"#;
        let Ok(Some(Object::Assignment(a))) = decode(b"assignments/a-1", value, 1024) else {
            panic!("not decoded");
        };
        assert_eq!(a.principal, "user:a");
        assert!(
            decode(b"assignments/a-2", value, 1024)
                .unwrap_err()
                .contains("not the object's id")
        );
        assert!(
            decode(b"assignments/a-1", value, 10)
                .unwrap_err()
                .contains("over the limit")
        );
        assert!(
            decode(b"widgets/a-1", value, 1024)
                .unwrap_err()
                .contains("unknown kind")
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
        assert!(err.contains("notActions"), "{err}");
        assert!(
            decode(b"groups/g", b"{not json", 1024)
                .unwrap_err()
                .contains("invalid JSON")
        );
    }

    #[test]
    fn a_role_is_keyed_by_its_id_or_else_its_name() {
        let with_id = br#"{"name":"Reader","id":"r-1"}"#;
        assert!(decode(b"roles/r-1", with_id, 1024).is_ok());
        assert!(decode(b"roles/Reader", with_id, 1024).is_err());
        assert!(decode(b"roles/Reader", br#"{"name":"Reader"}"#, 1024).is_ok());
    }
}
