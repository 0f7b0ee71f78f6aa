//! The checked-in `deploy/crds/` must match what the types generate, and the schemas must be
//! ones a Kubernetes 1.20 API server accepts (structural, apiextensions.k8s.io/v1).

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use terway_apis::{crds, generated_files};

const REGEN: &str = "run `cargo run -p terway-apis --bin terway-crdgen` and commit the result";

fn crds_dir() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.ancestors().nth(2).unwrap_or(&crate_dir);
    root.join("deploy/crds")
}

#[test]
fn checked_in_manifests_are_up_to_date() {
    let dir = crds_dir();
    let files = generated_files().expect("render manifests");
    let mut problems = Vec::new();
    for (name, want) in &files {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(got) if got == *want => {}
            Ok(_) => problems.push(format!("deploy/crds/{name} is out of date")),
            Err(e) => problems.push(format!("deploy/crds/{name} cannot be read ({e})")),
        }
    }
    let expected: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !expected.contains(name.as_str()) {
                problems.push(format!("deploy/crds/{name} is not generated any more"));
            }
        }
    }
    assert!(problems.is_empty(), "{}; {REGEN}", problems.join("; "));
}

/// Keys of JSONSchemaProps that a 1.20 apiserver knows and allows in a structural schema.
const ALLOWED_KEYS: &[&str] = &[
    "description",
    "type",
    "format",
    "title",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "enum",
    "nullable",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "pattern",
    "multipleOf",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
];

/// Checks one schema node and everything below it, collecting problems with their paths.
fn check_structural(path: &str, schema: &Value, problems: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    for key in obj.keys() {
        if !ALLOWED_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "{path}: `{key}` is not allowed (1.20 structural schema)"
            ));
        }
    }
    let free_form = obj.contains_key("x-kubernetes-int-or-string")
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let ty = obj.get("type").and_then(Value::as_str);
    if ty.is_none() && !free_form {
        problems.push(format!("{path}: no `type`"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push(format!(
            "{path}: both `properties` and `additionalProperties`"
        ));
    }
    if obj.get("uniqueItems") == Some(&Value::Bool(true)) {
        problems.push(format!("{path}: `uniqueItems: true`"));
    }
    if let Some(values) = obj.get("enum").and_then(Value::as_array) {
        for v in values {
            let ok = match ty {
                Some("string") => v.is_string(),
                Some("integer") => v.is_i64() || v.is_u64(),
                _ => false,
            };
            if !ok {
                problems.push(format!("{path}: enum value {v} does not match type {ty:?}"));
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        if ty != Some("object") {
            problems.push(format!("{path}: `properties` on a non-object"));
        }
        for (name, sub) in props {
            check_structural(&format!("{path}.{name}"), sub, problems);
        }
    }
    if let Some(sub) = obj.get("additionalProperties") {
        if sub.is_object() {
            check_structural(&format!("{path}[*]"), sub, problems);
        } else if sub != &Value::Bool(true) {
            problems.push(format!("{path}: `additionalProperties` must be a schema"));
        }
    }
    if let Some(sub) = obj.get("items") {
        if ty != Some("array") {
            problems.push(format!("{path}: `items` on a non-array"));
        }
        check_structural(&format!("{path}[]"), sub, problems);
    } else if ty == Some("array") {
        problems.push(format!("{path}: array without `items`"));
    }
}

/// Follows a printer column's JSONPath (`.spec.a.b`) through the schema.
fn resolves(root: &Value, json_path: &str) -> bool {
    let mut node = root;
    for part in json_path.trim_start_matches('.').split('.') {
        match node.get("properties").and_then(|p| p.get(part)) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

#[test]
fn schemas_are_structural_for_kubernetes_1_20() {
    let mut problems = Vec::new();
    for crd in crds() {
        let crd = serde_json::to_value(&crd).expect("CRD to JSON");
        let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1", "{name}");
        let spec = &crd["spec"];
        if spec.get("preserveUnknownFields") == Some(&Value::Bool(true)) {
            problems.push(format!("{name}: preserveUnknownFields is true"));
        }
        let versions = spec["versions"].as_array().cloned().unwrap_or_default();
        assert_eq!(versions.len(), 1, "{name}");
        for version in &versions {
            for key in ["selectableFields", "deprecationWarning"] {
                if version.get(key).is_some() {
                    problems.push(format!("{name}: `{key}` is newer than 1.20"));
                }
            }
            let schema = &version["schema"]["openAPIV3Schema"];
            check_structural(&name, schema, &mut problems);
            for part in ["spec", "status"] {
                if schema["properties"][part]["type"] != "object" {
                    problems.push(format!("{name}: .{part} is not `type: object`"));
                }
            }
            if version["subresources"]["status"] != serde_json::json!({}) {
                problems.push(format!("{name}: no status subresource"));
            }
            let columns = version["additionalPrinterColumns"].as_array().cloned();
            for col in columns.unwrap_or_default() {
                let path = col["jsonPath"].as_str().unwrap_or_default();
                if !path.starts_with(".metadata.") && !resolves(schema, path) {
                    problems.push(format!("{name}: printer column {path} matches no field"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn structural_check_rejects_what_the_apiserver_rejects() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"$ref": "#/definitions/A"},
            "b": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "c": {"type": "string", "enum": ["x", null]},
            "d": {"type": "array"},
            "e": {"description": "no type"}
        }
    });
    let mut problems = Vec::new();
    check_structural("t", &bad, &mut problems);
    let all = problems.join("\n");
    for want in [
        "t.a: `$ref`",
        "t.b: `anyOf`",
        "t.c: enum value null",
        "t.d: array",
        "t.e: no `type`",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}
