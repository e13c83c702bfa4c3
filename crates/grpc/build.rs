//! Compiles `proto/crm/v1/crm.proto` with protox (pure Rust): no system `protoc` needed.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let file = "crm/v1/crm.proto";
    println!("cargo:rerun-if-changed={proto_root}/{file}");
    let fds = protox::compile([file], [proto_root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set serves gRPC reflection.
    std::fs::write(out.join("crm_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
