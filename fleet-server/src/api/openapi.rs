//! `/openapi.json`, generated from the route table.

use serde_json::{Map, Value, json};

use super::{Access, Route};

/// OpenAPI 3.1 document of `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!(<edgefleet_protocol::api::ErrorBody as utoipa::PartialSchema>::schema()),
    );
    for route in routes {
        let path = route.path.replace("{*", "{");
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = Map::new();
        op.insert("summary".into(), json!(route.summary));
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", route.method, route.path)),
        );
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(schema) = &route.body {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema}}}),
            );
        }
        let mut responses = json!({
            "400": {"description": "bad request; `field` names the offending field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        });
        match &route.reply {
            Some(reply) => {
                responses[reply.status.as_str()] = json!({
                    "description": "success",
                    "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", reply.name)}}},
                });
                for (name, schema) in &reply.schemas {
                    schemas.insert(name.clone(), schema.clone());
                }
            }
            None => responses["200"] = json!({"description": "success"}),
        }
        match route.access {
            Access::Public => {}
            access => {
                op.insert("security".into(), json!([{"bearer": []}]));
                responses["401"] = json!({"description": "missing or unknown token"});
                if access != Access::Device {
                    responses["403"] = json!({"description": "the token's role is not enough"});
                }
                op.insert(
                    "x-edgefleet-access".into(),
                    json!(match access {
                        Access::Device => "device or any operator".to_string(),
                        Access::Role(role) => role.as_str().to_string(),
                        Access::Public => "public".to_string(),
                    }),
                );
            }
        }
        op.insert("responses".into(), responses);
        let entry = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(
                route.method.as_str().to_ascii_lowercase(),
                Value::Object(op),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Edgefleet fleet-server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Operator API, device enrollment and the TUF repository devices update from. Tokens: `Authorization: Bearer efo_…` (operators: viewer < operator < admin) or `efd_…` (devices)."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas
        }
    })
}
