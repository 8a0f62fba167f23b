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
        problem: Unclassified,
    },
    /// A field is missing or has the wrong type.
    #[error("{file}: {object}: {problem}")]
    Invalid {
        file: String,
        object: String,
        problem: FieldError,
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

/// Why an object is not one of the two kinds imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unclassified {
    #[error(
        "has both `roleName` (a role definition) and `principalId` or `roleDefinitionId` (a role assignment)"
    )]
    Both,
    #[error(
        "is neither a role definition (no `roleName`) nor a role assignment (no `principalId` or `roleDefinitionId`)"
    )]
    Neither,
}

fn classify(f: Fields<'_>) -> Result<Kind, Unclassified> {
    let role = f.has(ROLE_NAME);
    let assignment = f.has(PRINCIPAL_ID) || f.has(ROLE_DEFINITION_ID);
    match (role, assignment) {
        (true, false) => Ok(Kind::RoleDefinition),
        (false, true) => Ok(Kind::RoleAssignment),
        (true, true) => Err(Unclassified::Both),
        (false, false) => {
            let named = f.top.get("Name").or_else(|| f.top.get("name"));
            if named.is_some_and(Value::is_string)
                && CREATE_FORM_KEYS.iter().any(|k| f.top.contains_key(*k))
            {
                Ok(Kind::RoleDefinition)
            } else {
                Err(Unclassified::Neither)
            }
        }
    }
}

/// What is wrong with an object's fields (`key`: the spelling found in the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Two spellings of one field in one object.
    #[error("has both `{first}` and `{second}`")]
    Both {
        first: &'static str,
        second: &'static str,
    },
    #[error("`{key}` must be a string, found {found}")]
    NotString {
        key: &'static str,
        found: &'static str,
    },
    #[error("`{key}` is missing")]
    Missing { key: &'static str },
    #[error("`{key}` is empty")]
    Empty { key: &'static str },
    #[error("`{key}` must be an array, found {found}")]
    NotArray {
        key: &'static str,
        found: &'static str,
    },
    #[error("`{key}` must be an array of strings, found {found}")]
    NotStringArray {
        key: &'static str,
        found: &'static str,
    },
    #[error("`{key}[{index}]` must be a string, found {found}")]
    ItemNotString {
        key: &'static str,
        index: usize,
        found: &'static str,
    },
    #[error("`{key}[{index}]` must be an object, found {found}")]
    ItemNotObject {
        key: &'static str,
        index: usize,
        found: &'static str,
    },
    /// A problem inside one entry of a list of objects (`permissions[i]`).
    #[error("in `{key}[{index}]`: {problem}")]
    InEntry {
        key: &'static str,
        index: usize,
        problem: Box<FieldError>,
    },
    #[error("the role name (`roleName`) is empty")]
    EmptyRoleName,
    #[error("names no role: `roleDefinitionId` and `roleDefinitionName` are both missing")]
    NoRole,
    /// An element of the file's list that is not an object.
    #[error("expected a JSON object, found {found}")]
    NotObject { found: &'static str },
    /// One page of an ARM list with a `nextLink` (its JSON text, shown escaped).
    #[error(
        "this is one page of a longer list (`nextLink` {}): import every page (the Azure CLI's list commands print them all)",
        escape(.next_link)
    )]
    OnePage { next_link: String },
}

/// Reads one role definition; returns it with the label naming it in messages.
fn role_definition(item: &Item<'_>) -> Result<(RoleDoc, String), ImportError> {
    let f = item.fields;
    let top = Fields::flat(f.top);
    let invalid = |name: Option<&str>, problem: FieldError| ImportError::Invalid {
        file: item.file.to_string(),
        object: label("role definition", &item.at, name),
        problem,
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
        return Err(invalid(None, FieldError::EmptyRoleName));
    }
    let object = label("role definition", &item.at, Some(name));
    let invalid = |problem: FieldError| ImportError::Invalid {
        file: item.file.to_string(),
        object: object.clone(),
        problem,
    };

    let mut lists: [Vec<String>; 4] = Default::default();
    if let Some((key, permissions)) = f.get(PERMISSIONS).map_err(invalid)? {
        let Value::Array(entries) = permissions else {
            return Err(invalid(FieldError::NotArray {
                key,
                found: kind(permissions),
            }));
        };
        for (i, entry) in entries.iter().enumerate() {
            let Value::Object(entry) = entry else {
                return Err(invalid(FieldError::ItemNotObject {
                    key,
                    index: i,
                    found: kind(entry),
                }));
            };
            let entry = Fields::flat(entry);
            let in_entry = |problem: FieldError| {
                invalid(FieldError::InEntry {
                    key,
                    index: i,
                    problem: Box::new(problem),
                })
            };
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
    let unnamed = |problem: FieldError| ImportError::Invalid {
        file: file(),
        object: label("role assignment", &item.at, None),
        problem,
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
    let invalid = |problem: FieldError| ImportError::Invalid {
        file: file(),
        object: object.clone(),
        problem,
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
                return Err(invalid(FieldError::NoRole));
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
    fn get(&self, keys: &[&'static str]) -> Result<Option<(&'static str, &'a Value)>, FieldError> {
        for map in self.props.into_iter().chain(std::iter::once(self.top)) {
            let mut found: Option<(&'static str, &'a Value)> = None;
            for &key in keys {
                if let Some(value) = map.get(key).filter(|v| !v.is_null()) {
                    if let Some((first, _)) = found {
                        return Err(FieldError::Both { first, second: key });
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

    fn str(&self, keys: &[&'static str]) -> Result<Option<&'a str>, FieldError> {
        match self.get(keys)? {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s)),
            Some((key, other)) => Err(FieldError::NotString {
                key,
                found: kind(other),
            }),
        }
    }

    fn required_str(&self, keys: &[&'static str]) -> Result<&'a str, FieldError> {
        let key = keys.first().copied().unwrap_or_default();
        match self.str(keys)? {
            None => Err(FieldError::Missing { key }),
            Some(s) if s.trim().is_empty() => Err(FieldError::Empty { key }),
            Some(s) => Ok(s),
        }
    }

    fn list(&self, keys: &[&'static str]) -> Result<Option<Vec<&'a str>>, FieldError> {
        let Some((key, value)) = self.get(keys)? else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(FieldError::NotStringArray {
                key,
                found: kind(value),
            });
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.as_str()),
                other => Err(FieldError::ItemNotString {
                    key,
                    index: i,
                    found: kind(other),
                }),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// A non-empty `condition`, rendered as text.
fn condition(f: Fields<'_>) -> Result<Option<String>, FieldError> {
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
            problem: FieldError::NotObject { found: kind(other) },
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
                        problem: FieldError::OnePage {
                            next_link: next.to_string(),
                        },
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
mod tests;
