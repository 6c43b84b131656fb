//! Generates the KServe v2 gRPC service (proto/grpc_predict_v2.proto) with tonic, server and
//! client. Needs `protoc` on PATH or in `PROTOC` (scripts/setup.sh installs Debian's).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    tonic_prost_build::configure().compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])?;
    Ok(())
}
