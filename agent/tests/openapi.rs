//! `/v1/openapi.json`: valid OpenAPI 3.1 by an independent validator (PyPI
//! `openapi-spec-validator`, from `.ci/steps/30-openapi.sh`, found through
//! `DOCKLINE_TEST_OPENAPI_PYTHON`), and every documented operation answers
//! as documented: called with its example, it gives a documented status
//! with the documented required fields, and without a token the documented
//! 401.

mod support;

use serde_json::Value;
use support::start_agent;

async fn fetch_document(agent: &support::Agent) -> Value {
    // Public: no token needed.
    let res = reqwest::get(agent.url("/v1/openapi.json"))
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let agent = start_agent().await;
    let doc = fetch_document(&agent).await;
    agent.stop().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let Ok(python) = std::env::var("DOCKLINE_TEST_OPENAPI_PYTHON") else {
        println!(
            "SKIP the_document_is_valid_openapi_3_1: set DOCKLINE_TEST_OPENAPI_PYTHON to a python with openapi-spec-validator (.ci/steps/30-openapi.sh makes one)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nfrom openapi_spec_validator.validation import OpenAPIV31SpecValidator\nvalidate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\nprint('valid')",
        ])
        .arg(&file)
        .output()
        .expect("run the validator");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("valid"),
        "openapi-spec-validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let mut at = doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            resolve(doc, at)
        }
        None => v,
    }
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let agent = start_agent().await;
    let doc = fetch_document(&agent).await;
    let http = agent.http();
    let bare = reqwest::Client::new();
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<String> = paths.keys().cloned().collect();
    documented.sort();
    assert_eq!(
        documented,
        [
            "/app/",
            "/v1/events",
            "/v1/events/{id}",
            "/v1/link",
            "/v1/media",
            "/v1/media/{sha256}",
            "/v1/openapi.json",
            "/v1/status",
            "/v1/tasks"
        ],
        "every served route is documented, and nothing else"
    );
    // An event to ask about.
    let example = &doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
        ["example"];
    let first: Value = http
        .post(agent.url("/v1/events"))
        .json(example)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = first["event_id"].as_str().expect("event id").to_string();

    // An image to keep, at its hash.
    let image = b"\x89PNG\r\n\x1a\nnot-really-a-png-but-bytes".to_vec();
    let hash: String = {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(&image)?;
                child.wait_with_output()
            })
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("digest")
            .to_string()
    };

    let mut checked = 0;
    // POSTs first, so the GETs have something to list.
    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops.sort_by_key(|(_, m, _)| m != "post" && m != "put");
    for (path, method, op) in ops {
        let url = agent.url(&path.replace("{id}", &id).replace("{sha256}", &hash));
        let body = &op["requestBody"]["content"]["application/json"]["example"];
        let takes_image = op["requestBody"]["content"]["image/png"].is_object();
        let send = |client: &reqwest::Client| {
            let mut req = client.request(method.to_uppercase().parse().expect("method"), &url);
            if !body.is_null() {
                req = req.json(body);
            }
            if takes_image {
                req = req.header("content-type", "image/png").body(image.clone());
            }
            req.send()
        };
        let res = send(&http).await.expect("send");
        let status = res.status().as_u16().to_string();
        let response = &op["responses"][&status];
        assert!(
            !response.is_null(),
            "{method} {path} answered {status}, which is not documented"
        );
        assert!(res.status().is_success(), "{method} {path}: {status}");
        let response = resolve(&doc, response);
        if let Some(schema) = response["content"]["application/json"]["schema"].as_object() {
            let schema = resolve(&doc, &Value::Object(schema.clone())).clone();
            let answer: Value = res.json().await.expect("JSON as documented");
            for field in schema["required"].as_array().into_iter().flatten() {
                let field = field.as_str().expect("field name");
                assert!(
                    !answer[field].is_null(),
                    "{method} {path}: documented field {field:?} missing from {answer}"
                );
            }
        } else if response["content"]["image/png"].is_object() {
            let ct = res.headers()["content-type"]
                .to_str()
                .expect("ct")
                .to_string();
            assert!(ct.starts_with("image/"), "{method} {path}: {ct}");
            assert_eq!(res.bytes().await.expect("bytes").as_ref(), &image[..]);
        } else if response["content"]["text/html"].is_object() {
            let ct = res.headers()["content-type"]
                .to_str()
                .expect("ct")
                .to_string();
            assert!(ct.starts_with("text/html"), "{method} {path}: {ct}");
        }
        // Without credentials: the documented 401, or open if documented so.
        let open = op["security"].as_array().is_some_and(|s| s.is_empty());
        let res = send(&bare).await.expect("send");
        if open {
            assert!(
                res.status().is_success(),
                "{method} {path} is documented as open"
            );
        } else {
            assert_eq!(res.status(), 401, "{method} {path} without a token");
            assert!(
                !op["responses"]["401"].is_null(),
                "{method} {path}: 401 undocumented"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 13, "every documented operation was called");
    agent.stop().await;
}
