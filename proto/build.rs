//! Compiles the CP-IS contracts with protox (pure Rust: no system `protoc`), generates prost
//! messages and tonic clients/servers, and writes the encoded descriptor set for reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

/// The contract files; their imports (google/type/date.proto, well-known types) come along.
const PROTOS: &[&str] = &[
    "cpis/common/v1/common.proto",
    "cpis/common/v1/errors.proto",
    "cpis/registry/v1/council.proto",
    "cpis/registry/v1/disclosure.proto",
    "cpis/registry/v1/operator.proto",
    "cpis/lookup/v1/lookup.proto",
    // Not imported by the contracts, but served by reflection so that tools such as grpcurl can
    // decode the ErrorInfo and BadRequest details every error carries.
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let include = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Rebuild when any contract changes, including vendored google/* files.
    println!("cargo:rerun-if-changed=cpis");
    println!("cargo:rerun-if-changed=google");

    let fds = protox::compile(PROTOS, [&include])?;

    // protox does not write the descriptor set that reflection serves: encode it ourselves.
    fs::write(out_dir.join("cpis_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No default stubs: an RPC a service forgets to implement is a compile error, not a
        // silent UNIMPLEMENTED.
        .generate_default_stubs(false)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
