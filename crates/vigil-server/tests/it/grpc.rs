//! V2 gRPC with a real gRPC client (tonic's, generated from the same proto):
//! every RPC, raw and typed contents, and errors mapped to gRPC status codes.

use crate::common::*;
use crate::infer::to_binary;
use serde_json::Value;
use tonic::Code;
use vigil_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use vigil_proto::inference::{self as pb, InferTensorContents};

async fn client(s: &TestServer) -> GrpcClient {
    s.grpc_client().await
}

fn shape(t: &Value) -> Vec<i64> {
    t["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect()
}

/// A request with every input as raw contents.
fn raw_request(case: &Value) -> pb::ModelInferRequest {
    let mut r = pb::ModelInferRequest {
        model_name: case["model"].as_str().unwrap().into(),
        id: "g-1".into(),
        ..Default::default()
    };
    for (name, t) in case["inputs"].as_object().unwrap() {
        r.inputs.push(InferInputTensor {
            name: name.clone(),
            datatype: t["datatype"].as_str().unwrap().into(),
            shape: shape(t),
            ..Default::default()
        });
        r.raw_input_contents.push(to_binary(t));
    }
    r
}

#[tokio::test]
async fn health_and_metadata_rpcs() {
    let s = TestServer::demo().await;
    let mut c = client(&s).await;
    assert!(c.server_live(pb::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let meta = c.server_metadata(pb::ServerMetadataRequest {}).await.unwrap().into_inner();
    assert_eq!(meta.name, "vigil");
    assert!(meta.extensions.is_empty(), "no gRPC extensions are claimed: {:?}", meta.extensions);
    let ready = c.model_ready(pb::ModelReadyRequest { name: "digits_cnn".into(), version: "1".into() }).await.unwrap();
    assert!(ready.into_inner().ready);
    let m = c
        .model_metadata(pb::ModelMetadataRequest { name: "breast_cancer".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions, ["1"]);
    assert_eq!(m.inputs[0].name, "features");
    assert_eq!(m.inputs[0].datatype, "FP32");
    assert_eq!(m.inputs[0].shape, [-1, 30]);
    let config =
        c.model_config(pb::ModelConfigRequest { name: "identity".into(), version: String::new() }).await.unwrap();
    let config = config.into_inner().config.unwrap();
    assert_eq!(config.max_batch_size, 0);
    let bytes_input = config.input.iter().find(|i| i.name == "in_bytes").unwrap();
    assert_eq!(bytes_input.data_type, pb::DataType::TypeString as i32);
    assert_eq!(bytes_input.dims, [-1, 3]);
    for name in ["nope", "../etc", "%2e%2e", ""] {
        let err = c.model_ready(pb::ModelReadyRequest { name: name.into(), version: String::new() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{name:?}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn raw_contents_match_onnxruntime_for_every_model() {
    let s = TestServer::demo().await;
    let mut c = client(&s).await;
    for case in expected_cases() {
        let model = case["model"].as_str().unwrap();
        let response = c.model_infer(raw_request(&case)).await.unwrap_or_else(|e| panic!("{model}: {e}")).into_inner();
        assert_eq!(response.model_name, model);
        assert_eq!(response.model_version, "1");
        assert_eq!(response.id, "g-1");
        assert_eq!(response.outputs.len(), response.raw_output_contents.len());
        for (out, raw) in response.outputs.iter().zip(&response.raw_output_contents) {
            let want = &case["outputs"][&out.name];
            assert_eq!(out.datatype, want["datatype"].as_str().unwrap());
            assert_eq!(out.shape, shape(want));
            if out.datatype == "FP32" {
                let got: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                for (g, w) in got.iter().zip(want["data"].as_array().unwrap()) {
                    let w = w.as_f64().unwrap();
                    assert!((f64::from(*g) - w).abs() <= 1e-5 || *g == w as f32, "{model}.{}: {g} vs {w}", out.name);
                }
            } else {
                assert_eq!(raw, &to_binary(want), "{model}.{}", out.name);
            }
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn typed_contents_and_the_outputs_filter() {
    let s = TestServer::demo().await;
    let mut c = client(&s).await;
    let case = case("breast_cancer");
    let t = &case["inputs"]["features"];
    let data: Vec<f32> = t["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let request = pb::ModelInferRequest {
        model_name: "breast_cancer".into(),
        model_version: "1".into(),
        inputs: vec![InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: shape(t),
            contents: Some(Box::new(InferTensorContents { fp32_contents: data, ..Default::default() })),
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor { name: "label".into(), ..Default::default() }],
        ..Default::default()
    };
    let response = c.model_infer(request).await.unwrap().into_inner();
    assert_eq!(response.outputs.len(), 1);
    assert_eq!(response.outputs[0].name, "label");
    assert_eq!(response.raw_output_contents[0], to_binary(&case["outputs"]["label"]));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_the_right_status() {
    let s = TestServer::demo().await;
    let mut c = client(&s).await;
    let good = raw_request(&case("breast_cancer"));

    let mut r = good.clone();
    r.model_name = "nope".into();
    assert_eq!(c.model_infer(r).await.unwrap_err().code(), Code::NotFound);

    let mut r = good.clone();
    r.raw_input_contents[0].pop();
    let e = c.model_infer(r).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("input 'features'"), "{}", e.message());

    let mut r = good.clone();
    r.raw_input_contents.push(vec![0; 4]);
    let e = c.model_infer(r).await.unwrap_err();
    assert!(e.message().contains("raw_input_contents has 2 entries for 1 inputs"), "{}", e.message());

    let mut r = good.clone();
    r.inputs[0].datatype = "FP16".into();
    r.raw_input_contents.clear();
    r.inputs[0].contents = Some(Box::default());
    let e = c.model_infer(r).await.unwrap_err();
    assert!(e.message().contains("FP16 has no typed contents"), "{}", e.message());

    let mut r = good.clone();
    r.inputs[0].shape = vec![5, 29];
    assert_eq!(c.model_infer(r).await.unwrap_err().code(), Code::InvalidArgument);

    let mut r = good.clone();
    r.inputs[0].shape = vec![1 << 40, 1 << 40];
    let e = c.model_infer(r).await.unwrap_err();
    assert!(e.message().contains("max_tensor_elements"), "{}", e.message());

    let ids = pb::ModelInferRequest {
        model_name: "identity".into(),
        inputs: vec![InferInputTensor {
            name: "in_int8".into(),
            datatype: "INT8".into(),
            shape: vec![1, 3],
            contents: Some(Box::new(InferTensorContents { int_contents: vec![1, 2, 300], ..Default::default() })),
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = c.model_infer(ids).await.unwrap_err();
    assert!(e.message().contains("element 2 (300) is out of range for INT8"), "{}", e.message());

    let timeout =
        |us: i64| pb::InferParameter { parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(us)) };
    let mut late = good.clone();
    late.parameters.insert("timeout".into(), timeout(1));
    assert_eq!(c.model_infer(late).await.unwrap_err().code(), Code::DeadlineExceeded);
    let mut no_limit = good.clone();
    no_limit.parameters.insert("timeout".into(), timeout(0));
    assert!(c.model_infer(no_limit).await.is_ok(), "timeout 0 means none, as in Triton");

    let mut classify = good.clone();
    let mut output = InferRequestedOutputTensor { name: "probabilities".into(), ..Default::default() };
    output.parameters.insert("classification".into(), timeout(2));
    classify.outputs.push(output);
    let e = c.model_infer(classify).await.unwrap_err();
    assert!(e.message().contains("'classification' is not supported"), "{}", e.message());

    // tritonclient's compression_algorithm="gzip".
    let mut gz = client(&s).await.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    assert!(gz.model_infer(good.clone()).await.is_ok());

    // The good request still works on the same connection.
    assert!(c.model_infer(good).await.is_ok());
    s.stop().await.unwrap();
}

/// A registry endpoint over gRPC: `x-vigil-version` metadata pins a version,
/// and the answer says which version answered, in the body and the metadata.
#[tokio::test]
async fn registry_endpoints_pin_and_report_versions_over_grpc() {
    let s = TestServer::demo().await;
    let http = s.client.clone();
    // The demo is imported into the registry in the background; wait for it.
    for _ in 0..200 {
        let r = http.get(s.url("/api/v1/models/breast_cancer/versions/1")).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let body = serde_json::json!({"model": "breast_cancer", "traffic": [{"version": 1, "weight": 100}]});
    let r = http.put(s.url("/api/v1/endpoints/bc")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut c = client(&s).await;
    let mut request = raw_request(&case("breast_cancer"));
    request.model_name = "bc".into();
    let answer = c.model_infer(request.clone()).await.unwrap();
    assert_eq!(answer.metadata().get("x-vigil-version").unwrap(), "1");
    assert_eq!(answer.get_ref().model_name, "bc");
    assert_eq!(answer.get_ref().model_version, "1");
    let mut pinned = tonic::Request::new(request);
    pinned.metadata_mut().insert("x-vigil-version", "7".parse().unwrap());
    let err = c.model_infer(pinned).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    s.stop().await.unwrap();
}
