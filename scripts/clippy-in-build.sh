# Sourced (scripts/test-all.sh, .ci/run): clippy's lints, with warnings as errors, run inside
# `cargo build` itself. `cargo clippy` is `cargo check` with clippy-driver wrapping rustc for the
# workspace's own crates, so a run that lints and then builds compiled every dependency twice,
# once checked and once built (300-460 s of a cold CI run). The same driver and arguments on
# `cargo build --all-targets` lint the same targets while they compile. Every later cargo call
# of the run keeps them: the wrapper is part of what cargo fingerprints, and a call without it
# would compile the workspace's crates again. By hand, the same check is
# `cargo clippy --workspace --all-targets -- -D warnings`.
RUSTC_WORKSPACE_WRAPPER=$(rustup which clippy-driver)
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
