//! Integration tests: the real server on 127.0.0.1:0, called over HTTP.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
mod defects;
mod grpc;
mod health_and_metadata;
mod hostile;
mod infer;
mod monitor;
mod observe;
mod oidc;
mod onnxruntime;
mod records;
mod registry;
mod security;
mod shutdown;
mod tls;
