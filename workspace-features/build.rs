//! Nothing to build: syn is a build-dependency only to set its features (see Cargo.toml).
fn main() {}
