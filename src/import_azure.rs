//! `iot-authz import-azure` (SPEC §8): Azure role definitions and role assignments, as `az`
//! and the ARM REST API print them, turned into one policy document.
//!
//! The input is read leniently as to shape, because Azure emits several, and strictly as to
//! meaning: anything the policy cannot express faithfully (an ABAC condition, a principal type
//! without a policy counterpart, a role that cannot be resolved) is an error, never dropped,
//! because dropping it would grant more than Azure does.
//!
//! A file holds a JSON array of objects, a single object, or an ARM list response
//! (`{"value": [...]}`); UTF-8 (with or without a byte order mark) or UTF-16 with a byte order
//! mark (what `az ... > file` writes in Windows PowerShell 5). Each object is classified alone:
//!
//! - a **role definition** has `roleName`: the flat form printed by
//!   `az role definition list|show|create`, or the ARM form with everything under
//!   `properties`. Without `roleName`, an object with `Name` (or `name`) and one of
//!   `Actions`, `NotActions`, `DataActions`, `NotDataActions`, `AssignableScopes`, `IsCustom`,
//!   `permissions` is the input form of `az role definition create` (also what
//!   `Get-AzRoleDefinition | ConvertTo-Json` prints), where `Name` is the role name;
//! - a **role assignment** has `principalId` or `roleDefinitionId`, at the top level
//!   (`az role assignment list`) or under `properties` (ARM).
//!
//! Role definitions map to `roles`: `id` is the GUID (`name`, else the last segment of `id`;
//! in the create form `Id` if given, else none), `name` is `roleName` (`Name`), and the four
//! permission lists are the concatenation of every `permissions[]` entry's lists plus any
//! top-level ones, duplicates removed, order kept. Azure grants the union over entries of
//! "that entry's `actions` minus that entry's `notActions`"; the concatenation grants
//! "all actions minus all notActions", which is the same for the usual single entry and never
//! more for several. A permission entry with a `condition` is an error. Other Azure fields
//! (`type`, `roleType`, `createdOn`, ...) are ignored.
//!
//! Role assignments map to `assignments`: `principalType` `User`, `Group`, `ServicePrincipal`
//! give `user:`, `group:`, `servicePrincipal:` + `principalId`; `scope` is kept as given;
//! `id` is the assignment GUID (`name`, else the last segment of `id`). The role is looked up
//! among the imported definitions by the GUID ending `roleDefinitionId`, else by
//! `roleDefinitionName` (case-insensitively), and written as the imported role's name; if
//! both are given they must agree. A role that is not imported is written as the assignment's
//! `roleDefinitionName`; without one, the assignment is an error. An assignment with an ABAC
//! `condition` is an error.
//!
//! Role names and ids share one case-insensitive key space and must be unique, as must
//! assignment ids; an object that is listed twice identically (say, the built-in roles of two
//! `az role definition list` runs) is kept once.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::policy::document::{AssignmentDoc, Document, RoleDoc};
use crate::policy::syntax::escape;

/// Why Azure input could not be imported. Messages name the file, the object and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is neither UTF-8 nor UTF-16 with a byte order mark.
    #[error("{file}: cannot be read as text: {problem}")]
    Encoding { file: String, problem: &'static str },
    /// The file is not JSON.
    #[error("{file}: invalid JSON: {error}")]
    Json {
        file: String,
        error: serde_json::Error,
    },
    /// The file's top level is neither an array nor an object.
    #[error(
        "{file}: expected a JSON array or object of role definitions and role assignments, found {found}"
    )]
    Shape { file: String, found: &'static str },
    /// An object that is neither a role definition nor a role assignment.
    #[error("{file}: {object}: {problem}")]
    UnknownObject {
        file: String,
        object: String,
        problem: String,
    },
    /// A field is missing or has the wrong type.
    #[error("{file}: {object}: {message}")]
    Invalid {
        file: String,
        object: String,
        message: String,
    },
    /// An ABAC condition (on an assignment or a role permission), which the policy cannot express.
    #[error(
        "{file}: {object}: has the condition `{}`, which iot-authz cannot express; without it the import would grant more than Azure does",
        escape(.condition)
    )]
    Condition {
        file: String,
        object: String,
        condition: String,
    },
    /// A principal type other than `User`, `Group` and `ServicePrincipal`.
    #[error(
        "{file}: {object}: principal type `{}` cannot be imported (only `User`, `Group` and `ServicePrincipal` have a policy counterpart)",
        escape(.principal_type)
    )]
    PrincipalType {
        file: String,
        object: String,
        principal_type: String,
    },
    /// The assignment's role is not imported and the assignment has no `roleDefinitionName`.
    #[error(
        "{file}: {object}: role definition `{}` is not among the imported role definitions and the assignment has no `roleDefinitionName`",
        escape(.role_definition_id)
    )]
    UnknownRole {
        file: String,
        object: String,
        role_definition_id: String,
    },
    /// `roleDefinitionName` and `roleDefinitionId` name different roles.
    #[error(
        "{file}: {object}: `roleDefinitionName` `{}` and `roleDefinitionId` `{}` do not name the same role (the imported role is `{}`)",
        escape(.name),
        escape(.role_definition_id),
        escape(.imported)
    )]
    RoleMismatch {
        file: String,
        object: String,
        name: String,
        role_definition_id: String,
        imported: String,
    },
    /// A role name or id, or an assignment id, used twice by different objects.
    #[error("{file}: {object}: {what} `{}` is already used by {first}", escape(.value))]
    Duplicate {
        file: String,
        object: String,
        /// `role name`, `role id` or `assignment id`.
        what: &'static str,
        value: String,
        /// `file: object` of the first use.
        first: String,
    },
    /// The document could not be rendered as YAML.
    #[error("cannot render the imported policy as YAML: {0}")]
    Yaml(serde_saphyr::SerializeError),
}

/// Imports Azure role definitions and role assignments. `files` holds each input file's name
/// (used in messages) and bytes. Role definitions of every file are read before assignments,
/// so an assignment may refer to a role defined in any file.
pub fn import(files: &[(String, Vec<u8>)]) -> Result<Document, ImportError> {
    let mut parsed = Vec::with_capacity(files.len());
    for (file, bytes) in files {
        let text = decode(bytes).map_err(|problem| ImportError::Encoding {
            file: file.clone(),
            problem,
        })?;
        let Strict(value) = serde_json::from_str(&text).map_err(|error| ImportError::Json {
            file: file.clone(),
            error,
        })?;
        parsed.push((file.as_str(), value));
    }

    let mut definitions = Vec::new();
    let mut assignments = Vec::new();
    for (file, value) in &parsed {
        for (at, object) in objects(file, value)? {
            let item = Item {
                file,
                at,
                fields: Fields::new(object),
            };
            match classify(item.fields) {
                Ok(Kind::RoleDefinition) => definitions.push(item),
                Ok(Kind::RoleAssignment) => assignments.push(item),
                Err(problem) => {
                    return Err(ImportError::UnknownObject {
                        file: item.file.to_string(),
                        object: object_label(&item.at),
                        problem,
                    });
                }
            }
        }
    }

    let mut roles = Roles::default();
    for item in &definitions {
        let (role, object) = role_definition(item)?;
        roles.add(role, item.file, object)?;
    }

    let mut out: Vec<AssignmentDoc> = Vec::new();
    let mut origins: Vec<String> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for item in &assignments {
        let (assignment, object) = role_assignment(item, &roles)?;
        if let Some(id) = &assignment.id {
            if let Some(&first) = ids.get(&id.to_ascii_lowercase()) {
                if same_assignment(&out[first], &assignment) {
                    continue;
                }
                return Err(ImportError::Duplicate {
                    file: item.file.to_string(),
                    object,
                    what: "assignment id",
                    value: id.clone(),
                    first: origins[first].clone(),
                });
            }
            ids.insert(id.to_ascii_lowercase(), out.len());
        }
        origins.push(format!("{}: {object}", item.file));
        out.push(assignment);
    }

    Ok(Document {
        version: Some(1),
        roles: roles.docs,
        assignments: out,
        ..Document::default()
    })
}

/// Validates an imported document on its own when it defines every role its assignments
/// name (otherwise the roles come from elsewhere, such as a role pack, and only the
/// combined policy can be validated). An import that would not load is an error rather
/// than output: for example a role assignable at a management group, assigned at a
/// subscription, which the exported JSON cannot show to be below that group.
pub fn check_self_contained(doc: &Document) -> Result<(), crate::policy::PolicyError> {
    let defined: std::collections::HashSet<String> = doc
        .roles
        .iter()
        .flat_map(|r| std::iter::once(&r.name).chain(r.id.as_ref()))
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if doc
        .assignments
        .iter()
        .any(|a| !defined.contains(&a.role.to_ascii_lowercase()))
    {
        return Ok(());
    }
    crate::policy::compile::compile_documents(&[("imported policy".into(), doc.clone())])
        .map(|_| ())
}

/// Renders an imported document as policy YAML, headed by a comment saying where it came from.
pub fn to_yaml(doc: &Document) -> Result<String, ImportError> {
    let body = serde_saphyr::to_string(doc).map_err(ImportError::Yaml)?;
    Ok(format!(
        "# Generated by `iot-authz import-azure` from Azure role definitions and assignments; review before use.\n{body}"
    ))
}

type Object = Map<String, Value>;

/// One object of an input file: `at` locates it (`[3]`, `value[3]`, or empty for a file that
/// is a single object).
struct Item<'a> {
    file: &'a str,
    at: String,
    fields: Fields<'a>,
}

enum Kind {
    RoleDefinition,
    RoleAssignment,
}

const ROLE_NAME: &[&str] = &["roleName", "RoleName"];
const PRINCIPAL_ID: &[&str] = &["principalId"];
const PRINCIPAL_TYPE: &[&str] = &["principalType"];
const ROLE_DEFINITION_ID: &[&str] = &["roleDefinitionId"];
const ROLE_DEFINITION_NAME: &[&str] = &["roleDefinitionName"];
const SCOPE: &[&str] = &["scope"];
const CONDITION: &[&str] = &["condition", "Condition"];
const DESCRIPTION: &[&str] = &["description", "Description"];
const PERMISSIONS: &[&str] = &["permissions", "Permissions"];
const ASSIGNABLE_SCOPES: &[&str] = &["assignableScopes", "AssignableScopes"];
/// The four permission lists, each with its spellings.
const LISTS: [&[&str]; 4] = [
    &["actions", "Actions"],
    &["notActions", "NotActions"],
    &["dataActions", "DataActions"],
    &["notDataActions", "NotDataActions"],
];
/// Keys that, with `Name`, make an object the input form of `az role definition create`.
const CREATE_FORM_KEYS: &[&str] = &[
    "Actions",
    "NotActions",
    "DataActions",
    "NotDataActions",
    "AssignableScopes",
    "IsCustom",
    "actions",
    "notActions",
    "dataActions",
    "notDataActions",
    "assignableScopes",
    "isCustom",
    "permissions",
    "Permissions",
];

fn classify(f: Fields<'_>) -> Result<Kind, String> {
    let role = f.has(ROLE_NAME);
    let assignment = f.has(PRINCIPAL_ID) || f.has(ROLE_DEFINITION_ID);
    match (role, assignment) {
        (true, false) => Ok(Kind::RoleDefinition),
        (false, true) => Ok(Kind::RoleAssignment),
        (true, true) => Err(
            "has both `roleName` (a role definition) and `principalId` or `roleDefinitionId` (a role assignment)"
                .into(),
        ),
        (false, false) => {
            let named = f.top.get("Name").or_else(|| f.top.get("name"));
            if named.is_some_and(Value::is_string) && CREATE_FORM_KEYS.iter().any(|k| f.top.contains_key(*k)) {
                Ok(Kind::RoleDefinition)
            } else {
                Err(
                    "is neither a role definition (no `roleName`) nor a role assignment (no `principalId` or `roleDefinitionId`)"
                        .into(),
                )
            }
        }
    }
}

/// Reads one role definition; returns it with the label naming it in messages.
fn role_definition(item: &Item<'_>) -> Result<(RoleDoc, String), ImportError> {
    let f = item.fields;
    let top = Fields::flat(f.top);
    let invalid = |name: Option<&str>, message: String| ImportError::Invalid {
        file: item.file.to_string(),
        object: label("role definition", &item.at, name),
        message,
    };

    let (name, id) = match f.str(ROLE_NAME).map_err(|m| invalid(None, m))? {
        Some(name) => {
            let guid = top
                .str(&["name"])
                .map_err(|m| invalid(Some(name), m))?
                .filter(|s| !s.trim().is_empty());
            let id = match guid {
                Some(guid) => Some(guid),
                None => top
                    .str(&["id"])
                    .map_err(|m| invalid(Some(name), m))?
                    .and_then(last_segment),
            };
            (name, id)
        }
        None => {
            let name = f
                .str(&["Name", "name"])
                .map_err(|m| invalid(None, m))?
                .unwrap_or_default();
            let id = f
                .str(&["Id", "id"])
                .map_err(|m| invalid(Some(name), m))?
                .and_then(last_segment);
            (name, id)
        }
    };
    if name.trim().is_empty() {
        return Err(invalid(None, "the role name (`roleName`) is empty".into()));
    }
    let object = label("role definition", &item.at, Some(name));
    let invalid = |message: String| ImportError::Invalid {
        file: item.file.to_string(),
        object: object.clone(),
        message,
    };

    let mut lists: [Vec<String>; 4] = Default::default();
    if let Some((key, permissions)) = f.get(PERMISSIONS).map_err(invalid)? {
        let Value::Array(entries) = permissions else {
            return Err(invalid(format!(
                "`{key}` must be an array, found {}",
                kind(permissions)
            )));
        };
        for (i, entry) in entries.iter().enumerate() {
            let Value::Object(entry) = entry else {
                return Err(invalid(format!(
                    "`{key}[{i}]` must be an object, found {}",
                    kind(entry)
                )));
            };
            let entry = Fields::flat(entry);
            let in_entry = |m: String| invalid(format!("in `{key}[{i}]`: {m}"));
            if let Some(condition) = condition(entry).map_err(in_entry)? {
                return Err(ImportError::Condition {
                    file: item.file.to_string(),
                    object: format!("{object} {key}[{i}]"),
                    condition,
                });
            }
            for (list, keys) in lists.iter_mut().zip(LISTS) {
                if let Some(values) = entry.list(keys).map_err(in_entry)? {
                    extend_unique(list, values);
                }
            }
        }
    }
    for (list, keys) in lists.iter_mut().zip(LISTS) {
        if let Some(values) = f.list(keys).map_err(invalid)? {
            extend_unique(list, values);
        }
    }
    let [actions, not_actions, data_actions, not_data_actions] = lists;

    let description = f
        .str(DESCRIPTION)
        .map_err(invalid)?
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string);
    let assignable_scopes = f
        .list(ASSIGNABLE_SCOPES)
        .map_err(invalid)?
        .map(|scopes| scopes.into_iter().map(str::to_string).collect());

    let role = RoleDoc {
        name: name.to_string(),
        id: id.map(str::to_string),
        description,
        actions,
        not_actions,
        data_actions,
        not_data_actions,
        assignable_scopes,
    };
    Ok((role, object))
}

/// Reads one role assignment; returns it with the label naming it in messages.
fn role_assignment(item: &Item<'_>, roles: &Roles) -> Result<(AssignmentDoc, String), ImportError> {
    let f = item.fields;
    let top = Fields::flat(f.top);
    let file = || item.file.to_string();
    let unnamed = |message: String| ImportError::Invalid {
        file: file(),
        object: label("role assignment", &item.at, None),
        message,
    };

    let guid = top
        .str(&["name"])
        .map_err(unnamed)?
        .filter(|s| !s.trim().is_empty());
    let id = match guid {
        Some(guid) => Some(guid),
        None => top.str(&["id"]).map_err(unnamed)?.and_then(last_segment),
    };
    let object = label("role assignment", &item.at, id);
    let invalid = |message: String| ImportError::Invalid {
        file: file(),
        object: object.clone(),
        message,
    };

    if let Some(condition) = condition(f).map_err(invalid)? {
        return Err(ImportError::Condition {
            file: file(),
            object,
            condition,
        });
    }

    let principal_type = f.required_str(PRINCIPAL_TYPE).map_err(invalid)?;
    let principal_id = f.required_str(PRINCIPAL_ID).map_err(invalid)?;
    let prefix = [
        ("User", "user"),
        ("Group", "group"),
        ("ServicePrincipal", "servicePrincipal"),
    ]
    .into_iter()
    .find(|(azure, _)| azure.eq_ignore_ascii_case(principal_type))
    .map(|(_, prefix)| prefix);
    let Some(prefix) = prefix else {
        return Err(ImportError::PrincipalType {
            file: file(),
            object,
            principal_type: principal_type.to_string(),
        });
    };
    let scope = f.required_str(SCOPE).map_err(invalid)?;

    let role_name = f
        .str(ROLE_DEFINITION_NAME)
        .map_err(invalid)?
        .filter(|s| !s.trim().is_empty());
    let role_definition_id = f
        .str(ROLE_DEFINITION_ID)
        .map_err(invalid)?
        .filter(|s| !s.trim().is_empty());
    let role_guid = role_definition_id.and_then(last_segment);
    let by_guid = role_guid.and_then(|g| roles.ids.get(&g.to_ascii_lowercase()).copied());
    let by_name = role_name.and_then(|n| roles.names.get(&n.to_ascii_lowercase()).copied());
    let role = match by_guid.or(by_name) {
        Some(i) => {
            let imported = &roles.docs[i];
            let name_agrees = role_name.is_none_or(|n| n.eq_ignore_ascii_case(&imported.name));
            let id_agrees = match (role_guid, &imported.id) {
                (Some(guid), Some(id)) => guid.eq_ignore_ascii_case(id),
                _ => true,
            };
            if !(name_agrees && id_agrees) {
                return Err(ImportError::RoleMismatch {
                    file: file(),
                    object,
                    name: role_name.unwrap_or_default().to_string(),
                    role_definition_id: role_definition_id.unwrap_or_default().to_string(),
                    imported: imported.name.clone(),
                });
            }
            imported.name.clone()
        }
        None => match (role_name, role_definition_id) {
            (Some(name), _) => name.to_string(),
            (None, Some(definition)) => {
                return Err(ImportError::UnknownRole {
                    file: file(),
                    object,
                    role_definition_id: definition.to_string(),
                });
            }
            (None, None) => {
                return Err(invalid(
                    "names no role: `roleDefinitionId` and `roleDefinitionName` are both missing"
                        .into(),
                ));
            }
        },
    };

    let assignment = AssignmentDoc {
        principal: format!("{prefix}:{principal_id}"),
        role,
        scope: scope.to_string(),
        id: id.map(str::to_string),
        not_before: None,
        not_after: None,
    };
    Ok((assignment, object))
}

/// The imported role definitions, with their lookups.
#[derive(Default)]
struct Roles {
    docs: Vec<RoleDoc>,
    /// `file: object` of each role.
    origins: Vec<String>,
    /// ASCII-lowercased names and ids together: the policy resolves both in one key space.
    keys: HashMap<String, usize>,
    names: HashMap<String, usize>,
    ids: HashMap<String, usize>,
}

impl Roles {
    fn add(&mut self, role: RoleDoc, file: &str, object: String) -> Result<(), ImportError> {
        let mut keys = vec![("role name", role.name.clone())];
        if let Some(id) = &role.id {
            keys.push(("role id", id.clone()));
        }
        for (what, value) in &keys {
            if let Some(&first) = self.keys.get(&value.to_ascii_lowercase()) {
                if same_role(&self.docs[first], &role) {
                    return Ok(());
                }
                return Err(ImportError::Duplicate {
                    file: file.to_string(),
                    object,
                    what,
                    value: value.clone(),
                    first: self.origins[first].clone(),
                });
            }
        }
        let index = self.docs.len();
        for (_, value) in keys {
            self.keys.insert(value.to_ascii_lowercase(), index);
        }
        self.names.insert(role.name.to_ascii_lowercase(), index);
        if let Some(id) = &role.id {
            self.ids.insert(id.to_ascii_lowercase(), index);
        }
        self.origins.push(format!("{file}: {object}"));
        self.docs.push(role);
        Ok(())
    }
}

fn same_role(a: &RoleDoc, b: &RoleDoc) -> bool {
    a.name == b.name
        && a.id == b.id
        && a.description == b.description
        && a.actions == b.actions
        && a.not_actions == b.not_actions
        && a.data_actions == b.data_actions
        && a.not_data_actions == b.not_data_actions
        && a.assignable_scopes == b.assignable_scopes
}

fn same_assignment(a: &AssignmentDoc, b: &AssignmentDoc) -> bool {
    a.principal == b.principal
        && a.role == b.role
        && a.scope == b.scope
        && a.id == b.id
        && a.not_before == b.not_before
        && a.not_after == b.not_after
}

/// The fields of one object: ARM `properties` (when present) are searched before the top level.
#[derive(Clone, Copy)]
struct Fields<'a> {
    top: &'a Object,
    props: Option<&'a Object>,
}

impl<'a> Fields<'a> {
    fn new(top: &'a Object) -> Self {
        Self {
            top,
            props: top.get("properties").and_then(Value::as_object),
        }
    }

    /// Only the top level (for `name` and `id`, which ARM keeps outside `properties`).
    fn flat(top: &'a Object) -> Self {
        Self { top, props: None }
    }

    /// The non-null value of one field, `keys` being its accepted spellings, with the spelling
    /// found. Two spellings of the same field in one object are an error.
    fn get(&self, keys: &[&'static str]) -> Result<Option<(&'static str, &'a Value)>, String> {
        for map in self.props.into_iter().chain(std::iter::once(self.top)) {
            let mut found: Option<(&'static str, &'a Value)> = None;
            for &key in keys {
                if let Some(value) = map.get(key).filter(|v| !v.is_null()) {
                    if let Some((first, _)) = found {
                        return Err(format!("has both `{first}` and `{key}`"));
                    }
                    found = Some((key, value));
                }
            }
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn has(&self, keys: &[&'static str]) -> bool {
        // Two spellings of a key still show the object's kind; the error comes when reading it.
        self.get(keys).map_or(true, |found| found.is_some())
    }

    fn str(&self, keys: &[&'static str]) -> Result<Option<&'a str>, String> {
        match self.get(keys)? {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s)),
            Some((key, other)) => Err(format!("`{key}` must be a string, found {}", kind(other))),
        }
    }

    fn required_str(&self, keys: &[&'static str]) -> Result<&'a str, String> {
        let first = keys.first().copied().unwrap_or_default();
        match self.str(keys)? {
            None => Err(format!("`{first}` is missing")),
            Some(s) if s.trim().is_empty() => Err(format!("`{first}` is empty")),
            Some(s) => Ok(s),
        }
    }

    fn list(&self, keys: &[&'static str]) -> Result<Option<Vec<&'a str>>, String> {
        let Some((key, value)) = self.get(keys)? else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(format!(
                "`{key}` must be an array of strings, found {}",
                kind(value)
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.as_str()),
                other => Err(format!(
                    "`{key}[{i}]` must be a string, found {}",
                    kind(other)
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// A non-empty `condition`, rendered as text.
fn condition(f: Fields<'_>) -> Result<Option<String>, String> {
    Ok(match f.get(CONDITION)? {
        None => None,
        Some((_, Value::String(s))) if s.trim().is_empty() => None,
        Some((_, Value::String(s))) => Some(s.clone()),
        Some((_, other)) => Some(other.to_string()),
    })
}

/// The objects of one file, each with its location.
fn objects<'a>(file: &str, value: &'a Value) -> Result<Vec<(String, &'a Object)>, ImportError> {
    let element = |at: String, value: &'a Value| match value {
        Value::Object(object) => Ok((at, object)),
        other => Err(ImportError::Invalid {
            file: file.to_string(),
            object: object_label(&at),
            message: format!("expected a JSON object, found {}", kind(other)),
        }),
    };
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| element(format!("[{i}]"), item))
            .collect(),
        Value::Object(object) => match object.get("value") {
            // An ARM list response: `{"value": [...], "nextLink": ...}`.
            Some(Value::Array(items)) if classify(Fields::new(object)).is_err() => {
                // One page of a longer list: importing it alone would silently drop the
                // rest.
                if let Some(next) = object.get("nextLink").filter(|v| !v.is_null()) {
                    return Err(ImportError::Invalid {
                        file: file.to_string(),
                        object: "nextLink".into(),
                        message: format!(
                            "this is one page of a longer list (`nextLink` {}): import every \
                             page (the Azure CLI's list commands print them all)",
                            escape(&next.to_string())
                        ),
                    });
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| element(format!("value[{i}]"), item))
                    .collect()
            }
            _ => Ok(vec![(String::new(), object)]),
        },
        other => Err(ImportError::Shape {
            file: file.to_string(),
            found: kind(other),
        }),
    }
}

/// A JSON value read with duplicate object keys refused. `serde_json::Value` keeps the last
/// copy of a key, which could silently drop a `condition` or a `notActions` list and import
/// a policy that grants more than Azure does.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d).map(|Strict(v)| v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Object::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key `{}`",
                    escape(&key)
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Decodes UTF-8 (an optional byte order mark skipped) or UTF-16 with a byte order mark.
fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, &'static str> {
    fn utf16(bytes: &[u8], big_endian: bool) -> Result<Cow<'static, str>, &'static str> {
        if !bytes.len().is_multiple_of(2) {
            return Err("truncated UTF-16");
        }
        let units = bytes.chunks_exact(2).map(|pair| {
            let pair = [pair[0], pair[1]];
            if big_endian {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(Cow::Owned)
            .map_err(|_| "invalid UTF-16")
    }
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return std::str::from_utf8(rest)
            .map(Cow::Borrowed)
            .map_err(|_| "invalid UTF-8");
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, false);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, true);
    }
    std::str::from_utf8(bytes)
        .map(Cow::Borrowed)
        .map_err(|_| "neither UTF-8 nor UTF-16 with a byte order mark")
}

/// The last `/`-separated segment of an Azure resource id (the GUID), if not empty.
fn last_segment(id: &str) -> Option<&str> {
    id.trim()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
}

fn extend_unique(list: &mut Vec<String>, values: Vec<&str>) {
    for value in values {
        if !list.iter().any(|v| v == value) {
            list.push(value.to_string());
        }
    }
}

/// ``role definition [3] `Reader` ``: what the object is, where, and its name.
fn label(what: &str, at: &str, name: Option<&str>) -> String {
    let mut out = what.to_string();
    if !at.is_empty() {
        out.push(' ');
        out.push_str(at);
    }
    if let Some(name) = name {
        out.push_str(&format!(" `{}`", escape(name)));
    }
    out
}

fn object_label(at: &str) -> String {
    if at.is_empty() {
        "top-level object".to_string()
    } else {
        format!("object {at}")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "/subscriptions/6f2e4d1c-8b3a-4f5e-9c7d-2a1b0c9d8e7f";
    const READER_ID: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";

    fn fixture(name: &str) -> (String, Vec<u8>) {
        let path = format!("{}/tests/fixtures/azure/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        (name.to_string(), bytes)
    }

    fn inline(name: &str, json: &str) -> (String, Vec<u8>) {
        (name.to_string(), json.as_bytes().to_vec())
    }

    fn import_ok(files: &[(String, Vec<u8>)]) -> Document {
        import(files).unwrap_or_else(|e| panic!("import failed: {e}"))
    }

    fn import_err(files: &[(String, Vec<u8>)]) -> ImportError {
        match import(files) {
            Ok(doc) => panic!("import succeeded: {}", serde_json::to_string(&doc).unwrap()),
            Err(e) => e,
        }
    }

    fn role<'a>(doc: &'a Document, name: &str) -> &'a RoleDoc {
        doc.roles
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no role `{name}`"))
    }

    fn assignment<'a>(doc: &'a Document, id: &str) -> &'a AssignmentDoc {
        doc.assignments
            .iter()
            .find(|a| a.id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no assignment `{id}`"))
    }

    /// A flat `az role assignment list` entry.
    fn az_assignment(
        id: &str,
        principal_type: &str,
        role_name: Option<&str>,
        role_guid: &str,
    ) -> String {
        let mut value = serde_json::json!({
            "condition": null,
            "conditionVersion": null,
            "id": format!("{SUB}/providers/Microsoft.Authorization/roleAssignments/{id}"),
            "name": id,
            "principalId": "11111111-2222-4333-8444-555555555555",
            "principalName": "someone",
            "principalType": principal_type,
            "roleDefinitionId": format!("{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}"),
            "scope": SUB,
            "type": "Microsoft.Authorization/roleAssignments",
        });
        if let Some(name) = role_name {
            value["roleDefinitionName"] = name.into();
        }
        value.to_string()
    }

    #[test]
    fn flat_role_definition_list() {
        let doc = import_ok(&[fixture("role-definitions.json")]);
        assert_eq!(doc.version, Some(1));
        assert!(doc.assignments.is_empty());
        let names: Vec<_> = doc.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Reader",
                "Contributor",
                "Security Reader",
                "Storage Blob Data Reader",
                "Plant Operator"
            ]
        );

        let reader = role(&doc, "Reader");
        assert_eq!(reader.id.as_deref(), Some(READER_ID));
        assert_eq!(reader.actions, ["*/read"]);
        assert!(
            reader.not_actions.is_empty()
                && reader.data_actions.is_empty()
                && reader.not_data_actions.is_empty()
        );
        assert_eq!(reader.assignable_scopes, Some(vec!["/".to_string()]));
        assert_eq!(
            reader.description.as_deref(),
            Some("View all resources, but does not allow you to make any changes.")
        );

        let contributor = role(&doc, "Contributor");
        assert_eq!(
            contributor.id.as_deref(),
            Some("b24988ac-6180-42a0-ab88-20f7382dd24c")
        );
        assert_eq!(contributor.actions, ["*"]);
        assert_eq!(contributor.not_actions.len(), 11);
        assert_eq!(
            contributor.not_actions[0],
            "Microsoft.Authorization/*/Delete"
        );

        let blob = role(&doc, "Storage Blob Data Reader");
        assert_eq!(
            blob.data_actions,
            ["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"]
        );

        let custom = role(&doc, "Plant Operator");
        assert_eq!(
            custom.id.as_deref(),
            Some("5d3c2b1a-0f9e-4d8c-b7a6-958473625140")
        );
        assert_eq!(custom.not_actions, ["Microsoft.IoTSecurity/sensors/read"]);
        assert_eq!(
            custom.assignable_scopes,
            Some(vec![
                format!("{SUB}/resourceGroups/ot-plant-north"),
                format!("{SUB}/resourceGroups/ot-plant-south"),
            ])
        );
    }

    #[test]
    fn create_input_form_has_no_id() {
        let doc = import_ok(&[fixture("custom-role-create.json")]);
        assert_eq!(doc.roles.len(), 1);
        let r = &doc.roles[0];
        assert_eq!(r.name, "Plant Line Technician");
        assert_eq!(r.id, None);
        assert_eq!(r.actions.len(), 5);
        assert_eq!(r.actions[3], "Microsoft.Edge/targets/write");
        assert_eq!(r.not_actions, ["Microsoft.Edge/targets/delete"]);
        assert!(r.data_actions.is_empty());
        assert_eq!(
            r.assignable_scopes,
            Some(vec![format!("{SUB}/resourceGroups/ot-plant-north")])
        );
        assert!(
            r.description
                .as_deref()
                .is_some_and(|d| d.starts_with("Can view Defender"))
        );
    }

    #[test]
    fn create_input_form_with_id_and_camel_case() {
        let doc = import_ok(&[inline(
            "ps.json",
            r#"{"name": "Line Viewer", "Id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "isCustom": true,
                "actions": ["Microsoft.Edge/targets/read"], "assignableScopes": ["/"]}"#,
        )]);
        assert_eq!(doc.roles[0].name, "Line Viewer");
        assert_eq!(
            doc.roles[0].id.as_deref(),
            Some("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
        );
        assert_eq!(doc.roles[0].actions, ["Microsoft.Edge/targets/read"]);
    }

    #[test]
    fn arm_properties_form() {
        let doc = import_ok(&[fixture("role-definition-arm.json")]);
        assert_eq!(doc.roles.len(), 1);
        let r = &doc.roles[0];
        assert_eq!(r.name, "IoT Hub Data Contributor");
        assert_eq!(
            r.id.as_deref(),
            Some("4fc6c259-987e-4a07-842e-c321cc9d413f")
        );
        assert!(r.actions.is_empty());
        assert_eq!(r.data_actions, ["Microsoft.Devices/IotHubs/*"]);
        assert_eq!(r.assignable_scopes, Some(vec!["/".to_string()]));
        assert_eq!(
            r.description.as_deref(),
            Some("Allows for full access to IoT Hub data plane operations.")
        );
    }

    #[test]
    fn arm_list_response_and_id_fallback() {
        let doc = import_ok(&[inline(
            "rest.json",
            r#"{"value": [
                {"id": "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
                 "type": "Microsoft.Authorization/roleDefinitions",
                 "properties": {"roleName": "Reader", "type": "BuiltInRole", "assignableScopes": ["/"],
                                "permissions": [{"actions": ["*/read"], "notActions": []}]}}
            ]}"#,
        )]);
        assert_eq!(doc.roles[0].name, "Reader");
        assert_eq!(doc.roles[0].id.as_deref(), Some(READER_ID));
        assert_eq!(doc.roles[0].actions, ["*/read"]);
    }

    #[test]
    fn permission_entries_are_concatenated_without_duplicates() {
        let doc = import_ok(&[inline(
            "multi.json",
            r#"[{"roleName": "Edge Operator", "name": "9d8c7b6a-5f4e-4d3c-b2a1-0f9e8d7c6b5a",
                 "permissions": [
                   {"actions": ["Microsoft.Edge/targets/read", "Microsoft.Edge/solutions/read"], "notActions": ["Microsoft.Edge/targets/delete"]},
                   {"actions": ["Microsoft.Edge/targets/read", "Microsoft.Edge/targets/write"], "dataActions": ["Microsoft.Edge/targets/logs/read"],
                    "notDataActions": null}
                 ]}]"#,
        )]);
        let r = &doc.roles[0];
        assert_eq!(
            r.actions,
            [
                "Microsoft.Edge/targets/read",
                "Microsoft.Edge/solutions/read",
                "Microsoft.Edge/targets/write"
            ]
        );
        assert_eq!(r.not_actions, ["Microsoft.Edge/targets/delete"]);
        assert_eq!(r.data_actions, ["Microsoft.Edge/targets/logs/read"]);
        assert!(r.not_data_actions.is_empty());
        // Missing lists stay empty; missing assignableScopes stay absent (the policy default).
        assert_eq!(r.assignable_scopes, None);
        assert_eq!(r.description, None);
    }

    #[test]
    fn assignment_list_maps_principals_roles_and_scopes() {
        let doc = import_ok(&[
            fixture("role-definitions.json"),
            fixture("role-assignments.json"),
        ]);
        assert_eq!(doc.assignments.len(), 5);

        let alice = assignment(&doc, "0e1d2c3b-4a59-4687-9a5b-6c7d8e9f0a1b");
        assert_eq!(alice.principal, "user:3f2a1b0c-9d8e-4f7a-b6c5-d4e3f2a1b0c9");
        assert_eq!(alice.role, "Reader");
        assert_eq!(alice.scope, SUB);

        let ot = assignment(&doc, "7b6a5948-3726-4150-8f9e-0d1c2b3a4958");
        assert_eq!(ot.principal, "group:c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f");
        assert_eq!(ot.role, "Security Reader");
        assert_eq!(ot.scope, format!("{SUB}/resourceGroups/ot-plant-north"));

        let custom = assignment(&doc, "a4b3c2d1-e0f9-4a8b-9c7d-6e5f4a3b2c1d");
        assert_eq!(custom.role, "Plant Operator");

        let sp = assignment(&doc, "f9e8d7c6-b5a4-4938-8271-605f4e3d2c1b");
        assert_eq!(
            sp.principal,
            "servicePrincipal:8e7d6c5b-4a39-4281-b0f9-e8d7c6b5a493"
        );
        assert_eq!(sp.role, "Storage Blob Data Reader");
        assert_eq!(
            sp.scope,
            format!(
                "{SUB}/resourceGroups/ot-telemetry/providers/Microsoft.Storage/storageAccounts/otplanttelemetry"
            )
        );

        // Owner is not among the imported definitions: its `roleDefinitionName` is used.
        let owner = assignment(&doc, "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f");
        assert_eq!(owner.principal, "user:d0c9b8a7-f6e5-4d4c-a3b2-c1d0e9f8a7b6");
        assert_eq!(owner.role, "Owner");
        assert!(owner.not_before.is_none() && owner.not_after.is_none());
    }

    #[test]
    fn assignments_may_come_before_their_role_definitions() {
        let doc = import_ok(&[
            fixture("role-assignments.json"),
            fixture("role-definitions.json"),
        ]);
        assert_eq!(doc.roles.len(), 5);
        assert_eq!(doc.assignments.len(), 5);
        assert_eq!(doc.assignments[0].role, "Reader");
    }

    #[test]
    fn role_resolved_by_guid_without_name() {
        // ARM form: no roleDefinitionName, everything under `properties`.
        let arm = format!(
            r#"{{"id": "{SUB}/providers/Microsoft.Authorization/roleAssignments/3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7",
                "name": "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7",
                "type": "Microsoft.Authorization/roleAssignments",
                "properties": {{"roleDefinitionId": "{SUB}/providers/Microsoft.Authorization/roleDefinitions/ACDD72A7-3385-48EF-BD42-F606FBA81AE7",
                               "principalId": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "principalType": "Group",
                               "scope": "{SUB}/resourceGroups/ot-plant-north", "condition": null}}}}"#
        );
        let doc = import_ok(&[
            fixture("role-definitions.json"),
            inline("arm-assignment.json", &arm),
        ]);
        let a = &doc.assignments[0];
        assert_eq!(a.role, "Reader");
        assert_eq!(a.principal, "group:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
        assert_eq!(a.scope, format!("{SUB}/resourceGroups/ot-plant-north"));
        assert_eq!(
            a.id.as_deref(),
            Some("3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7")
        );
    }

    #[test]
    fn role_resolved_by_name_case_insensitively() {
        // The create form has no GUID, so only the name can find it; the imported spelling is written.
        let doc = import_ok(&[
            fixture("custom-role-create.json"),
            inline(
                "a.json",
                &az_assignment(
                    "4d5e6f7a-8b9c-4dae-bf01-23456789abcd",
                    "User",
                    Some("plant line TECHNICIAN"),
                    "6b5a4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
                ),
            ),
        ]);
        assert_eq!(doc.assignments[0].role, "Plant Line Technician");
    }

    #[test]
    fn assignment_id_from_last_segment_of_id() {
        let mut value: Value = serde_json::from_str(&az_assignment(
            "5e6f7a8b-9cad-4ebf-8012-3456789abcde",
            "User",
            None,
            READER_ID,
        ))
        .unwrap();
        value.as_object_mut().unwrap().remove("name");
        let doc = import_ok(&[
            fixture("role-definitions.json"),
            inline("a.json", &value.to_string()),
        ]);
        assert_eq!(
            doc.assignments[0].id.as_deref(),
            Some("5e6f7a8b-9cad-4ebf-8012-3456789abcde")
        );
        assert_eq!(doc.assignments[0].role, "Reader");
    }

    #[test]
    fn unresolvable_role_is_an_error() {
        let e = import_err(&[
            fixture("role-definitions.json"),
            inline(
                "a.json",
                &az_assignment(
                    "6f7a8b9c-adbe-4fc0-9123-456789abcdef",
                    "User",
                    None,
                    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
                ),
            ),
        ]);
        assert!(matches!(e, ImportError::UnknownRole { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("a.json: role assignment `6f7a8b9c-adbe-4fc0-9123-456789abcdef`: "),
            "{msg}"
        );
        assert!(
            msg.contains("8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
            "{msg}"
        );
    }

    #[test]
    fn name_and_guid_naming_different_roles_is_an_error() {
        let e = import_err(&[
            fixture("role-definitions.json"),
            inline(
                "a.json",
                &az_assignment(
                    "7a8b9cad-becf-4d01-a234-56789abcdef0",
                    "User",
                    Some("Contributor"),
                    READER_ID,
                ),
            ),
        ]);
        assert!(
            matches!(&e, ImportError::RoleMismatch { imported, .. } if imported == "Reader"),
            "{e:?}"
        );
    }

    #[test]
    fn principal_types() {
        for (azure, prefix) in [
            ("User", "user"),
            ("Group", "group"),
            ("ServicePrincipal", "servicePrincipal"),
        ] {
            let doc = import_ok(&[
                fixture("role-definitions.json"),
                inline(
                    "a.json",
                    &az_assignment(
                        "8b9cadbe-cfd0-4e12-b345-6789abcdef01",
                        azure,
                        Some("Reader"),
                        READER_ID,
                    ),
                ),
            ]);
            assert_eq!(
                doc.assignments[0].principal,
                format!("{prefix}:11111111-2222-4333-8444-555555555555")
            );
        }
        for unsupported in ["ForeignGroup", "Device", "Unknown"] {
            let e = import_err(&[
                fixture("role-definitions.json"),
                inline(
                    "a.json",
                    &az_assignment(
                        "9cadbecf-d0e1-4f23-8456-789abcdef012",
                        unsupported,
                        Some("Reader"),
                        READER_ID,
                    ),
                ),
            ]);
            match &e {
                ImportError::PrincipalType {
                    file,
                    object,
                    principal_type,
                } => {
                    assert_eq!(file, "a.json");
                    assert_eq!(
                        object,
                        "role assignment `9cadbecf-d0e1-4f23-8456-789abcdef012`"
                    );
                    assert_eq!(principal_type, unsupported);
                }
                other => panic!("unexpected error {other:?}"),
            }
            assert!(
                e.to_string()
                    .contains(&format!("principal type `{unsupported}`")),
                "{e}"
            );
        }
    }

    #[test]
    fn missing_principal_type_is_an_error() {
        let mut value: Value = serde_json::from_str(&az_assignment(
            "adbecfd0-e1f2-4034-9567-89abcdef0123",
            "User",
            Some("Reader"),
            READER_ID,
        ))
        .unwrap();
        value.as_object_mut().unwrap().remove("principalType");
        let e = import_err(&[
            fixture("role-definitions.json"),
            inline("a.json", &format!("[{value}]")),
        ]);
        assert_eq!(
            e.to_string(),
            "a.json: role assignment [0] `adbecfd0-e1f2-4034-9567-89abcdef0123`: `principalType` is missing"
        );
    }

    #[test]
    fn condition_is_an_error_naming_the_assignment() {
        let e = import_err(&[
            fixture("role-definitions.json"),
            fixture("assignment-with-condition.json"),
        ]);
        match &e {
            ImportError::Condition {
                file,
                object,
                condition,
            } => {
                assert_eq!(file, "assignment-with-condition.json");
                assert_eq!(
                    object,
                    "role assignment [0] `b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e`"
                );
                assert!(condition.contains("StringEquals 'plant-north-telemetry'"));
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("would grant more than Azure does"), "{msg}");
    }

    #[test]
    fn condition_under_properties_is_an_error() {
        let arm = format!(
            r#"{{"name": "becfd0e1-f203-4145-a678-9abcdef01234",
                "properties": {{"roleDefinitionId": "{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER_ID}",
                               "principalId": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "principalType": "User", "scope": "{SUB}",
                               "condition": "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'x'",
                               "conditionVersion": "2.0"}}}}"#
        );
        let e = import_err(&[fixture("role-definitions.json"), inline("arm.json", &arm)]);
        assert!(
            matches!(&e, ImportError::Condition { object, .. } if object.contains("becfd0e1-f203-4145-a678-9abcdef01234")),
            "{e:?}"
        );
    }

    #[test]
    fn condition_on_a_role_permission_is_an_error() {
        let e = import_err(&[inline(
            "r.json",
            r#"[{"roleName": "Conditional", "name": "c0d1e2f3-0415-4263-b789-abcdef012345",
                 "permissions": [{"actions": ["*/read"], "condition": "@Resource[x] StringEquals 'y'", "conditionVersion": "2.0"}]}]"#,
        )]);
        assert!(
            matches!(&e, ImportError::Condition { object, .. } if object == "role definition [0] `Conditional` permissions[0]"),
            "{e:?}"
        );
    }

    /// JSON with a key written twice is refused: keeping either copy could drop a condition
    /// or a `notActions` list.
    #[test]
    fn a_key_written_twice_is_an_error() {
        for (name, json) in [
            (
                "condition.json",
                r#"[{"principalId": "p", "principalType": "User", "roleDefinitionName": "Reader",
                     "scope": "/", "condition": "@Resource[x] StringEquals 'y'", "condition": null}]"#,
            ),
            (
                "not-actions.json",
                r#"[{"roleName": "R1", "name": "r1", "permissions": [{"actions": ["*"],
                     "notActions": ["Microsoft.Authorization/*"], "notActions": []}]}]"#,
            ),
        ] {
            let e = import_err(&[inline(name, json)]);
            let msg = e.to_string();
            assert!(
                matches!(e, ImportError::Json { .. }) && msg.contains("duplicate key"),
                "{name}: {msg}"
            );
            assert!(msg.starts_with(name), "{msg}");
        }
    }

    /// An ARM list response with a `nextLink` is one page of a longer list: importing it
    /// alone would silently drop the other pages.
    #[test]
    fn one_page_of_a_paged_list_is_an_error() {
        let e = import_err(&[inline(
            "page.json",
            r#"{"value": [{"roleName": "R1", "name": "r1", "permissions": [{"actions": ["*"]}]}],
                "nextLink": "https://management.azure.com/x?$skiptoken=abc"}"#,
        )]);
        let msg = e.to_string();
        assert!(
            msg.contains("nextLink") && msg.contains("every page"),
            "{msg}"
        );
        // The last page (no `nextLink`, or null) imports.
        let doc = import_ok(&[inline(
            "last.json",
            r#"{"value": [{"roleName": "R1", "name": "r1", "permissions": [{"actions": ["*"]}]}],
                "nextLink": null}"#,
        )]);
        assert_eq!(doc.roles.len(), 1);
    }

    #[test]
    fn duplicate_role_names_and_ids() {
        // Listing the same definitions twice (two subscriptions) keeps each once.
        let doc = import_ok(&[
            fixture("role-definitions.json"),
            fixture("role-definitions.json"),
        ]);
        assert_eq!(doc.roles.len(), 5);

        let e = import_err(&[
            fixture("role-definitions.json"),
            inline(
                "r.json",
                r#"{"roleName": "reader", "permissions": [{"actions": ["*"]}]}"#,
            ),
        ]);
        match &e {
            ImportError::Duplicate {
                file,
                what,
                value,
                first,
                ..
            } => {
                assert_eq!(file, "r.json");
                assert_eq!(*what, "role name");
                assert_eq!(value, "reader");
                assert_eq!(first, "role-definitions.json: role definition [0] `Reader`");
            }
            other => panic!("unexpected error {other:?}"),
        }

        let e = import_err(&[
            fixture("role-definitions.json"),
            inline(
                "r.json",
                &format!(
                    r#"{{"roleName": "Other Reader", "name": "{READER_ID}", "permissions": []}}"#
                ),
            ),
        ]);
        assert!(
            matches!(
                &e,
                ImportError::Duplicate {
                    what: "role id",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn duplicate_assignment_ids() {
        let doc = import_ok(&[
            fixture("role-definitions.json"),
            fixture("role-assignments.json"),
            fixture("role-assignments.json"),
        ]);
        assert_eq!(doc.assignments.len(), 5);

        let id = "0e1d2c3b-4a59-4687-9a5b-6c7d8e9f0a1b";
        let e = import_err(&[
            fixture("role-definitions.json"),
            fixture("role-assignments.json"),
            inline(
                "a.json",
                &az_assignment(id, "Group", Some("Reader"), READER_ID),
            ),
        ]);
        assert!(
            matches!(
                &e,
                ImportError::Duplicate {
                    what: "assignment id",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn mixed_file_and_single_objects() {
        let mixed = format!(
            "[{}, {}]",
            r#"{"roleName": "Edge Reader", "name": "d1e2f304-1526-4374-89ab-cdef01234567", "permissions": [{"actions": ["Microsoft.Edge/*/read"]}]}"#,
            az_assignment(
                "e2f30415-2637-4485-9abc-def012345678",
                "ServicePrincipal",
                None,
                "d1e2f304-1526-4374-89ab-cdef01234567"
            )
        );
        let doc = import_ok(&[inline("mixed.json", &mixed)]);
        assert_eq!(doc.roles.len(), 1);
        assert_eq!(doc.assignments[0].role, "Edge Reader");

        // `az role definition show` prints a single object; so may a single assignment be.
        let single = az_assignment(
            "f3041526-3748-4596-abcd-ef0123456789",
            "User",
            Some("Reader"),
            READER_ID,
        );
        let doc = import_ok(&[
            fixture("role-definitions.json"),
            inline("one.json", &single),
        ]);
        assert_eq!(doc.assignments.len(), 1);
    }

    #[test]
    fn malformed_input() {
        let e = import_err(&[inline("bad.json", "[{")]);
        assert!(
            matches!(&e, ImportError::Json { file, .. } if file == "bad.json"),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("bad.json: invalid JSON: "));

        let e = import_err(&[inline("n.json", "42")]);
        assert!(
            matches!(
                e,
                ImportError::Shape {
                    found: "a number",
                    ..
                }
            ),
            "{e:?}"
        );

        let e = import_err(&[inline("s.json", r#"["Reader"]"#)]);
        assert_eq!(
            e.to_string(),
            "s.json: object [0]: expected a JSON object, found a string"
        );

        let e = import_err(&[inline(
            "u.json",
            r#"[{"type": "Microsoft.Authorization/locks"}]"#,
        )]);
        assert!(
            matches!(&e, ImportError::UnknownObject { object, .. } if object == "object [0]"),
            "{e:?}"
        );

        let e = import_err(&[inline(
            "t.json",
            r#"{"roleName": "X", "permissions": [{"actions": "*"}]}"#,
        )]);
        assert_eq!(
            e.to_string(),
            "t.json: role definition `X`: in `permissions[0]`: `actions` must be an array of strings, found a string"
        );

        let e = import_err(&[inline(
            "c.json",
            r#"{"roleName": "X", "actions": ["a"], "Actions": ["b"]}"#,
        )]);
        assert_eq!(
            e.to_string(),
            "c.json: role definition `X`: has both `actions` and `Actions`"
        );
    }

    #[test]
    fn byte_order_marks_and_utf16() {
        let json = r#"[{"roleName": "Reader", "name": "acdd72a7-3385-48ef-bd42-f606fba81ae7", "permissions": [{"actions": ["*/read"]}]}]"#;
        let mut utf8 = b"\xEF\xBB\xBF".to_vec();
        utf8.extend_from_slice(json.as_bytes());
        let mut utf16 = b"\xFF\xFE".to_vec();
        utf16.extend(json.encode_utf16().flat_map(u16::to_le_bytes));
        for bytes in [utf8, utf16] {
            let doc = import_ok(&[("r.json".to_string(), bytes)]);
            assert_eq!(doc.roles[0].name, "Reader");
        }
        let e = import_err(&[("r.json".to_string(), vec![b'[', 0xC3, b']'])]);
        assert!(matches!(e, ImportError::Encoding { .. }), "{e:?}");
    }

    #[test]
    fn empty_list_gives_an_empty_document() {
        let doc = import_ok(&[inline("none.json", "[]")]);
        assert!(doc.roles.is_empty() && doc.assignments.is_empty());
        assert_eq!(doc.version, Some(1));
    }

    #[test]
    fn yaml_round_trip() {
        let doc = import_ok(&[
            fixture("role-definitions.json"),
            fixture("custom-role-create.json"),
            fixture("role-definition-arm.json"),
            fixture("role-assignments.json"),
        ]);
        let yaml = to_yaml(&doc).unwrap();
        let first = yaml.lines().next().unwrap();
        assert!(
            first.starts_with('#') && first.contains("`iot-authz import-azure`"),
            "{first}"
        );
        assert!(yaml.contains("version: 1"), "{yaml}");

        let back: Document =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(back.version, Some(1));
        assert_eq!(
            serde_json::to_value(&back.roles).unwrap(),
            serde_json::to_value(&doc.roles).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&back.assignments).unwrap(),
            serde_json::to_value(&doc.assignments).unwrap()
        );
        assert!(
            back.actions.is_empty()
                && back.groups.is_empty()
                && back.routes.is_empty()
                && back.tests.is_empty()
        );
    }
}
