//! The route table and the OpenAPI document generated from it.

use super::*;

#[test]
fn roles_admit_their_own_level_and_above() {
    let op = |role| Principal::Operator {
        name: "x".into(),
        role,
    };
    assert!(permitted(Access::Role(Role::Operator), &op(Role::Viewer)).is_err());
    assert!(permitted(Access::Role(Role::Operator), &op(Role::Operator)).is_ok());
    assert!(permitted(Access::Role(Role::Operator), &op(Role::Admin)).is_ok());
    assert!(permitted(Access::Role(Role::Viewer), &Principal::Anonymous).is_err());
    let device = Principal::Device(DeviceId::new("d").unwrap());
    assert!(permitted(Access::Role(Role::Viewer), &device).is_err());
    assert!(permitted(Access::Device, &device).is_ok());
    assert!(permitted(Access::Device, &op(Role::Viewer)).is_ok());
    assert!(permitted(Access::Public, &Principal::Anonymous).is_ok());
}

#[test]
fn every_route_is_unique_and_only_health_metrics_docs_and_enrollment_are_public() {
    let routes = routes();
    let mut seen = std::collections::HashSet::new();
    for r in &routes {
        assert!(seen.insert((r.method.clone(), r.path)), "{r:?} twice");
        if r.access == Access::Public {
            assert!(
                [
                    "/",
                    "/dashboard/app.js",
                    "/dashboard/health.js",
                    "/dashboard/app.css",
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/openapi.json",
                    "/api/v1/enroll"
                ]
                .contains(&r.path),
                "{r:?} is public"
            );
        }
        let mutating = r.method != Method::GET;
        if mutating && r.path != "/api/v1/enroll" {
            assert!(
                matches!(r.access, Access::Role(Role::Operator | Role::Admin)),
                "{r:?} mutates with {:?}",
                r.access
            );
        }
    }
}

/// The document's body schemas come from the handlers' types: a field the server accepts is
/// in the document, one it refuses is not, and unknown fields are refused in both.
#[test]
fn body_schemas_follow_the_types_the_handlers_decode() {
    let routes = routes();
    let body = |method: Method, path: &str| -> Value {
        routes
            .iter()
            .find(|r| r.method == method && r.path == path)
            .and_then(|r| r.body.clone())
            .unwrap_or_else(|| panic!("{method} {path} has no body schema"))
    };
    let enroll = body(Method::POST, "/api/v1/enroll");
    assert_eq!(enroll["additionalProperties"], false, "{enroll:#}");
    assert!(enroll["properties"]["public_key"].is_object(), "{enroll:#}");
    let required: Vec<&str> = enroll["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, ["device_id", "token"]);
    let rollout = body(Method::POST, "/api/v1/rollouts");
    let gates = &rollout["properties"]["model_gates"];
    assert!(
        gates.to_string().contains("max_input_drift_psi"),
        "{rollout:#}"
    );
    let token = body(Method::POST, "/api/v1/tokens");
    assert!(
        token.to_string().contains("\"viewer\""),
        "roles are listed: {token:#}"
    );
    for r in &routes {
        if let Some(schema) = &r.body {
            assert!(
                !schema.to_string().contains("$ref"),
                "{} {}: a body schema must stand alone: {schema:#}",
                r.method,
                r.path
            );
        }
    }
}

/// Responses that have a shared type refer to its schema, and every reference in the
/// document resolves to a component.
#[test]
fn reply_schemas_come_from_the_shared_types_and_every_reference_resolves() {
    let doc = openapi::document(&routes());
    let components = doc["components"]["schemas"].as_object().unwrap();
    let reply = |method: &str, path: &str, status: &str| -> &Value {
        let reference = doc["paths"][path][method]["responses"][status]["content"]
            ["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no {status} schema"));
        &components[reference.trim_start_matches("#/components/schemas/")]
    };
    let rollout = reply("post", "/api/v1/rollouts", "201");
    for field in ["state", "waves", "devices", "history", "gates"] {
        assert!(rollout["properties"][field].is_object(), "{rollout:#}");
    }
    let device = reply("get", "/api/v1/devices/{id}", "200");
    assert!(device.to_string().contains("DeviceSummary"), "{device:#}");
    assert!(components["DeviceSummary"]["properties"]["desired_revision"].is_object());
    let enrolled = reply("post", "/api/v1/enroll", "200");
    assert!(enrolled["properties"]["credential"].is_object());
    let text = doc.to_string();
    let mut rest = text.as_str();
    let mut references = 0;
    while let Some(at) = rest.find("#/components/schemas/") {
        rest = &rest[at + "#/components/schemas/".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            components.contains_key(&name),
            "{name} is referred to but not defined"
        );
        references += 1;
    }
    assert!(references > 10, "{references} references");
}
