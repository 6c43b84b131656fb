//! Generates the KServe v2 gRPC service (proto/grpc_predict_v2.proto) with tonic, server and
//! client. Needs `protoc` on PATH or in `PROTOC` (scripts/setup.sh installs Debian's).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    // `bytes` fields as `bytes::Bytes`: decoding a message slices its buffer instead of copying
    // each tensor's raw contents, which the gateway passes on as they came.
    tonic_prost_build::configure().bytes(".").compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])?;
    Ok(())
}
