//! Compiles proto/inference.proto with protox (pure Rust): no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let descriptors = protox::compile(["proto/inference.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Boxed so that an input entry without contents stays small in memory:
        // a request of many empty entries must not grow much when decoded.
        .boxed(".inference.ModelInferRequest.InferInputTensor.contents")
        .compile_fds(descriptors)?;
    Ok(())
}
