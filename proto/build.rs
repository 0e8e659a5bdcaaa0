//! Generates the `ruvdllm.v1` tonic/prost code with the protoc shipped in `protoc-bin-vendored`,
//! so a build needs no system protoc (set `PROTOC` to use another one).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let includes = vec![PathBuf::from("proto")];
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: the build script is single-threaded here.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protos = vec![PathBuf::from("proto/ruvdllm/v1/ruvdllm.proto")];
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &includes)?;
    Ok(())
}
