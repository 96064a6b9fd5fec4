//! The OpenAPI 3.1 description of the agent's local API, served at
//! `/v1/openapi.json` (public: it holds no data).
//!
//! Written by hand beside the handlers rather than generated, so it says
//! what a client must know (the Idempotency-Key rule, the 421/403/401/415
//! refusals, the long poll) in words. `agent/tests/openapi.rs` keeps it
//! honest: an independent validator (PyPI `openapi-spec-validator`) checks
//! the document, and every documented operation is called with its example
//! and must answer a documented status with the documented fields.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `GET /v1/openapi.json`.
pub async fn document() -> Response {
    Json(spec()).into_response()
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The refusals every protected operation can answer.
fn refusals() -> Value {
    json!({
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "403": {"$ref": "#/components/responses/CrossOrigin"},
        "421": {"$ref": "#/components/responses/ForeignHost"}
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// The document.
pub fn spec() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "dockline agent local API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The API a handheld app uses on 127.0.0.1. Every request passes the guard first: a Host that is not loopback (or in [api] allowed_hosts) is 421; an Origin that is not the agent itself (or in [api] allowed_origins) is 403; without the per-install token (Authorization: Bearer, printed by `dockline-agent token`) or the app cookie set by /app/ it is 401; a POST that is not application/json is 415. Bodies are capped at 64 KiB (413). Errors are JSON {\"error\"} naming the fix."
        },
        "servers": [{"url": "http://127.0.0.1:7878"}],
        "security": [{"bearer": []}, {"appCookie": []}],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The per-install token ({data_dir}/api.token, `dockline-agent token`) or [api] token"},
                "appCookie": {"type": "apiKey", "in": "cookie", "name": "dockline_app", "description": "Set by GET /app/; honoured only without a foreign Origin"}
            },
            "responses": {
                "Unauthorized": error_response("No token and no app cookie"),
                "CrossOrigin": error_response("A foreign Origin (or a cross-site fetch) not in [api] allowed_origins"),
                "ForeignHost": error_response("A Host that is not loopback or in [api] allowed_hosts (DNS rebinding)")
            },
            "schemas": schemas()
        }
    })
}

fn paths() -> Value {
    let idempotency = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "One key per request, sent again with every retry of it (a UUID). The same key and body answer the first result (200, same ids, nothing stored twice, also after an agent restart); the same key with another body is 422. 1 to 128 visible ASCII characters.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$"}
    });
    json!({
        "/v1/events": {
            "post": {
                "operationId": "postEvent",
                "summary": "Queue a business event; answered after the commit that holds it",
                "parameters": [idempotency.clone()],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/PostedEvent"},
                        "example": {"detail": {"picked": {"item": "09506000134352", "quantity": 2}}, "refs": {"order": "SO-1001"}}
                    }}
                },
                "responses": merge(json!({
                    "201": {"description": "Stored (committed, fsynced for picks and proofs of delivery)",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                    "200": {"description": "A retry under the same Idempotency-Key: the first event, stored once",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
                    "400": error_response("Not JSON, not an event, or a malformed Idempotency-Key"),
                    "413": {"description": "Body above 64 KiB"},
                    "415": error_response("Not Content-Type: application/json"),
                    "422": error_response("The event breaks a protocol rule, or the Idempotency-Key was used for another body"),
                    "503": error_response("The agent is shutting down; retry with the same key"),
                    "507": error_response("The outbox is full of events that must not be shed; keep the event and retry")
                }), refusals())
            },
            "get": {
                "operationId": "listReceipts",
                "summary": "Receipts, newest first",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"$ref": "#/components/schemas/State"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100}},
                    {"name": "before", "in": "query", "description": "Only sequences below this one (the last seq of a page, for the next page)", "schema": {"type": "integer", "minimum": 0}}
                ],
                "responses": merge(json!({
                    "200": {"description": "Receipts",
                        "content": {"application/json": {"schema": {
                            "type": "object", "required": ["events"],
                            "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Receipt"}}}
                        }}}},
                    "400": error_response("Unknown state")
                }), refusals())
            }
        },
        "/v1/events/{id}": {
            "get": {
                "operationId": "getReceipt",
                "summary": "One event's receipt; with known and wait_ms a long poll that answers when the state changed",
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}},
                    {"name": "known", "in": "query", "description": "The state the caller has; with wait_ms, answer once the receipt left it", "schema": {"$ref": "#/components/schemas/State"}},
                    {"name": "wait_ms", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 30000, "default": 0}}
                ],
                "responses": merge(json!({
                    "200": {"description": "The receipt",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Receipt"}}}},
                    "400": error_response("Not an event id"),
                    "404": error_response("No such event on this device")
                }), refusals())
            }
        },
        "/v1/tasks": {
            "post": {
                "operationId": "postTask",
                "summary": "A pick list for the pick stations; the same order replaces it until a station opens it",
                "parameters": [idempotency],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/PickTask"},
                        "example": {"order": "SO-1001", "lines": [{"item": "09506000134352", "quantity": 2, "unit_weight_kg": 0.25}]}
                    }}
                },
                "responses": merge(json!({
                    "201": {"description": "Waiting for a station",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskAccepted"}}}},
                    "200": {"description": "A retry under the same Idempotency-Key: the first answer",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskAccepted"}}}},
                    "400": error_response("Not JSON or not a pick list"),
                    "413": {"description": "Body above 64 KiB"},
                    "415": error_response("Not Content-Type: application/json"),
                    "422": error_response("A bad line (GTIN, quantity), or the Idempotency-Key was used for another list"),
                    "507": error_response("Too many lists waiting")
                }), refusals())
            },
            "get": {
                "operationId": "listTasks",
                "summary": "Pick lists waiting for a station",
                "responses": merge(json!({
                    "200": {"description": "Waiting lists",
                        "content": {"application/json": {"schema": {
                            "type": "object", "required": ["tasks"],
                            "properties": {"tasks": {"type": "array", "items": {"$ref": "#/components/schemas/PickTask"}}}
                        }}}}
                }), refusals())
            }
        },
        "/v1/status": {
            "get": {
                "operationId": "status",
                "summary": "Queue, link, device, station and API health",
                "responses": merge(json!({
                    "200": {"description": "Status",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}
                }), refusals())
            }
        },
        "/v1/media": {"get": media_list(), "post": media_post()},
        "/v1/link": {"post": {
            "operationId": "postLink",
            "summary": "Tell a metered device ([uplink] metered) that its link is unmetered now (Wi-Fi): media go at once; metered: true holds them again until the configured window",
            "requestBody": {"required": true, "content": {"application/json": {
                "schema": {"type": "object", "required": ["metered"], "properties": {"metered": {"type": "boolean"}}},
                "example": {"metered": false}}}},
            "responses": merge(json!({
                "200": {"description": "Taken", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["metered"], "properties": {"metered": {"type": "boolean"}}}}}},
                "400": error_response("Not {\"metered\": bool}")
            }), refusals())
        }},
        "/v1/media/{sha256}": media_item(),
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object", "required": ["openapi", "paths"]}}}},
                    "421": {"$ref": "#/components/responses/ForeignHost"}
                }
            }
        },
        "/app/": {
            "get": {
                "operationId": "app",
                "summary": "The handheld app (HTML); sets the app cookie (HttpOnly, SameSite=Strict) that authorises its calls",
                "security": [],
                "responses": {
                    "200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    "421": {"$ref": "#/components/responses/ForeignHost"}
                }
            }
        }
    })
}

fn schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "State": {"type": "string", "enum": ["queued", "stored", "booked", "rejected", "shed"]},
        "Accepted": {
            "type": "object", "required": ["seq", "epoch", "event_id", "state", "replayed"],
            "properties": {
                "seq": {"type": "integer"}, "epoch": {"type": "integer"},
                "event_id": {"type": "string", "format": "uuid"},
                "state": {"$ref": "#/components/schemas/State"},
                "replayed": {"type": "boolean", "description": "true: answered from an earlier request with the same Idempotency-Key"}
            }
        },
        "Receipt": {
            "type": "object", "required": ["seq", "event_id", "kind", "state", "updated_ms"],
            "properties": {
                "seq": {"type": "integer"}, "event_id": {"type": "string", "format": "uuid"},
                "kind": {"type": "string"}, "state": {"$ref": "#/components/schemas/State"},
                "document": {"type": "string", "description": "The ERP's document when booked"},
                "reason": {"type": "string", "description": "Why rejected or shed"},
                "updated_ms": {"type": "integer"}
            }
        },
        "PostedEvent": {
            "type": "object", "required": ["detail"], "additionalProperties": false,
            "properties": {
                "priority": {"type": "string", "enum": ["must_deliver", "normal", "telemetry"]},
                "detail": {"$ref": "#/components/schemas/EventDetail"},
                "refs": {"$ref": "#/components/schemas/References"},
                "captured_ms": {"type": "integer", "description": "Capture time, Unix ms; now when absent"}
            }
        },
        "References": {
            "type": "object",
            "properties": {
                "order": {"type": "string"}, "shipment": {"type": "string"}, "stop": {"type": "string"},
                "sscc": {"type": "string"}, "location": {"type": "string"}
            }
        },
        "EventDetail": event_detail_schema(),
        "PickTask": {
            "type": "object", "required": ["order", "lines"],
            "properties": {
                "order": {"type": "string"},
                "lines": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["item", "quantity"],
                    "properties": {"item": {"type": "string", "description": "GTIN-8/12/13/14"}, "quantity": {"type": "integer", "minimum": 1},
                        "unit_weight_kg": {"type": "number"}}}}
            }
        },
        "MediaAccepted": {
            "type": "object", "required": ["ref", "hash", "bytes", "state", "have"],
            "properties": {"ref": {"type": "string"}, "hash": {"type": "string"}, "type": {"type": "string"},
                "bytes": {"type": "integer"}, "have": {"type": "integer"}, "replayed": {"type": "boolean"},
                "state": {"type": "string", "enum": ["queued", "stored", "attached", "refused"]},
                "document": {"type": "string"}, "reason": {"type": "string"}}
        },
        "TaskAccepted": {
            "type": "object", "required": ["order", "lines", "replaced", "state"],
            "properties": {"order": {"type": "string"}, "lines": {"type": "integer"}, "replaced": {"type": "boolean"}, "state": {"type": "string"}}
        },
        "Status": status_schema()
    })
}

fn event_detail_schema() -> Value {
    json!({
        "description": "Exactly one kind of event",
        "oneOf": [
            {"type": "object", "required": ["picked"], "properties": {"picked": {"type": "object", "required": ["item", "quantity"],
                "properties": {"item": {"type": "string"}, "quantity": {"type": "integer", "minimum": 0}, "lot": {"type": "string"}}}}},
            {"type": "object", "required": ["packed"], "properties": {"packed": {"type": "object", "required": ["quantity"],
                "properties": {"quantity": {"type": "integer", "minimum": 0}, "weight": {"type": "object"}}}}},
            {"type": "object", "required": ["loaded"], "properties": {"loaded": {"type": "object", "required": ["vehicle"],
                "properties": {"vehicle": {"type": "string"}}}}},
            {"type": "object", "required": ["departed"], "properties": {"departed": {"type": "object", "required": ["vehicle"],
                "properties": {"vehicle": {"type": "string"}, "position": {"type": "object"}}}}},
            {"type": "object", "required": ["arrived"], "properties": {"arrived": {"type": "object", "required": ["vehicle"],
                "properties": {"vehicle": {"type": "string"}, "position": {"type": "object"}}}}},
            {"type": "object", "required": ["delivered"], "properties": {"delivered": {"type": "object", "required": ["received_by", "pieces"],
                "properties": {"received_by": {"type": "string"}, "pieces": {"type": "integer", "minimum": 0},
                    "signature_ref": {"type": "string"}, "photo_ref": {"type": "string"}, "position": {"type": "object"}}}}},
            {"type": "object", "required": ["exception"], "properties": {"exception": {"type": "object", "required": ["kind"],
                "properties": {"kind": {"type": "string", "enum": ["short_pick", "wrong_item", "weight_mismatch", "damaged", "delivery_refused", "not_home", "other"]},
                    "note": {"type": "string"}}}}}
        ]
    })
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "required": ["device", "site", "epoch", "next_seq", "acked_up_to", "queued", "queued_bytes", "oldest_unacked_ms",
            "stored", "booked", "rejected", "mqtt_connected", "api_refusals"],
        "properties": {
            "device": {"type": "string"}, "site": {"type": "string"}, "epoch": {"type": "integer"},
            "next_seq": {"type": "integer"}, "acked_up_to": {"type": "integer"}, "queued": {"type": "integer"},
            "queued_bytes": {"type": "integer"}, "oldest_unacked_ms": {"type": "integer"},
            "stored": {"type": "integer"}, "booked": {"type": "integer"}, "rejected": {"type": "integer"},
            "mqtt_connected": {"type": "boolean"}, "mqtt_connects": {"type": "integer"}, "ack_timeouts": {"type": "integer"},
            "media": {"type": "object", "description": "held, bytes, queued, queued_bytes, stored, attached, refused; sent_bytes and resent_bytes on the media topic"},
            "commands": {"type": "object"}, "devices": {}, "stations": {},
            "api_refusals": {"type": "object", "required": ["host", "origin", "token", "content_type", "connections", "slow_headers"],
                "properties": {"host": {"type": "integer"}, "origin": {"type": "integer"}, "token": {"type": "integer"},
                    "content_type": {"type": "integer"}, "connections": {"type": "integer"}, "slow_headers": {"type": "integer"}}}
        }
    })
}

fn media_list() -> Value {
    let held = json!({"description": "Held media",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["media"],
        "properties": {"media": {"type": "array", "items": {"$ref": "#/components/schemas/MediaAccepted"}}}
    }}}});
    json!({
        "operationId": "listMedia",
        "summary": "Signatures and photos on the agent, oldest first, each with its state: queued (have: bytes the collector holds), stored (at the collector), attached (at the ERP, with its document) or refused (with the reason)",
        "responses": merge(json!({"200": held}), refusals())
    })
}

fn media_post() -> Value {
    json!({
        "operationId": "postMedia",
        "summary": "Store an image; the agent names it by its SHA-256 (reference it as sha256:<hex> in a delivery's signature_ref or photo_ref). Sent to the collector after that event is stored",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Same key and bytes: the first answer again (200); same key, other bytes: 422",
            "schema": {"type": "string", "minLength": 1, "maxLength": 128}}],
        "requestBody": {"required": true, "content": {
            "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
            "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}
        }},
        "responses": merge(json!({
            "201": {"description": "Stored (fsynced)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MediaAccepted"}}}},
            "200": {"description": "Held already, or a replayed Idempotency-Key", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MediaAccepted"}}}},
            "400": error_response("A malformed Idempotency-Key"),
            "413": error_response("Above [media] max_bytes (2 MiB by default)"),
            "415": error_response("Not a PNG or JPEG by its bytes, or not the declared type"),
            "422": error_response("The Idempotency-Key was used for another image"),
            "507": error_response("No room in the disk budget beside the queued events (media are never shed)")
        }), refusals())
    })
}

fn media_item() -> Value {
    let hash = json!({"name": "sha256", "in": "path", "required": true,
        "description": "SHA-256 of the image's bytes, lower-case hex; events refer to it as sha256:<hex>",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}});
    json!({
        "put": {
            "operationId": "putMedia",
            "summary": "Store an image at the SHA-256 the client computed (checked), sealed with the device's key; sent to the collector after the event that names it is stored",
            "parameters": [hash.clone()],
            "requestBody": {"required": true, "content": {
                "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}
            }},
            "responses": merge(json!({
                "201": {"description": "Stored", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MediaAccepted"}}}},
                "200": {"description": "Held already", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MediaAccepted"}}}},
                "400": error_response("Not a lower-case hex SHA-256"),
                "413": error_response("Above [media] max_bytes (2 MiB by default)"),
                "415": error_response("Not a PNG or JPEG by its bytes, or not the declared type"),
                "422": error_response("The body's SHA-256 is not the one in the path, or the Idempotency-Key was used for another image"),
                "507": error_response("No room in the disk budget beside the queued events (media are never shed)")
            }), refusals())
        },
        "get": {
            "operationId": "getMedia",
            "summary": "The image back",
            "parameters": [hash],
            "responses": merge(json!({
                "200": {"description": "The image", "content": {
                    "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                    "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}
                }},
                "400": error_response("Not a lower-case hex SHA-256"),
                "404": error_response("No such media on this agent")
            }), refusals())
        }
    })
}
