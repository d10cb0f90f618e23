//! A closed-loop load generator that speaks both of Vigil's protocols, so
//! that V2 over gRPC and over HTTP are measured by the same client (wrk
//! speaks HTTP only). `bench/run.sh` runs it.
//!
//!     cargo run --release -p vigil-server --example load -- \
//!         grpc://127.0.0.1:8081 --connections 16 --seconds 10 [--key KEY]
//!     cargo run --release -p vigil-server --example load -- \
//!         http://127.0.0.1:8080 --connections 16 --seconds 10
//!
//! Each connection sends one request at a time (the demo breast-cancer model,
//! one row of 30 FP32 features: raw contents over gRPC, a JSON body to
//! `/v2/models/breast_cancer/infer` over HTTP) and waits for its answer.
//! Over gRPC, `--model NAME --input NAME --shape 1,3,224,224` sends another
//! model one FP32 tensor of that shape instead (pseudo-random values in [0, 1)). Prints `requests/s`, p50 and p99 in µs, and
//! the number of failed requests, tab-separated. It runs on one thread, as
//! `wrk -t 1` does, to leave the other core to the server.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)] // a bench tool: a panic is the report

use std::time::{Duration, Instant};
use vigil_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use vigil_proto::inference::model_infer_request::InferInputTensor;
use vigil_proto::inference::{self as pb};

const ROW: [f32; 30] = [
    17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589, 153.4,
    0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119,
    0.2654, 0.4601, 0.1189,
];

#[derive(Clone)]
struct Args {
    target: String,
    connections: usize,
    seconds: u64,
    key: Option<String>,
    model: String,
    input: String,
    shape: Vec<i64>,
}

fn args() -> Args {
    let mut args = Args {
        target: String::new(),
        connections: 1,
        seconds: 10,
        key: None,
        model: "breast_cancer".into(),
        input: "features".into(),
        shape: vec![1, 30],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--connections" => args.connections = it.next().unwrap().parse().unwrap(),
            "--seconds" => args.seconds = it.next().unwrap().parse().unwrap(),
            "--key" => args.key = it.next(),
            "--model" => args.model = it.next().unwrap(),
            "--input" => args.input = it.next().unwrap(),
            "--shape" => args.shape = it.next().unwrap().split(',').map(|d| d.parse().unwrap()).collect(),
            _ => args.target = a,
        }
    }
    assert!(!args.target.is_empty(), "usage: load grpc://HOST:PORT|http://HOST:PORT [--connections N] [--seconds S]");
    args
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (latencies, failed, elapsed) = runtime.block_on(run(&args));
    let mut sorted = latencies;
    sorted.sort_unstable();
    let at = |q: f64| sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1))).copied();
    let rps = sorted.len() as f64 / elapsed.as_secs_f64();
    println!("{rps:.1}\t{}\t{}\t{failed}", at(0.5).unwrap_or(0), at(0.99).unwrap_or(0));
}

/// Latencies in µs of the requests answered, the failed count, and the time taken.
async fn run(args: &Args) -> (Vec<u64>, u64, Duration) {
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..args.connections {
        let target = args.target.clone();
        let key = args.key.clone();
        if let Some(addr) = target.strip_prefix("grpc://") {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .http2_adaptive_window(true)
                .connect()
                .await
                .unwrap();
            tasks.spawn(grpc_loop(GrpcInferenceServiceClient::new(channel), args.clone(), until));
        } else {
            assert_eq!(args.model, "breast_cancer", "--model is for gRPC only");
            tasks.spawn(http_loop(target, key, until));
        }
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors) = done.unwrap();
        all.extend(latencies);
        failed += errors;
    }
    (all, failed, started.elapsed())
}

async fn grpc_loop(
    mut client: GrpcInferenceServiceClient<tonic::transport::Channel>,
    args: Args,
    until: Instant,
) -> (Vec<u64>, u64) {
    let raw: Vec<u8> = if args.model == "breast_cancer" {
        ROW.iter().flat_map(|x| x.to_le_bytes()).collect()
    } else {
        let elements: i64 = args.shape.iter().product();
        let mut seed = 0x9e37_79b9_u32;
        (0..elements)
            .flat_map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((seed >> 8) as f32 / (1 << 24) as f32).to_le_bytes()
            })
            .collect()
    };
    let key = args.key;
    let request = pb::ModelInferRequest {
        model_name: args.model,
        inputs: vec![InferInputTensor {
            name: args.input,
            datatype: "FP32".into(),
            shape: args.shape,
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    };
    let (mut latencies, mut failed) = (Vec::with_capacity(1 << 16), 0);
    while Instant::now() < until {
        let mut r = tonic::Request::new(request.clone());
        if let Some(key) = &key {
            r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        let sent = Instant::now();
        match client.model_infer(r).await {
            Ok(_) => latencies.push(sent.elapsed().as_micros() as u64),
            Err(_) => failed += 1,
        }
    }
    (latencies, failed)
}

/// HTTP/1.1 with keep-alive over one connection, written by hand (as wrk
/// does) so that the client costs about what wrk's does.
async fn http_loop(url: String, key: Option<String>, until: Instant) -> (Vec<u64>, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.strip_prefix("http://").unwrap().trim_end_matches('/');
    let body = serde_json::json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 30], "data": ROW}]})
        .to_string();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let request = format!(
        "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut latencies, mut failed) = (Vec::with_capacity(1 << 16), 0);
    let mut buffer = vec![0u8; 64 * 1024];
    while Instant::now() < until {
        let sent = Instant::now();
        stream.write_all(request.as_bytes()).await.unwrap();
        // Read one response: the head, then Content-Length bytes of body.
        let mut have = 0;
        let (head_end, length, ok) = loop {
            let n = stream.read(&mut buffer[have..]).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            have += n;
            if let Some(end) = buffer[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buffer[..end]).unwrap().to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                break (end + 4, length, head.starts_with("http/1.1 200"));
            }
        };
        while have < head_end + length {
            let n = stream.read(&mut buffer[have..]).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            have += n;
        }
        if ok {
            latencies.push(sent.elapsed().as_micros() as u64);
        } else {
            failed += 1;
        }
    }
    (latencies, failed)
}
