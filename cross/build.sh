#!/usr/bin/env bash
# Cross-builds release binaries of edge-agent and fleetctl for an ARM Linux target with Debian's
# own Rust toolchain (rustup on this kind of machine cannot fetch other targets' std).
#
#   bash cross/build.sh aarch64-unknown-linux-gnu               # -> target/cross/aarch64-unknown-linux-gnu/device/
#   bash cross/build.sh aarch64-unknown-linux-gnu --agent-only  # edge-agent alone (CI)
#   bash cross/build.sh aarch64-unknown-linux-gnu --toolchain-only  # install the toolchain, build nothing
#
# Built with the device profile (Cargo.toml: small code, tract's kernels at full speed, fat LTO),
# or the profile EDGEFLEET_DEVICE_PROFILE names (CI: device-ci, the same without LTO).
#
# Users with a Docker or Podman engine use cross-rs instead (cross/README.md, Cross.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-}"
packages=(-p edge-agent --bin edge-agent -p fleetctl --bin fleetctl)
bins=(edge-agent fleetctl)
toolchain_only=false
case "${2:-}" in
  "") ;;
  --agent-only)
    packages=(-p edge-agent --bin edge-agent)
    bins=(edge-agent) ;;
  --toolchain-only) toolchain_only=true ;;
  *)
    echo "cross/build.sh: unknown option ${2}: --agent-only or --toolchain-only" >&2
    exit 2 ;;
esac
case "$target" in
  aarch64-unknown-linux-gnu)
    debian_arch=arm64; gnu=aarch64-linux-gnu ;;
  armv7-unknown-linux-gnueabihf)
    debian_arch=armhf; gnu=arm-linux-gnueabihf ;;
  *)
    echo "usage: cross/build.sh aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf" >&2
    exit 2 ;;
esac

# Debian's rustc-web (1.96 in bookworm-security) with the target's std from the same source
# package; both must be the same version, or rustc refuses the std.
if ! /usr/bin/rustc --print target-libdir --target "$target" >/dev/null 2>&1 \
  || [ ! -x "/usr/bin/$gnu-gcc" ] || ! command -v "qemu-${target%%-*}" >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  dpkg --add-architecture "$debian_arch"
  if ! apt-get update -q; then
    # Leave apt as it was: a broken foreign index would fail every later apt-get update.
    dpkg --remove-architecture "$debian_arch" 2>/dev/null || true
    echo "cross/build.sh: apt-get update failed for $debian_arch (see above); armhf's index in" \
      "bookworm-security has been seen broken on this machine's mirror - use the Cross.toml route" >&2
    exit 1
  fi
  apt-get install -y -q rustc-web cargo-web "libstd-rust-web-dev:$debian_arch" \
    "gcc-$gnu" "libc6-dev-$debian_arch-cross" qemu-user
fi
rustc_version=$(/usr/bin/rustc --version | awk '{print $2}')
std_version=$(dpkg-query -W -f '${Version}' "libstd-rust-web-dev:$debian_arch" | cut -d+ -f1)
if [ "$rustc_version" != "$std_version" ]; then
  echo "cross/build.sh: /usr/bin/rustc is $rustc_version but libstd-rust-web-dev:$debian_arch is" \
    "$std_version; install matching versions (apt-get install rustc-web libstd-rust-web-dev:$debian_arch)" >&2
  exit 1
fi

# CI installs first, then builds in the background: apt must never run twice at once.
if "$toolchain_only"; then
  echo "cross/build.sh: toolchain for $target ready (rustc $rustc_version)"
  exit 0
fi

target_env=$(echo "$target" | tr 'a-z-' 'A-Z_')
target_lower=$(echo "$target" | tr '-' '_')
export "CARGO_TARGET_${target_env}_LINKER=$gnu-gcc"
export "CC_${target_lower}=$gnu-gcc"
export "CXX_${target_lower}=$gnu-g++"
export "AR_${target_lower}=$gnu-ar"
# rustup's shims come first on PATH and would pick the pinned x86-only toolchain.
export RUSTC=/usr/bin/rustc
# Nor may the pinned toolchain's clippy-driver wrap Debian's rustc (scripts/clippy-in-build.sh).
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
export CARGO_TARGET_DIR=target/cross

profile="${EDGEFLEET_DEVICE_PROFILE:-device}"
/usr/bin/cargo build --locked --profile "$profile" --target "$target" "${packages[@]}"
for bin in "${bins[@]}"; do
  ls -l "target/cross/$target/$profile/$bin"
done
