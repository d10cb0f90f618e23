//! Bad and hostile input: every case gets a clear 4xx naming what is wrong,
//! nothing panics, and good requests alongside keep working.

use crate::common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_server::Limits;

fn features(shape: Value, data: Value) -> Value {
    json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": shape, "data": data}]})
}

async fn expect_400(s: &TestServer, body: &Value, needle: &str) {
    let (status, err) = s.post_json("/v2/models/breast_cancer/infer", body).await;
    assert_eq!(status, 400, "{body}: {err}");
    let msg = err["error"].as_str().unwrap();
    assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    assert_eq!(err["code"], "invalid_input");
}

#[tokio::test]
async fn signature_violations_name_the_input() {
    let s = TestServer::demo().await;
    let row = json!(vec![1.0; 30]);
    expect_400(&s, &json!({"inputs": []}), "missing input 'features'").await;
    let mut two = features(json!([1, 30]), row.clone());
    two["inputs"].as_array_mut().unwrap().push(json!({"name": "extra", "datatype": "FP32", "shape": [1], "data": [1]}));
    expect_400(&s, &two, "unknown input 'extra'").await;
    let mut dup = features(json!([1, 30]), row.clone());
    let first = dup["inputs"][0].clone();
    dup["inputs"].as_array_mut().unwrap().push(first);
    expect_400(&s, &dup, "more than once").await;
    let mut fp64 = features(json!([1, 30]), row.clone());
    fp64["inputs"][0]["datatype"] = json!("FP64");
    expect_400(&s, &fp64, "input 'features' has datatype FP64 but the model expects FP32").await;
    expect_400(&s, &features(json!([1, 29]), json!(vec![1.0; 29])), "input 'features' has shape [1, 29]").await;
    expect_400(&s, &features(json!([30]), row.clone()), "has shape [30]").await;
    expect_400(&s, &features(json!([1, 30]), json!(vec![1.0; 29])), "has 29 values but shape [1, 30] needs 30").await;
    expect_400(&s, &features(json!([1, 30]), json!(vec![1.0; 31])), "more elements than the shape allows").await;
    expect_400(&s, &features(json!([1, -30]), row.clone()), "negative").await;
    let mut bad_type = features(json!([1, 30]), row.clone());
    bad_type["inputs"][0]["datatype"] = json!("FLOAT");
    expect_400(&s, &bad_type, "unsupported datatype 'FLOAT'").await;
    expect_400(&s, &features(json!([1, 30]), json!(vec!["1"; 30])), "expected a number").await;
    expect_400(&s, &features(json!([1, 1]), json!([1e39])), "FP32 range").await;
    expect_400(&s, &features(json!([1, 1]), json!([null])), "input 'features'").await;
    expect_400(&s, &features(json!([1, 1]), json!([[1], [2]])), "input 'features'").await;
    expect_400(&s, &json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30]}]}), "has no data")
        .await;
    expect_400(&s, &json!({"id": 7, "inputs": []}), "malformed JSON").await;
    s.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_and_deep_json_are_400() {
    let s = TestServer::demo().await;
    for body in [
        b"".to_vec(),
        b"{".to_vec(),
        b"null".to_vec(),
        b"[1,2,3]".to_vec(),
        b"{\"inputs\": [{\"name\": \"features\", \"datatype\": \"FP32\", \"shape\": [1,1], \"data\": [NaN]}]}".to_vec(),
        b"{\"inputs\": [{\"name\": \"features\", \"datatype\": \"FP32\", \"shape\": [1,1], \"data\": [Infinity]}]}"
            .to_vec(),
        vec![0xff, 0xfe, 0x00],
        format!(
            "{{\"inputs\": [{{\"name\": \"features\", \"datatype\": \"FP32\", \"shape\": [1,1], \"data\": {}1{}}}]}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
        .into_bytes(),
        format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000)).into_bytes(),
    ] {
        let (status, err) = s.post_raw("/v2/models/breast_cancer/infer", body).await;
        assert_eq!(status, 400, "{err}");
        let msg = err["error"].as_str().unwrap();
        assert!(msg.contains("malformed JSON") || msg.contains("recursion limit exceeded"), "{err}");
    }
    assert_eq!(s.get("/v2/health/live").await.0, 200, "the server survived");
    s.stop().await.unwrap();
}

async fn post_binary(s: &TestServer, header: &Value, binary: &[u8], declared_len: Option<String>) -> (u16, Value) {
    let json = serde_json::to_vec(header).unwrap();
    let len = declared_len.unwrap_or(json.len().to_string());
    let mut body = json;
    body.extend_from_slice(binary);
    let r = s
        .client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .header("Inference-Header-Content-Length", len)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let header_len = r.headers().get("inference-header-content-length").map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = r.bytes().await.unwrap();
    // A binary response: parse the JSON header only.
    (status, serde_json::from_slice(&bytes[..header_len.unwrap_or(bytes.len())]).unwrap())
}

fn binary_header(size: u64) -> Value {
    json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "parameters": {"binary_data_size": size}}]})
}

#[tokio::test]
async fn binary_sections_that_lie_are_400() {
    let s = TestServer::demo().await;
    let row: Vec<u8> = (0..30).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    assert_eq!(post_binary(&s, &binary_header(120), &row, None).await.0, 200);
    let (status, err) = post_binary(&s, &binary_header(120), &row[..100], None).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("shorter than declared"), "{err}");
    let mut long = row.clone();
    long.extend([0; 4]);
    let (status, err) = post_binary(&s, &binary_header(120), &long, None).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("longer"), "{err}");
    let (status, err) = post_binary(&s, &binary_header(116), &row[..116], None).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("30 FP32 elements need 120"), "{err}");
    let (status, err) = post_binary(&s, &binary_header(u64::MAX), &row, None).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = post_binary(&s, &binary_header(120), &row, Some("99999".into())).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("larger than the body"), "{err}");
    let (status, _) = post_binary(&s, &binary_header(120), &row, Some("3".into())).await;
    assert_eq!(status, 400);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn nan_and_infinity_pass_through_binary_and_come_back_as_null_in_json() {
    let s = TestServer::demo().await;
    let mut row: Vec<u8> = (0..30).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    row[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    row[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let (status, out) = post_binary(&s, &binary_header(120), &row, None).await;
    assert_eq!(status, 200, "{out}");
    let probabilities = out["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    assert!(probabilities["data"].as_array().unwrap().iter().all(|v| v.is_null() || v.is_number()));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_400_for_a_string_model() {
    let s = TestServer::demo().await;
    let case = case("identity");
    let mut request = request_for(&case);
    let bytes_input = request["inputs"].as_array_mut().unwrap().iter_mut().find(|i| i["name"] == "in_bytes").unwrap();
    let mut blob = Vec::new();
    for _ in 0..6 {
        blob.extend(2u32.to_le_bytes());
        blob.extend([0xff, 0xfe]);
    }
    bytes_input.as_object_mut().unwrap().remove("data");
    bytes_input["parameters"] = json!({"binary_data_size": blob.len()});
    let header = serde_json::to_vec(&request).unwrap();
    let len = header.len();
    let mut body = header;
    body.extend(blob);
    let r = s
        .client
        .post(s.url("/v2/models/identity/infer"))
        .header("Inference-Header-Content-Length", len.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("input 'in_bytes' element 0 is not valid UTF-8"), "{err}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn limits_on_body_size_and_tensor_elements() {
    let limits = Limits { max_body_bytes: 4096, max_tensor_elements: 60, ..Limits::default() };
    let s = TestServer::start(config(None, limits)).await;
    let (status, err) = s.post_raw("/v2/models/breast_cancer/infer", vec![b' '; 5000]).await;
    assert_eq!(status, 413);
    assert!(err["error"].as_str().unwrap().contains("max_body_bytes"), "{err}");
    assert_eq!(err["code"], "payload_too_large");
    expect_400(&s, &features(json!([3, 30]), json!(vec![1.0; 90])), "limits.max_tensor_elements (60)").await;
    expect_400(&s, &features(json!([1u64 << 40, 1u64 << 40]), json!([])), "max_tensor_elements").await;
    let (status, _) =
        s.post_json("/v2/models/breast_cancer/infer", &features(json!([2, 30]), json!(vec![1.0; 60]))).await;
    assert_eq!(status, 200);
    s.stop().await.unwrap();
}

/// Sends `request` verbatim (no URL normalisation) and returns status and body.
async fn raw_http(base: &str, request: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn path_tricks_in_model_and_version_names_are_404() {
    let s = TestServer::demo().await;
    for path in [
        "/v2/models/../../etc/passwd",
        "/v2/models/..%2F..%2Fetc%2Fpasswd/ready",
        "/v2/models/%2e%2e/ready",
        "/v2/models/%2e%2e%2fbreast_cancer/infer",
        "/v2/models/breast_cancer/versions/..%2F1/ready",
        "/v2/models/breast_cancer/versions/%2e%2e/ready",
        "/v2/models/breast%00cancer/ready",
        "/v2/models/.hidden/ready",
        "/v2/models/breast_cancer%20/ready",
        "/v2/models/%ff%fe/ready",
    ] {
        let method = if path.ends_with("infer") { "POST" } else { "GET" };
        let (status, text) = raw_http(
            &s.base,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 0\r\nConnection: close\r\n\r\n",
                auth_line(&s.key)
            ),
        )
        .await;
        assert!(status == 404 || status == 400, "{path}: {text}");
        assert!(text.contains("\"error\""), "{path}: {text}");
    }
    let long = "x".repeat(10_000);
    let (status, body) = s.get(&format!("/v2/models/{long}")).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().len() < 300, "error messages do not echo huge input");
    s.stop().await.unwrap();
}

/// Good and bad requests interleaved under concurrency: each gets its own answer.
#[tokio::test]
async fn one_bad_request_never_affects_another() {
    let s = TestServer::demo().await;
    let good = request_for(&case("digits_cnn"));
    let want = case("digits_cnn")["outputs"]["label"]["data"].clone();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = s.client.clone();
        let url = s.url("/v2/models/digits_cnn/infer");
        let body = if i % 2 == 0 {
            good.clone()
        } else {
            json!({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [1]}]})
        };
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (i, r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    for t in tasks {
        let (i, status, body) = t.await.unwrap();
        if i % 2 == 0 {
            assert_eq!(status, 200, "{body}");
            let label = body["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "label").unwrap();
            assert_eq!(label["data"], want);
        } else {
            assert_eq!(status, 400);
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn inputs_sharing_a_dimension_must_agree() {
    let s = TestServer::demo().await;
    let mut request = request_for(&case("identity"));
    let first = request["inputs"].as_array_mut().unwrap().iter_mut().find(|i| i["name"] == "in_bool").unwrap();
    first["shape"] = json!([1, 3]);
    first["data"] = json!([true, false, true]);
    let (status, err) = s.post_json("/v2/models/identity/infer", &request).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("must agree on dimension 'rows'"), "{err}");
    s.stop().await.unwrap();
}

/// Error messages quote the request, but never more than a short excerpt of it.
#[tokio::test]
async fn errors_stay_small_whatever_the_request() {
    let s = TestServer::demo().await;
    let huge = "A".repeat(1 << 20);
    let bodies = [
        json!({"inputs": [{"name": huge, "datatype": "FP32", "shape": [1, 30], "data": vec![1.0; 30]}]}),
        json!({"inputs": huge}),
        json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 1], "data": [huge]}]}),
        json!({"inputs": [{"name": "features", "datatype": huge, "shape": [1], "data": [1]}]}),
        json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": vec![1; 1 << 20], "data": [1]}]}),
        json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": vec![1.0; 30]}],
               "outputs": [{"name": huge}]}),
    ];
    for body in bodies {
        let r = s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.len() < 1500, "{} bytes: {}", text.len(), &text[..200]);
    }
    let (status, err) = s.post_json("/v2/models/breast_cancer/infer", &features(json!(vec![1; 33]), json!([1]))).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("at most 32"), "{err}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn client_conventions_of_other_v2_clients() {
    let s = TestServer::demo().await;
    let row = json!(vec![1.0; 30]);
    // `parameters: null` means none; `outputs: []` means all of them.
    let mut body = features(json!([1, 30]), row.clone());
    body["parameters"] = Value::Null;
    body["inputs"][0]["parameters"] = Value::Null;
    body["outputs"] = json!([]);
    let (status, out) = s.post_json("/v2/models/breast_cancer/infer", &body).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"].as_array().unwrap().len(), 2);
    // Output parameters Vigil does not implement are refused, not ignored.
    body["outputs"] = json!([{"name": "probabilities", "parameters": {"classification": 2}}]);
    let (status, err) = s.post_json("/v2/models/breast_cancer/infer", &body).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("'classification' is not supported"), "{err}");
    // A gzip-compressed body (tritonclient's request_compression_algorithm).
    let plain = serde_json::to_vec(&features(json!([1, 30]), row)).unwrap();
    let gz = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&plain)?;
            Ok(c.wait_with_output()?.stdout)
        })
        .unwrap();
    let r = s
        .client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .header("Content-Encoding", "gzip")
        .body(gz)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .header("Content-Encoding", "gzip")
        .body(plain)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not actually gzip");
    // Wrong method: 405 with a JSON error; unknown model: 404.
    let r = s.client.get(s.url("/v2/models/breast_cancer/infer")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let (status, err) = s.post_json("/v2/models/no_such_model/infer", &features(json!([1, 1]), json!([1]))).await;
    assert_eq!(status, 404);
    assert_eq!(err["code"], "model_not_found");
    s.stop().await.unwrap();
}
