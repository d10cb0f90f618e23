//! KServe V2 gRPC (`inference.GRPCInferenceService`) over tonic. Thin: requests
//! become the same domain calls as the REST routes, with the same checks.

use crate::guard::{self, Call, Guard};
use crate::permissions::{self, Access};
use crate::protocol::{self, tensor_header};
use crate::serve::GrpcPeer;
use crate::telemetry::{Answered, Protocol, Served};
use crate::traces::TraceParent;
use crate::{AppState, v2::triton_type};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use vigil_core::names::quoted;
use vigil_core::security::Target;
use vigil_core::{DataType, Error, ErrorCode, TensorData, TensorSpec};
use vigil_proto::inference::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use vigil_proto::inference::infer_parameter::ParameterChoice;
use vigil_proto::inference::model_infer_response::InferOutputTensor;
use vigil_proto::inference::model_metadata_response::TensorMetadata;
use vigil_proto::inference::{self as pb, InferTensorContents};
use vigil_runtime::models::ModelDescription;
use vigil_runtime::scheduler::Inline;

/// The tonic service for an [`AppState`], with messages limited like REST bodies.
/// Quick models' runs queue under load here (`Inline::WhenAlone`): over
/// HTTP/2, running them on the handler's thread cost a quarter of the
/// throughput at 16 connections (bench/RESULTS.md).
pub fn service(mut state: AppState, guard: Arc<Guard>) -> GrpcInferenceServiceServer<Grpc> {
    state.service = state.service.with_inline(Inline::WhenAlone);
    let limit = state.limits.max_body_bytes;
    GrpcInferenceServiceServer::new(Grpc { state, guard })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
}

pub struct Grpc {
    state: AppState,
    guard: Arc<Guard>,
}

/// The one mapping from domain error codes to gRPC status codes.
fn status(e: Error) -> Status {
    let code = match e.code() {
        ErrorCode::InvalidInput => tonic::Code::InvalidArgument,
        ErrorCode::ModelNotFound | ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::Conflict => tonic::Code::FailedPrecondition,
        ErrorCode::Storage => tonic::Code::Unavailable,
        ErrorCode::ModelNotReady => tonic::Code::Unavailable,
        ErrorCode::PayloadTooLarge => tonic::Code::ResourceExhausted,
        ErrorCode::Overloaded => tonic::Code::Unavailable,
        ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::Forbidden => tonic::Code::PermissionDenied,
        ErrorCode::RateLimited => tonic::Code::ResourceExhausted,
        ErrorCode::RequestTimeout => tonic::Code::DeadlineExceeded,
        ErrorCode::InferenceFailed | ErrorCode::Internal => tonic::Code::Internal,
    };
    let mut message = e.message().to_owned();
    message.truncate(message.char_indices().nth(1024).map_or(message.len(), |(i, _)| i));
    Status::new(code, message)
}

/// gRPC's empty version means "the default version".
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

impl Grpc {
    /// The guard's decision for a call of `method` about endpoint `name`, by
    /// the permission table (`permissions::GRPC`); a method without an entry
    /// is refused.
    fn authorize<T>(&self, r: &Request<T>, method: &str, name: &str) -> Result<String, Status> {
        let access = permissions::grpc(method)
            .ok_or_else(|| status(Error::new(ErrorCode::Forbidden, "this method has no permission entry")))?;
        let Access::Needs(role, on) = access else { return Ok(String::new()) };
        if r.metadata().get_all("authorization").iter().nth(1).is_some() {
            return Err(status(Error::invalid_input(guard::SEVERAL_CREDENTIALS)));
        }
        let text = |key: &str| r.metadata().get(key).and_then(|v| v.to_str().ok());
        let tls_peer = r.extensions().get::<GrpcPeer>();
        let peer = tls_peer.map(|p| p.addr).or_else(|| r.remote_addr());
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let request_id = text("x-request-id").unwrap_or_default();
        let call = Call {
            credential: text("authorization").and_then(guard::bearer_value),
            certificate: tls_peer.and_then(|p| p.cert.as_ref()).map(|c| c.0.as_str()),
            client: self.guard.security.client_address(peer, text("x-forwarded-for")),
            method: "gRPC",
            route: method,
            request_id: request_id.get(..128).unwrap_or(request_id),
        };
        let target = on.target(|_| Some(name)).unwrap_or(Target::Global);
        self.guard.decide(&call, role, target, &[]).map(|p| p.id).map_err(|stop| status(stop.error()))
    }

    fn describe(&self, model: &str, version: &str) -> Result<ModelDescription, Status> {
        self.state.service.models().describe(model, self::version(version)).map_err(status)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(&self, r: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        self.authorize(&r, "ServerLive", "")?;
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        r: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        self.authorize(&r, "ServerReady", "")?;
        Ok(Response::new(pb::ServerReadyResponse { ready: self.state.ready() }))
    }

    async fn model_ready(&self, r: Request<pb::ModelReadyRequest>) -> Result<Response<pb::ModelReadyResponse>, Status> {
        self.authorize(&r, "ModelReady", &r.get_ref().name)?;
        let r = r.into_inner();
        let d = self.describe(&r.name, &r.version)?;
        Ok(Response::new(pb::ModelReadyResponse { ready: d.is_ready() }))
    }

    async fn server_metadata(
        &self,
        r: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        self.authorize(&r, "ServerMetadata", "")?;
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "vigil".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // binary_tensor_data is HTTP's, and there is no RepositoryIndex RPC.
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        self.authorize(&r, "ModelMetadata", &r.get_ref().name)?;
        let r = r.into_inner();
        let d = self.describe(&r.name, &r.version)?;
        let meta = |specs: &[TensorSpec]| -> Vec<TensorMetadata> {
            specs
                .iter()
                .map(|s| TensorMetadata {
                    name: s.name.clone(),
                    datatype: s.datatype.to_string(),
                    shape: s.shape.clone(),
                })
                .collect()
        };
        let signature = d.state.signature().cloned().unwrap_or_default();
        Ok(Response::new(pb::ModelMetadataResponse {
            name: d.name,
            versions: d.versions,
            platform: ModelDescription::PLATFORM.into(),
            inputs: meta(&signature.inputs),
            outputs: meta(&signature.outputs),
        }))
    }

    async fn model_config(
        &self,
        r: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        self.authorize(&r, "ModelConfig", &r.get_ref().name)?;
        let r = r.into_inner();
        let d = self.describe(&r.name, &r.version)?;
        let signature = d.state.signature().cloned().unwrap_or_default();
        let data_type =
            |d: DataType| pb::DataType::from_str_name(&triton_type(d)).unwrap_or(pb::DataType::TypeInvalid) as i32;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(pb::ModelConfig {
                name: d.name.clone(),
                platform: ModelDescription::PLATFORM.into(),
                backend: d.backend().unwrap_or_default().into(),
                max_batch_size: 0,
                input: signature
                    .inputs
                    .iter()
                    .map(|s| pb::ModelInput {
                        name: s.name.clone(),
                        data_type: data_type(s.datatype),
                        dims: s.shape.clone(),
                    })
                    .collect(),
                output: signature
                    .outputs
                    .iter()
                    .map(|s| pb::ModelOutput {
                        name: s.name.clone(),
                        data_type: data_type(s.datatype),
                        dims: s.shape.clone(),
                    })
                    .collect(),
            }),
        }))
    }

    /// Serves one inference, then hands what it did to telemetry (as REST
    /// does); the answer carries `x-request-id` and `server-timing` metadata.
    async fn model_infer(&self, r: Request<pb::ModelInferRequest>) -> Result<Response<pb::ModelInferResponse>, Status> {
        let principal = self.authorize(&r, "ModelInfer", &r.get_ref().model_name)?;
        let _counted = self.state.telemetry.metrics.in_flight();
        let started = Instant::now();
        let text = |key: &str| r.metadata().get(key).and_then(|v| v.to_str().ok());
        let request_id = match text("x-request-id").filter(|id| crate::sane_request_id(id.as_bytes())) {
            Some(id) => id.to_owned(),
            None => crate::new_request_id().to_str().unwrap_or_default().to_owned(),
        };
        let trace = text("traceparent").and_then(TraceParent::parse);
        let model = r.get_ref().model_name.clone();
        let request_trace = self.state.telemetry.start_trace(trace);
        let ids = request_trace.as_ref().map(|t| t.ids);
        let mut answered = Answered::start(Protocol::Grpc, &request_id, trace, ids, &principal);
        let id_value = MetadataValue::try_from(request_id.as_str()).ok();
        match self.infer(r, started, ids).await {
            Ok((response, mut served)) => {
                let logged = served.logged.take();
                answered.served(&model, &served, 200);
                let timing = MetadataValue::try_from(crate::v2::server_timing(&served.stages)).ok();
                let version = MetadataValue::try_from(served.version.as_str()).ok();
                self.state.telemetry.answered(&answered, logged, request_trace);
                let mut response = Response::new(response);
                let metadata = response.metadata_mut();
                for (key, value) in [(VERSION_METADATA, version), ("server-timing", timing), ("x-request-id", id_value)]
                {
                    if let Some(value) = value {
                        metadata.insert(key, value);
                    }
                }
                Ok(response)
            }
            Err(e) => {
                let known = self.state.service.models().endpoint(&model).is_some();
                let http = crate::error::http_status(e.code()).as_u16();
                answered.failed(if known { &model } else { "" }, http, e.code().as_str(), started.elapsed());
                self.state.telemetry.answered(&answered, None, request_trace);
                let mut status = status(e);
                if let Some(id) = id_value {
                    status.metadata_mut().insert("x-request-id", id);
                }
                Err(status)
            }
        }
    }
}

impl Grpc {
    /// ModelInfer without the telemetry around it.
    async fn infer(
        &self,
        r: Request<pb::ModelInferRequest>,
        started: Instant,
        trace: Option<vigil_runtime::TraceIds>,
    ) -> Result<(pb::ModelInferResponse, Served), Error> {
        let grpc_deadline = r.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout);
        // As on REST: `x-vigil-version` metadata pins a version when the request names none.
        let pin = r.metadata().get(VERSION_METADATA).map(|v| v.to_str().map(str::to_owned));
        let r = r.into_inner();
        let pin = match pin {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return Err(Error::invalid_input(format!("{VERSION_METADATA}: not a version name"))),
            None => None,
        };
        let (model, version) = (r.model_name.as_str(), version(&r.model_version).or(pin.as_deref()));
        let raw = !r.raw_input_contents.is_empty();
        if raw && r.raw_input_contents.len() != r.inputs.len() {
            return Err(Error::invalid_input(format!(
                "raw_input_contents has {} entries for {} inputs",
                r.raw_input_contents.len(),
                r.inputs.len()
            )));
        }
        let mut raw_contents = r.raw_input_contents.into_iter();
        let mut inputs = Vec::with_capacity(r.inputs.len());
        for input in r.inputs {
            let name = quoted(&input.name);
            let bad = |m: String| Error::invalid_input(format!("input {name}: {m}"));
            let (datatype, shape, count) =
                tensor_header(&input.datatype, &input.shape, &self.state.limits).map_err(bad)?;
            let data = match (raw_contents.next(), input.contents) {
                (Some(_), Some(_)) => return Err(bad("has both contents and raw_input_contents".into())),
                (Some(bytes), None) => protocol::decode_raw(datatype, count, &bytes).map_err(bad)?,
                (None, Some(contents)) => from_contents(datatype, *contents).map_err(bad)?,
                (None, None) => return Err(bad("has no contents".into())),
            };
            inputs.push(protocol::tensor(input.name, shape, count, data).map_err(bad)?);
        }
        for o in &r.outputs {
            if let Some(p) = protocol::UNSUPPORTED_OUTPUT_PARAMETERS.iter().find(|p| o.parameters.contains_key(**p)) {
                return Err(Error::invalid_input(format!(
                    "output {}: parameter '{p}' is not supported",
                    quoted(&o.name)
                )));
            }
        }
        let requested = (!r.outputs.is_empty()).then(|| r.outputs.into_iter().map(|o| o.name).collect());
        let timeout = match r.parameters.get("timeout").and_then(|p| p.parameter_choice.as_ref()) {
            None => None,
            Some(ParameterChoice::Int64Param(us)) if *us >= 0 => protocol::deadline(*us as u64),
            Some(ParameterChoice::Uint64Param(us)) => protocol::deadline(*us),
            Some(_) => return Err(Error::invalid_input("parameter 'timeout' must be a whole number of microseconds")),
        };
        // The client's own gRPC deadline (tritonclient's client_timeout) counts too.
        let deadline = [timeout, grpc_deadline].into_iter().flatten().min();
        let decoded = started.elapsed();
        let mut outcome = self.state.service.infer(model, version, inputs, requested, deadline, trace).await?;
        let logged = outcome.logged.take();
        let timing = outcome.timing;
        let encoding = Instant::now();
        let mut response = pb::ModelInferResponse {
            model_name: outcome.model,
            model_version: outcome.version,
            id: r.id,
            ..Default::default()
        };
        // Outputs always travel as raw contents (FP16 has no typed field), as Triton does.
        for t in &outcome.outputs {
            let mut bytes = Vec::new();
            protocol::encode_raw(&t.data, &mut bytes);
            response.outputs.push(InferOutputTensor {
                datatype: t.datatype().to_string(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                name: t.name.clone(),
                ..Default::default()
            });
            response.raw_output_contents.push(bytes);
        }
        let logged = vigil_runtime::InferenceOutcome::log_outputs(logged, outcome.outputs);
        let stages = [decoded + timing.prepare, timing.queue, timing.inference, encoding.elapsed(), started.elapsed()];
        let served = Served { version: response.model_version.clone(), stages, batch: timing.batch, logged };
        Ok((response, served))
    }
}

/// Says which version answered; on a request, pins one.
const VERSION_METADATA: &str = "x-vigil-version";

/// The deadline in a `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(value: &str) -> Option<std::time::Instant> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let duration = match unit {
        "H" => std::time::Duration::from_secs(n.checked_mul(3600)?),
        "M" => std::time::Duration::from_secs(n.checked_mul(60)?),
        "S" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_millis(n),
        "u" => std::time::Duration::from_micros(n),
        "n" => std::time::Duration::from_nanos(n),
        _ => return None,
    };
    std::time::Instant::now().checked_add(duration)
}

/// Typed contents to tensor data, with range checks where the wire type is wider.
fn from_contents(datatype: DataType, c: InferTensorContents) -> Result<TensorData, String> {
    fn narrow<A: Copy + std::fmt::Display, T: TryFrom<A>>(v: Vec<A>, what: DataType) -> Result<Vec<T>, String> {
        v.into_iter()
            .enumerate()
            .map(|(i, x)| T::try_from(x).map_err(|_| format!("element {i} ({x}) is out of range for {what}")))
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(c.int_contents, datatype)?),
        DataType::Int16 => TensorData::Int16(narrow(c.int_contents, datatype)?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(c.uint_contents, datatype)?),
        DataType::Uint16 => TensorData::Uint16(narrow(c.uint_contents, datatype)?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Fp16 => return Err("FP16 has no typed contents field: send raw_input_contents".into()),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_every_unit_and_refuse_junk() {
        for v in ["1H", "2M", "3S", "100m", "5u", "7n"] {
            assert!(grpc_timeout(v).is_some(), "{v}");
        }
        for v in ["", "S", "10", "10x", "-1S", "99999999999999999999H"] {
            assert!(grpc_timeout(v).is_none(), "{v}");
        }
    }
}
