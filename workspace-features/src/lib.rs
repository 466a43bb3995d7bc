//! No code: the crate's dependency list is its purpose (see its Cargo.toml).
