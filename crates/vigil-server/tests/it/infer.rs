//! Inference over JSON and the binary tensor extension, compared with the
//! outputs onnxruntime computed for the same inputs (`models/expected.json`).

use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn json_predictions_match_onnxruntime() {
    let s = TestServer::demo().await;
    for case in expected_cases() {
        let model = case["model"].as_str().unwrap();
        let mut request = request_for(&case);
        request["id"] = json!(format!("req-{model}"));
        let (status, out) = s.post_json(&format!("/v2/models/{model}/infer"), &request).await;
        assert_eq!(status, 200, "{model}: {out}");
        assert_eq!(out["model_name"], model);
        assert_eq!(out["model_version"], "1");
        assert_eq!(out["id"], format!("req-{model}"));
        let want = case["outputs"].as_object().unwrap();
        assert_eq!(out["outputs"].as_array().unwrap().len(), want.len(), "{model}");
        for got in out["outputs"].as_array().unwrap() {
            let name = got["name"].as_str().unwrap();
            assert_tensor_matches(got, &want[name], &format!("{model}.{name}"));
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn demo_models_predict_the_right_classes() {
    let s = TestServer::demo().await;
    for model in ["breast_cancer", "digits_cnn"] {
        let case = case(model);
        let (_, out) = s.post_json(&format!("/v2/models/{model}/infer"), &request_for(&case)).await;
        let label = out["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "label").unwrap();
        assert_eq!(label["data"], case["outputs"]["label"]["data"], "{model}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn nested_data_equals_flat_data_and_id_is_optional() {
    let s = TestServer::demo().await;
    let case = case("breast_cancer");
    let flat = request_for(&case);
    let rows: Vec<Value> =
        case["inputs"]["features"]["data"].as_array().unwrap().chunks(30).map(|r| json!(r)).collect();
    let mut nested = flat.clone();
    nested["inputs"][0]["data"] = json!(rows);
    let (s1, a) = s.post_json("/v2/models/breast_cancer/infer", &flat).await;
    let (s2, b) = s.post_json("/v2/models/breast_cancer/infer", &nested).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(a, b);
    assert!(a.get("id").is_none());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn outputs_filter_selects_and_orders() {
    let s = TestServer::demo().await;
    let mut request = request_for(&case("breast_cancer"));
    request["outputs"] = json!([{"name": "probabilities"}]);
    let (status, out) = s.post_json("/v2/models/breast_cancer/infer", &request).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = out["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["probabilities"]);

    request["outputs"] = json!([{"name": "probabilities"}, {"name": "label"}]);
    let (_, out) = s.post_json("/v2/models/breast_cancer/infer", &request).await;
    let names: Vec<&str> = out["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["probabilities", "label"]);

    request["outputs"] = json!([{"name": "logits"}]);
    let (status, err) = s.post_json("/v2/models/breast_cancer/infer", &request).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("unknown output 'logits'"), "{err}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn versioned_infer_route() {
    let s = TestServer::demo().await;
    let request = request_for(&case("digits_cnn"));
    let (status, out) = s.post_json("/v2/models/digits_cnn/versions/1/infer", &request).await;
    assert_eq!(status, 200);
    assert_eq!(out["model_version"], "1");
    let (status, err) = s.post_json("/v2/models/digits_cnn/versions/2/infer", &request).await;
    assert_eq!(status, 404);
    assert!(err["error"].as_str().unwrap().contains("no version '2'"), "{err}");
    s.stop().await.unwrap();
}

/// Little-endian bytes of a JSON tensor, as the binary extension carries it.
pub fn to_binary(t: &Value) -> Vec<u8> {
    let data = t["data"].as_array().unwrap();
    let mut out = Vec::new();
    for v in data {
        match t["datatype"].as_str().unwrap() {
            "BOOL" => out.push(u8::from(v.as_bool().unwrap())),
            "INT8" => out.extend((v.as_i64().unwrap() as i8).to_le_bytes()),
            "INT16" => out.extend((v.as_i64().unwrap() as i16).to_le_bytes()),
            "INT32" => out.extend((v.as_i64().unwrap() as i32).to_le_bytes()),
            "INT64" => out.extend(v.as_i64().unwrap().to_le_bytes()),
            "UINT8" => out.push(v.as_u64().unwrap() as u8),
            "UINT16" => out.extend((v.as_u64().unwrap() as u16).to_le_bytes()),
            "UINT32" => out.extend((v.as_u64().unwrap() as u32).to_le_bytes()),
            "UINT64" => out.extend(v.as_u64().unwrap().to_le_bytes()),
            "FP16" => out.extend(half::f16::from_f64(v.as_f64().unwrap()).to_le_bytes()),
            "FP32" => out.extend((v.as_f64().unwrap() as f32).to_le_bytes()),
            "FP64" => out.extend(v.as_f64().unwrap().to_le_bytes()),
            "BYTES" => {
                let s = v.as_str().unwrap().as_bytes();
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s);
            }
            other => panic!("{other}"),
        }
    }
    out
}

/// Sends a request with every input in binary and asks for every output in binary.
pub async fn binary_infer(s: &TestServer, model: &str, case: &Value) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut inputs = Vec::new();
    let mut blobs = Vec::new();
    for (name, t) in case["inputs"].as_object().unwrap() {
        let b = to_binary(t);
        inputs.push(json!({"name": name, "datatype": t["datatype"], "shape": t["shape"],
                           "parameters": {"binary_data_size": b.len()}}));
        blobs.extend(b);
    }
    let outputs: Vec<Value> = case["outputs"]
        .as_object()
        .unwrap()
        .keys()
        .map(|name| json!({"name": name, "parameters": {"binary_data": true}}))
        .collect();
    let header = serde_json::to_vec(&json!({"id": "bin", "inputs": inputs, "outputs": outputs})).unwrap();
    let header_len = header.len();
    let mut body = header;
    body.extend(blobs);
    let r = s
        .client
        .post(s.url(&format!("/v2/models/{model}/infer")))
        .header("Inference-Header-Content-Length", header_len.to_string())
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn binary_extension_in_both_directions_for_every_datatype() {
    let s = TestServer::demo().await;
    for case in expected_cases() {
        let model = case["model"].as_str().unwrap();
        let (status, headers, body) = binary_infer(&s, model, &case).await;
        assert_eq!(status, 200, "{model}: {}", String::from_utf8_lossy(&body));
        assert_eq!(headers["content-type"], "application/octet-stream");
        let header_len: usize = headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
        let header: Value = serde_json::from_slice(&body[..header_len]).unwrap();
        assert_eq!(header["id"], "bin");
        let mut rest = &body[header_len..];
        for out in header["outputs"].as_array().unwrap() {
            let name = out["name"].as_str().unwrap();
            assert!(out.get("data").is_none());
            let size = out["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
            let (bytes, tail) = rest.split_at(size);
            rest = tail;
            let want = &case["outputs"][name];
            assert_eq!(out["datatype"], want["datatype"]);
            assert_eq!(out["shape"], want["shape"]);
            if want["datatype"] == "FP32" {
                let got: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                let w: Vec<f64> = want["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                for (g, w) in got.iter().zip(&w) {
                    assert!((f64::from(*g) - w).abs() <= 1e-5 || *g == *w as f32, "{model}.{name}: {g} vs {w}");
                }
            } else {
                assert_eq!(bytes, to_binary(want), "{model}.{name}");
            }
        }
        assert!(rest.is_empty(), "{model}: trailing bytes");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn binary_data_output_parameter_and_mixed_outputs() {
    let s = TestServer::demo().await;
    let mut request = request_for(&case("breast_cancer"));
    request["parameters"] = json!({"binary_data_output": true});
    let r = s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&request).send().await.unwrap();
    let len: usize = r.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let body = r.bytes().await.unwrap();
    let header: Value = serde_json::from_slice(&body[..len]).unwrap();
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 5 * 8);
    assert_eq!(header["outputs"][1]["parameters"]["binary_data_size"], 5 * 2 * 4);
    assert_eq!(body.len(), len + 40 + 40);

    // One output in JSON, one in binary.
    request["outputs"] = json!([{"name": "label", "parameters": {"binary_data": false}}, {"name": "probabilities"}]);
    let r = s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&request).send().await.unwrap();
    let len: usize = r.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let body = r.bytes().await.unwrap();
    let header: Value = serde_json::from_slice(&body[..len]).unwrap();
    assert_eq!(header["outputs"][0]["data"], case("breast_cancer")["outputs"]["label"]["data"]);
    assert_eq!(header["outputs"][1]["parameters"]["binary_data_size"], 40);

    // No binary outputs: plain JSON, no header.
    let r = s
        .client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .json(&request_for(&case("breast_cancer")))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("inference-header-content-length").is_none());
    assert_eq!(r.headers()["content-type"], "application/json");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_timeout_that_has_passed_is_504_without_running() {
    let s = TestServer::demo().await;
    let mut request = request_for(&case("digits_cnn"));
    request["parameters"] = json!({"timeout": 1});
    let (status, err) = s.post_json("/v2/models/digits_cnn/infer", &request).await;
    assert_eq!(status, 504, "{err}");
    assert_eq!(err["code"], "deadline_exceeded");
    request["parameters"] = json!({"timeout": 0});
    assert_eq!(s.post_json("/v2/models/digits_cnn/infer", &request).await.0, 200, "0 means no timeout");
    request["parameters"] = json!({"timeout": 60_000_000});
    assert_eq!(s.post_json("/v2/models/digits_cnn/infer", &request).await.0, 200);
    request["parameters"] = json!({"timeout": "soon"});
    assert_eq!(s.post_json("/v2/models/digits_cnn/infer", &request).await.0, 400);
    s.stop().await.unwrap();
}

/// Dynamic batching configured in config.toml: concurrent callers of a batched
/// model each get exactly the answer an unbatched model gives them.
#[tokio::test]
async fn batched_model_answers_every_caller_correctly() {
    let repo = TempRepo::new("batched");
    repo.model("cnn", "1", &model_bytes("demo/digits_cnn/1/model.onnx")).file(
        "cnn/config.toml",
        "[scheduling]\ninstances = 1\n[batching]\nmax_batch_size = 32\nmax_queue_delay_us = 5000\n",
    );
    let s = TestServer::start(config(Some(repo.0.clone()), vigil_server::Limits::default())).await;
    let case = case("digits_cnn");
    let images: Vec<Value> = case["inputs"]["image"]["data"].as_array().unwrap().chunks(64).map(|c| json!(c)).collect();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let image = images[i % images.len()].clone();
        let (client, url, plain) =
            (s.client.clone(), s.url("/v2/models/cnn/infer"), s.url("/v2/models/digits_cnn/infer"));
        tasks.push(tokio::spawn(async move {
            let body = json!({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": image}]});
            let batched: Value = client.post(url).json(&body).send().await.unwrap().json().await.unwrap();
            let alone: Value = client.post(plain).json(&body).send().await.unwrap().json().await.unwrap();
            (batched["outputs"].clone(), alone["outputs"].clone())
        }));
    }
    for t in tasks {
        // Batched matrix products may round the last bit differently.
        let (batched, alone) = t.await.unwrap();
        for (b, a) in batched.as_array().unwrap().iter().zip(alone.as_array().unwrap()) {
            let mut want = a.clone();
            want["name"] = b["name"].clone();
            assert_tensor_matches(b, &want, "batched output");
        }
    }
    s.stop().await.unwrap();
}

/// Every inference answer breaks its time down by stage (`Server-Timing`), and
/// every answer, errors included, carries the request's id.
#[tokio::test]
async fn server_timing_and_request_ids() {
    let s = TestServer::demo().await;
    let body = request_for(&case("breast_cancer"));
    let r = s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let timing = r.headers()["server-timing"].to_str().unwrap().to_owned();
    let stages: Vec<(String, f64)> = timing
        .split(", ")
        .map(|part| {
            let (name, dur) = part.split_once(";dur=").unwrap();
            (name.to_owned(), dur.parse().unwrap())
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["preprocess", "queue", "inference", "postprocess", "total"], "{timing}");
    let total = stages[4].1;
    let parts: f64 = stages[..4].iter().map(|(_, d)| d).sum();
    assert!(stages.iter().all(|(_, d)| *d >= 0.0) && parts <= total + 0.01, "{timing}");
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));

    // The caller's id comes back, on success and on errors alike.
    for (path, want) in [("/v2/models/breast_cancer/infer", 200), ("/v2/models/nope/infer", 404), ("/nowhere", 404)] {
        let r = s.client.post(s.url(path)).header("x-request-id", "trace-abc_123").json(&body).send().await.unwrap();
        assert_eq!(r.status(), want, "{path}");
        assert_eq!(r.headers()["x-request-id"], "trace-abc_123", "{path}");
    }
    let r = s.client.post(s.url("/v2/models/breast_cancer/infer")).body("{").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-request-id"].len(), 32, "errors get an id too");
    // A hostile id is replaced, never echoed.
    for bad in ["x".repeat(129), "has space".into(), String::new()] {
        let r = s.client.get(s.url("/v2/health/live")).header("x-request-id", bad.as_str()).send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id != bad && id.len() == 32, "{bad:?} -> {id}");
    }
    s.stop().await.unwrap();
}

/// `/metrics` in the Prometheus text format: stage histograms per endpoint and
/// version, requests by status class and error code, state gauges, build info
/// and the process; checked with Prometheus's own `promtool` when installed.
#[tokio::test]
async fn prometheus_metrics() {
    let s = TestServer::demo().await;
    let body = request_for(&case("breast_cancer"));
    for _ in 0..3 {
        let r = s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let bad = s.client.post(s.url("/v2/models/breast_cancer/infer")).body("{").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = s.client.post(s.url("/v2/models/no-such-model/infer")).json(&body).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let has =
        |needle: &str| assert!(text.lines().any(|l| l.starts_with(needle)), "no line starting {needle:?} in\n{text}");
    for stage in ["preprocess", "queue", "inference", "postprocess", "total"] {
        has(&format!(
            "vigil_request_duration_seconds_count{{endpoint=\"breast_cancer\",version=\"1\",stage=\"{stage}\"}} 3"
        ));
    }
    has(
        "vigil_request_duration_seconds_bucket{endpoint=\"breast_cancer\",version=\"1\",stage=\"total\",le=\"0.00005\"}",
    );
    has("vigil_requests_total{endpoint=\"breast_cancer\",version=\"1\",status=\"2xx\",code=\"\"} 3");
    has("vigil_requests_total{endpoint=\"breast_cancer\",version=\"\",status=\"4xx\",code=\"invalid_input\"} 1");
    // A name that is not an endpoint never becomes a label value.
    has("vigil_requests_total{endpoint=\"\",version=\"\",status=\"4xx\",code=\"model_not_found\"} 1");
    has("vigil_batch_size_count{endpoint=\"breast_cancer\",version=\"1\"} 3");
    has("vigil_model_load_seconds{endpoint=\"breast_cancer\",version=\"1\"} ");
    assert!(!text.contains("no-such-model"));
    has("vigil_model_ready{endpoint=\"digits_cnn\",version=\"1\"} 1");
    has("vigil_queue_depth{endpoint=\"breast_cancer\",version=\"1\"} 0");
    has("vigil_requests_in_flight 0");
    has(&format!("vigil_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")));
    has("process_resident_memory_bytes ");
    has("process_cpu_seconds_total ");
    has("process_open_fds ");

    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "promtool check metrics: {said}");
        }
        Err(_) => {
            vigil_store::testing::skipped::<()>(
                "prometheus_metrics (promtool)",
                "promtool is not installed (Debian's prometheus)",
            );
        }
    }
    s.stop().await.unwrap();
}
