//! Generates the control-plane protocol with the vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &["omnisql/dataplane.proto"], &["."])?;
    println!("cargo:rerun-if-changed=omnisql/dataplane.proto");
    Ok(())
}
