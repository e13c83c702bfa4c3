//! `/openapi.json`, generated from the code.
//!
//! Nothing here is a hand-kept copy of the API:
//! - the paths come from the router itself ([`crate::app::router`] registers every handler
//!   through `utoipa_axum::routes!`, so a route cannot exist without being documented),
//!   with parameters and success bodies from each handler's `#[utoipa::path]`;
//! - the schemas are derived from the wire types (`Command` and its payloads in
//!   `crm-domain`, `Receipt` and `Envelope` in `crm-log`, the views in `crm-projections`);
//! - every error response and its examples are produced by the real error mapping
//!   ([`ApiError::public_body`]) from real errors: the parser's own refusals of bad
//!   bodies, every [`DomainError`], and the gateway's own errors;
//! - the command examples are checked by the real parser before they are published.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use crm_domain::{Command, DomainError};
use crm_log::{LogError, SubmitError};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::ApiError;
use crate::intake;

/// The error body every door answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable machine-readable `code` and a message for humans.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code; the examples of each response list every code it can carry.
    pub code: String,
    pub message: String,
}

/// A command body: one command (its `type` and fields) and, optionally, when it happened
/// in business time.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandBody {
    #[serde(flatten)]
    pub command: Command,
    /// Business time (RFC 3339); the time of receipt when absent. At most five minutes in
    /// the future.
    #[serde(with = "time::serde::rfc3339::option")]
    pub occurred_at: Option<OffsetDateTime>,
}

/// The document's frame: info, tags and the schemas not reached from a handler.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "crm gateway",
        description = "Event-sourced customer lifecycle: commands become immutable events on \
                       NATS JetStream; projectors keep the lifecycle, trust, health and \
                       renewals views; auditors query and verify the log. Authenticate with \
                       `Authorization: Bearer <api key>`; each operation names the role it needs."
    ),
    modifiers(&Security),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "commands", description = "Commands that become events"),
        (name = "customers", description = "One customer's views"),
        (name = "views", description = "Views across customers"),
        (name = "audit", description = "The event log for auditors"),
        (name = "admin", description = "Projections, rebuilds and metrics for ops"),
        (name = "system", description = "Health, readiness and this document"),
    )
)]
pub struct ApiDoc;

/// The bearer API-key scheme.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from the `[[gateway.api_keys]]` config (stored as its \
                         SHA-256); roles: publisher, reader, ops, auditor.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Which operations an error can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every operation that needs an API key.
    Authenticated,
    /// `POST /v1/customers/{customer_id}/commands`.
    Commands,
    /// Operations with `{customer_id}` in the path.
    CustomerPath,
    /// Reads of one customer's views.
    CustomerRead,
    /// Operations with query parameters.
    Query,
    /// Operations that read the event log.
    Log,
    /// Operations that read the read store (every authenticated one but commands, and the
    /// metrics).
    ReadStore,
    /// `POST /v1/audit/checkpoints`.
    Checkpoints,
    /// `POST /v1/admin/projections/{name}/rebuild`.
    Rebuild,
    /// `GET /v1/audit/verify` (its `customer_id` is a query parameter).
    Verify,
}

impl Scope {
    fn applies(self, method: &str, path: &str, op: &Operation) -> bool {
        let has_security = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let has_query = op
            .parameters
            .iter()
            .flatten()
            .any(|p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)));
        let commands = method == "post" && path.ends_with("/commands");
        match self {
            Scope::Authenticated => has_security,
            Scope::Commands => commands,
            Scope::CustomerPath => path.contains("{customer_id}"),
            Scope::CustomerRead => path.contains("{customer_id}") && !commands,
            Scope::Query => has_query,
            // `/readyz` answers its own 503 body (which part is down), not an error.
            Scope::Log => has_security,
            Scope::ReadStore => (has_security && !commands) || path == "/metrics",
            Scope::Checkpoints => method == "post" && path == "/v1/audit/checkpoints",
            Scope::Rebuild => path.ends_with("/rebuild"),
            Scope::Verify => path == "/v1/audit/verify",
        }
    }
}

/// A bad command body and the refusal the real parser gives it.
fn parser_refusal(body: &str) -> ApiError {
    match intake::parse_command(body.as_bytes()) {
        Err(e) => e,
        // Only reachable if the parser started accepting this body; the test below fails
        // then, and the document shows what happened rather than panicking.
        Ok(_) => ApiError::bad_request("invalid_command", format!("(accepted) {body}")),
    }
}

/// Every error the API can answer with, produced by the code that produces it.
fn error_catalog() -> Vec<(Scope, ApiError)> {
    let mut out = vec![
        (Scope::Authenticated, ApiError::Unauthenticated),
        (
            Scope::Authenticated,
            ApiError::Forbidden {
                needed: "publisher",
            },
        ),
        (
            Scope::CustomerPath,
            crate::routes::customer_id("not-a-uuid")
                .err()
                .unwrap_or(ApiError::bad_request(
                    "invalid_customer_id",
                    "customer_id must be a UUID",
                )),
        ),
        (
            Scope::CustomerRead,
            ApiError::NotFound {
                code: "customer_not_found",
                what: "customer 0192f1d2-7a3b-7c4d-8e5f-6a7b8c9d0e1f".into(),
            },
        ),
        (
            Scope::Query,
            ApiError::bad_request("invalid_query", "unknown field `colour`"),
        ),
        (
            Scope::Verify,
            ApiError::NotFound {
                code: "customer_not_found",
                what: "customer 0192f1d2-7a3b-7c4d-8e5f-6a7b8c9d0e1f".into(),
            },
        ),
        (
            Scope::Log,
            ApiError::Log(LogError::Connect {
                url: "nats://127.0.0.1:4222".into(),
                reason: "connection refused".into(),
            }),
        ),
        (
            Scope::ReadStore,
            ApiError::Projection(crm_projections::ProjectionError::store_unavailable()),
        ),
        (
            Scope::Log,
            ApiError::Log(LogError::Decode {
                sequence: 1,
                reason: "example".into(),
            }),
        ),
    ];
    for body in [
        "{\"type\":",
        "[1, 2]",
        "{\"name\": \"Acme\"}",
        "{\"type\": \"cancel_everything\"}",
        "{\"type\": \"register_customer\", \"name\": \"Acme\", \"vip\": true}",
        "{\"type\": \"register_customer\", \"name\": \"Acme\", \"occurred_at\": \"yesterday\"}",
    ] {
        out.push((Scope::Commands, parser_refusal(body)));
    }
    out.extend(
        [
            ApiError::bad_request(
                "invalid_if_match",
                "If-Match must be a customer version number",
            ),
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1..={} visible ASCII characters",
                    intake::MAX_IDEMPOTENCY_KEY_LEN
                ),
            ),
            ApiError::bad_request("invalid_header", "x-correlation-id must be visible ASCII"),
            ApiError::PayloadTooLarge {
                limit: intake::MAX_BODY_BYTES,
            },
            ApiError::Submit(SubmitError::VersionConflict {
                expected: 3,
                actual: 4,
            }),
            ApiError::Submit(SubmitError::Contention { attempts: 8 }),
            ApiError::Submit(SubmitError::IdempotencyKeyReused {
                original_type: "contract_signed".into(),
            }),
        ]
        .map(|e| (Scope::Commands, e)),
    );
    out.extend(
        DomainError::examples()
            .into_iter()
            .map(|d| (Scope::Commands, ApiError::Submit(SubmitError::Rejected(d)))),
    );
    out.extend([
        (
            Scope::Checkpoints,
            ApiError::bad_request(
                "audit_key_not_configured",
                "no audit signing key is configured ([audit] signing_key)",
            ),
        ),
        (
            Scope::Checkpoints,
            ApiError::bad_request("nothing_to_checkpoint", "the audit index is empty"),
        ),
        (
            Scope::Rebuild,
            ApiError::NotFound {
                code: "projection_not_found",
                what: "projection \"lifecycle2\"".into(),
            },
        ),
        (
            Scope::Rebuild,
            ApiError::bad_request(
                "rebuild_unavailable",
                "this gateway has no read-store file to rebuild into",
            ),
        ),
    ]);
    out
}

/// Command examples, one per command type; [`document`] publishes only those the real
/// parser accepts, and a test checks that is all of them.
pub fn command_examples() -> Vec<Value> {
    vec![
        json!({"type": "register_customer", "name": "Acme GmbH", "segment": "mid_market",
               "region": "DACH", "account_manager": "li.wei", "acquisition_channel": "referral"}),
        json!({"type": "sign_contract", "contract_id": "c-2025-001", "value_minor": 1200000,
               "currency": "EUR", "starts_on": "2025-01-01", "ends_on": "2025-12-31",
               "notice_days": 90}),
        json!({"type": "deliver_service", "contract_id": "c-2025-001", "service_id": "onboarding",
               "promised_on": "2025-02-01", "delivered_on": "2025-01-30",
               "exceeded_expectations": true}),
        json!({"type": "delay_service", "contract_id": "c-2025-001", "service_id": "migration",
               "promised_on": "2025-03-01", "days_late": 12, "reason": "vendor outage"}),
        json!({"type": "respond_to_request", "request_id": "r-381", "response_minutes": 25}),
        json!({"type": "log_complaint", "complaint_id": "q-7", "severity": "major",
               "topic": "invoice errors"}),
        json!({"type": "resolve_complaint", "complaint_id": "q-7", "resolution_hours": 20}),
        json!({"type": "deliver_value_add", "kind": "industry_insight",
               "note": "quarterly market report"}),
        json!({"type": "record_care_touch", "kind": "holiday"}),
        json!({"type": "record_survey", "kind": "nps", "score": 9, "comment": "responsive team"}),
        json!({"type": "record_purchase", "order_id": "o-42", "amount_minor": 250000,
               "currency": "EUR", "ordered_on": "2025-04-02"}),
        json!({"type": "record_activity", "day": "2025-04-03", "logins": 14, "active_users": 6}),
        json!({"type": "change_key_contact", "role": "decision_maker",
               "previous_contact": "cfo.alt", "new_contact": "cfo.neu"}),
        json!({"type": "mark_renewal_due", "contract_id": "c-2025-001",
               "term_ends_on": "2025-12-31"}),
        json!({"type": "renew_contract", "contract_id": "c-2025-001",
               "new_ends_on": "2026-12-31", "value_minor": 1300000}),
        json!({"type": "expand_contract", "contract_id": "c-2025-001", "kind": "upsell",
               "added_value_minor": 200000}),
        json!({"type": "terminate_contract", "contract_id": "c-2025-001",
               "reason": "budget cut"}),
        json!({"type": "flag_inactivity", "days_inactive": 30, "last_activity_on": "2025-05-01"}),
        json!({"type": "log_intervention", "alert_id": "a-1", "action": "executive_escalation",
               "note": "CEO call scheduled"}),
    ]
}

/// The document as JSON, built once per process.
pub fn json() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let (_, paths) = crate::app::api_routes().split_for_parts();
        document(paths).to_pretty_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "OpenAPI document failed to serialize");
            "{}".to_owned()
        })
    })
}

/// The whole document: the router's paths plus the generated errors and examples.
pub fn document(paths: Document) -> Document {
    let mut doc = ApiDoc::openapi().merge_from(paths);
    if let Some(components) = doc.components.as_mut() {
        for schema in components.schemas.values_mut() {
            allow_the_type_tag(schema);
        }
    }
    let catalog = error_catalog();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            ("get", item.get.as_mut()),
            ("post", item.post.as_mut()),
            ("put", item.put.as_mut()),
            ("delete", item.delete.as_mut()),
            ("patch", item.patch.as_mut()),
        ] {
            let Some(op) = op else { continue };
            add_errors(method, path, op, &catalog);
            if method == "post" && path.ends_with("/commands") {
                add_command_examples(op);
            }
        }
    }
    doc
}

/// Command payloads refuse unknown fields (`400 unknown_field`), which derives
/// `additionalProperties: false`; but `Command` composes each payload with its `type` tag
/// through `allOf`, and a closed payload schema would make validators reject the tag. The
/// refusal is documented with the 400 examples instead.
fn allow_the_type_tag(schema: &mut RefOr<Schema>) {
    if let RefOr::T(Schema::Object(object)) = schema
        && matches!(
            object.additional_properties.as_deref(),
            Some(AdditionalProperties::FreeForm(false))
        )
    {
        object.additional_properties = None;
    }
}

fn add_errors(method: &str, path: &str, op: &mut Operation, catalog: &[(Scope, ApiError)]) {
    let mut by_status: BTreeMap<StatusCode, Vec<(&'static str, Value)>> = BTreeMap::new();
    for (scope, error) in catalog {
        if scope.applies(method, path, op) {
            let (_, code) = error.status_and_code();
            let (status, body) = error.public_body();
            let examples = by_status.entry(status).or_default();
            if !examples.iter().any(|(c, _)| *c == code) {
                examples.push((code, body));
            }
        }
    }
    for (status, examples) in by_status {
        let codes: Vec<String> = examples.iter().map(|(c, _)| format!("`{c}`")).collect();
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .examples_from_iter(examples.into_iter().map(|(code, body)| {
                (
                    code,
                    ExampleBuilder::new()
                        .summary(code)
                        .value(Some(body))
                        .build(),
                )
            }))
            .build();
        let response = ResponseBuilder::new()
            .description(format!(
                "{}; `error.code` is one of {}",
                status.canonical_reason().unwrap_or("error"),
                codes.join(", ")
            ))
            .content("application/json", content)
            .build();
        op.responses
            .responses
            .insert(status.as_u16().to_string(), RefOr::T(response));
    }
}

fn add_command_examples(op: &mut Operation) {
    let Some(RefOr::T(body)) = op.request_body.as_mut() else {
        return;
    };
    let Some(RefOr::T(content)) = body.content.get_mut("application/json") else {
        return;
    };
    for example in command_examples() {
        if intake::parse_command(example.to_string().as_bytes()).is_err() {
            continue;
        }
        let name = example["type"].as_str().unwrap_or("command").to_owned();
        content.examples.insert(
            name.clone(),
            RefOr::T(
                ExampleBuilder::new()
                    .summary(name)
                    .value(Some(example))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_type_has_an_example_the_parser_accepts() {
        let examples = command_examples();
        for ty in Command::TYPES {
            let example = examples
                .iter()
                .find(|e| e["type"] == *ty)
                .unwrap_or_else(|| panic!("no example for {ty}"));
            intake::parse_command(example.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{ty} example refused: {e}"));
        }
        assert_eq!(examples.len(), Command::TYPES.len());
    }

    #[test]
    fn every_parser_refusal_in_the_catalog_is_a_refusal() {
        for (_, e) in error_catalog() {
            let (status, body) = e.public_body();
            assert!(status.is_client_error() || status.is_server_error());
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.starts_with("(accepted)"), "{message}");
        }
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;

    fn doc() -> Value {
        serde_json::from_str(json()).expect("the document is JSON")
    }

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
        out
    }

    fn example_codes(op: &Value, status: &str) -> Vec<String> {
        op["responses"][status]["content"]["application/json"]["examples"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The paths the interface brief names, plus ops' rebuild.
    #[test]
    fn documents_every_route_of_the_interface() {
        let doc = doc();
        let documented: Vec<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
        for (method, path) in [
            ("get", "/healthz"),
            ("get", "/readyz"),
            ("get", "/openapi.json"),
            ("get", "/metrics"),
            ("post", "/v1/customers/{customer_id}/commands"),
            ("get", "/v1/customers/{customer_id}"),
            ("get", "/v1/customers/{customer_id}/lifecycle/history"),
            ("get", "/v1/customers/{customer_id}/trust/ledger"),
            ("get", "/v1/customers/{customer_id}/alerts"),
            ("get", "/v1/stages"),
            ("get", "/v1/alerts"),
            ("get", "/v1/renewals"),
            ("get", "/v1/admin/projections"),
            ("post", "/v1/admin/projections/{name}/rebuild"),
            ("get", "/v1/audit/events"),
            ("get", "/v1/audit/verify"),
            ("get", "/v1/audit/checkpoints"),
            ("post", "/v1/audit/checkpoints"),
        ] {
            assert!(
                documented.contains(&(method.to_owned(), path.to_owned())),
                "{method} {path} undocumented; documented: {documented:?}"
            );
        }
        assert_eq!(documented.len(), 18, "{documented:?}");
    }

    #[test]
    fn every_secured_operation_documents_401_and_403_and_every_operation_a_success() {
        for (method, path, op) in operations(&doc()) {
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} has no success response"
            );
            if op.get("security").is_some() {
                assert_eq!(
                    example_codes(&op, "401"),
                    ["unauthenticated"],
                    "{method} {path}"
                );
                assert_eq!(example_codes(&op, "403"), ["forbidden"], "{method} {path}");
                assert!(responses.contains_key("503"), "{method} {path}");
            }
        }
    }

    #[test]
    fn the_command_operation_lists_every_error_code_and_command_example() {
        let doc = doc();
        let op = &doc["paths"]["/v1/customers/{customer_id}/commands"]["post"];
        let unprocessable = example_codes(op, "422");
        for e in DomainError::examples() {
            assert!(unprocessable.contains(&e.code().to_owned()), "{}", e.code());
        }
        assert!(unprocessable.contains(&"idempotency_key_reused".to_owned()));
        let bad = example_codes(op, "400");
        for code in [
            "malformed_json",
            "invalid_command",
            "missing_command_type",
            "unknown_command_type",
            "unknown_field",
            "invalid_occurred_at",
            "invalid_customer_id",
            "invalid_if_match",
            "invalid_idempotency_key",
        ] {
            assert!(bad.contains(&code.to_owned()), "400 lacks {code}: {bad:?}");
        }
        assert_eq!(
            example_codes(op, "409"),
            ["concurrent_modification", "version_conflict"]
        );
        assert_eq!(example_codes(op, "413"), ["payload_too_large"]);
        let examples = op["requestBody"]["content"]["application/json"]["examples"]
            .as_object()
            .expect("command examples");
        for ty in Command::TYPES {
            assert!(examples.contains_key(*ty), "no example for {ty}");
        }
        // The request schema is the domain's Command, with every type.
        let schemas = &doc["components"]["schemas"];
        let command = serde_json::to_string(&schemas["Command"]).expect("Command schema");
        for ty in Command::TYPES {
            assert!(
                command.contains(&format!("\"{ty}\"")),
                "{ty} not in the schema"
            );
        }
    }

    #[test]
    fn reads_document_their_not_found_and_query_errors() {
        let doc = doc();
        let customer = &doc["paths"]["/v1/customers/{customer_id}"]["get"];
        assert_eq!(example_codes(customer, "404"), ["customer_not_found"]);
        assert_eq!(example_codes(customer, "400"), ["invalid_customer_id"]);
        let alerts = &doc["paths"]["/v1/alerts"]["get"];
        assert_eq!(example_codes(alerts, "400"), ["invalid_query"]);
        // A customer the log does not know, named in verify's query.
        let verify = &doc["paths"]["/v1/audit/verify"]["get"];
        assert_eq!(example_codes(verify, "404"), ["customer_not_found"]);
        let health = &doc["paths"]["/healthz"]["get"];
        assert!(health.get("security").is_none());
        assert!(health["responses"].get("401").is_none());
    }

    /// Every view read can find the read store down (503 `read_store_unavailable`), and
    /// `/readyz` documents its own 503 body (which part is down), not an error.
    #[test]
    fn reads_document_an_unavailable_read_store_and_readyz_its_own_body() {
        let doc = doc();
        for path in [
            "/v1/customers/{customer_id}",
            "/v1/alerts",
            "/v1/renewals",
            "/v1/stages",
            "/v1/audit/events",
            "/metrics",
        ] {
            let op = &doc["paths"][path]["get"];
            assert!(
                example_codes(op, "503").contains(&"read_store_unavailable".to_owned()),
                "{path}: {:?}",
                example_codes(op, "503")
            );
        }
        let commands = &doc["paths"]["/v1/customers/{customer_id}/commands"]["post"];
        assert!(!example_codes(commands, "503").contains(&"read_store_unavailable".to_owned()));
        let readyz = &doc["paths"]["/readyz"]["get"];
        assert!(example_codes(readyz, "503").is_empty(), "{readyz}");
        assert!(readyz["responses"].get("500").is_none(), "{readyz}");
        let schema = readyz["responses"]["503"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_default();
        assert!(schema.ends_with("/Readyz"), "{readyz}");
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    /// A strict validator must accept a command with its `type` tag.
    #[test]
    fn command_payload_schemas_do_not_close_out_the_type_tag() {
        let doc: Value = serde_json::from_str(json()).expect("JSON");
        let sign = &doc["components"]["schemas"]["SignContract"];
        assert!(sign.get("additionalProperties").is_none(), "{sign}");
        assert_eq!(sign["properties"]["ends_on"]["format"], "date");
    }
}
