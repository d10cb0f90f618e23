//! The KServe V2 gRPC protocol (`inference.GRPCInferenceService`), generated
//! at build time from `proto/inference.proto`.

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod inference {
    tonic::include_proto!("inference");
}
