//! Tests of the Azure import, beside the module they test.

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
            &format!(r#"{{"roleName": "Other Reader", "name": "{READER_ID}", "permissions": []}}"#),
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
        matches!(&e, ImportError::UnknownObject { object, problem: Unclassified::Neither, .. } if object == "object [0]"),
        "{e:?}"
    );

    let e = import_err(&[inline(
        "b.json",
        r#"[{"roleName": "X", "principalId": "p"}]"#,
    )]);
    assert!(
        matches!(
            &e,
            ImportError::UnknownObject {
                problem: Unclassified::Both,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("b.json: object [0]: has both `roleName`"),
        "{e}"
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

    let back: Document = serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
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

/// Each field problem is its own kind, carrying the key as spelled in the input.
#[test]
fn field_problems_are_typed_with_the_key() {
    let problem = |json: &str| match import_err(&[inline("a.json", json)]) {
        ImportError::Invalid { problem, .. } => problem,
        other => panic!("{other}"),
    };
    let assignment = |fields: &str| {
        problem(&format!(
            r#"[{{"properties": {{"roleDefinitionId": "/r/roleDefinitions/r1", {fields}}}}}]"#
        ))
    };
    assert_eq!(
        assignment(r#""principalType": "User", "scope": "/s""#),
        FieldError::Missing { key: "principalId" }
    );
    assert_eq!(
        assignment(r#""principalType": "User", "principalId": " ", "scope": "/s""#),
        FieldError::Empty { key: "principalId" }
    );
    assert_eq!(
        assignment(r#""principalType": 1, "principalId": "p", "scope": "/s""#),
        FieldError::NotString {
            key: "principalType",
            found: "a number"
        }
    );
    assert_eq!(
        problem(r#"[{"roleName": "R", "permissions": [{"actions": ["a", 2]}]}]"#),
        FieldError::InEntry {
            key: "permissions",
            index: 0,
            problem: Box::new(FieldError::ItemNotString {
                key: "actions",
                index: 1,
                found: "a number"
            })
        }
    );
    assert_eq!(
        problem(r#"[{"roleName": "R", "permissions": {}}]"#),
        FieldError::NotArray {
            key: "permissions",
            found: "an object"
        }
    );
    assert_eq!(
        problem(r#"[{"roleName": "R", "actions": "a"}]"#),
        FieldError::NotStringArray {
            key: "actions",
            found: "a string"
        }
    );
    assert_eq!(
        problem(r#"[{"roleName": "R", "actions": ["a"], "Actions": ["b"]}]"#),
        FieldError::Both {
            first: "actions",
            second: "Actions"
        }
    );
    assert_eq!(problem("[1]"), FieldError::NotObject { found: "a number" });
}
