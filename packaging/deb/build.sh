#!/usr/bin/env bash
# Builds the Debian packages from already-built binaries, with dpkg-deb (why not cargo-deb:
# packaging/README.md).
#
#   bash packaging/deb/build.sh ARCH BINARY_DIR OUT_DIR [VERSION]
#
#   ARCH        amd64 | arm64 | armhf: checked against the binaries' ELF headers
#   BINARY_DIR  holds edge-agent, fleet-server and fleetctl (fleet-server only for amd64/arm64
#               if present); e.g. target/release or target/cross/aarch64-unknown-linux-gnu/release
#   VERSION     default: the workspace version from Cargo.toml
#   DEB_COMPRESSION (environment) dpkg-deb's -Z: xz by default; the install test uses gzip, which
#               is 10x faster on these binaries
#
# Writes OUT_DIR/edge-agent_VERSION_ARCH.deb, fleetctl_..., and fleet-server_... for each binary
# found in BINARY_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() { echo "usage: packaging/deb/build.sh amd64|arm64|armhf BINARY_DIR OUT_DIR [VERSION]" >&2; exit 2; }
[ $# -ge 3 ] || usage
arch=$1; bin_dir=$(cd "$2" && pwd); mkdir -p "$3"; out_dir=$(cd "$3" && pwd)
version=${4:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)}
case "$arch" in
  amd64) elf_machine='Advanced Micro Devices X86-64'; strip=strip ;;
  arm64) elf_machine='AArch64'; strip=aarch64-linux-gnu-strip ;;
  armhf) elf_machine='ARM'; strip=arm-linux-gnueabihf-strip ;;
  *) usage ;;
esac
command -v "$strip" >/dev/null || {
  echo "packaging/deb/build.sh: $strip not found (apt-get install binutils-${strip%-strip}, or binutils for amd64)" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Shared-library dependencies as Debian names them, read from the binary (glibc only: everything
# else is linked in statically; ONNX Runtime is opened at run time if present).
libc_depends() {
  local glibc
  glibc=$(readelf --version-info --wide "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  echo "libc6 (>= $glibc)"
}

# Packages ship stripped binaries (release builds already are; debug builds, as CI packages
# them, are 90 % symbols).
install_binary() { # BINARY DEST
  check_binary "$1"
  install -D -m 0755 "$1" "$2"
  "$strip" --strip-unneeded "$2"
}

check_binary() {
  local binary=$1 machine
  machine=$(readelf -h "$binary" | sed -n 's/^ *Machine: *//p')
  if [ "$machine" != "$elf_machine" ]; then
    echo "packaging/deb/build.sh: $binary is built for '$machine', not $arch ('$elf_machine')" >&2
    exit 1
  fi
}

# package NAME DESCRIPTION: stages $work/NAME (already holding its files) and builds the .deb.
package() {
  local name=$1 description=$2 staged=$work/$1 depends
  depends=$(libc_depends "$staged/usr/bin/$name")
  mkdir -p "$staged/DEBIAN"
  if [ -d "$here/$name" ]; then
    for script in "$here/$name"/*; do
      install -D -m 0755 "$script" "$staged/DEBIAN/$(basename "$script")"
    done
  fi
  if [ -d "$staged/lib/systemd" ]; then depends="$depends, adduser"; fi
  install -D -m 0644 "$here/copyright" "$staged/usr/share/doc/$name/copyright"
  if [ -d "$staged/etc" ]; then
    (cd "$staged" && find etc -type f | sed 's|^|/|') > "$staged/DEBIAN/conffiles"
  fi
  cat > "$staged/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: Edgefleet <packages@edgefleet.invalid>
Section: net
Priority: optional
Depends: $depends
Installed-Size: $(du -sk --exclude=DEBIAN "$staged" | cut -f1)
Homepage: https://example.invalid/edgefleet
Description: $description
CONTROL
  dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$staged" "$out_dir/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out_dir/${name}_${version}_${arch}.deb"
}

built=0
if [ -x "$bin_dir/edge-agent" ]; then
  s=$work/edge-agent
  install_binary "$bin_dir/edge-agent" "$s/usr/bin/edge-agent"
  install -D -m 0644 "$root/systemd/edge-agent.service" "$s/lib/systemd/system/edge-agent.service"
  # Not a conffile: every device needs its own device_id, so postinst writes
  # /etc/edgefleet/agent.toml from this template on first install and never touches it again.
  install -D -m 0644 "$here/agent.toml" "$s/usr/share/edgefleet/agent.toml.example"
  package edge-agent "Edgefleet device agent: serves ONNX models locally, installs verified updates
 Runs ONNX models with tract (and ONNX Runtime when its library is installed) behind a local
 HTTP API, with or without a network; receives model updates from a fleet server over MQTT,
 verifies them through TUF metadata, health-checks them before they serve and rolls back on
 failure."
  built=$((built + 1))
fi
if [ -x "$bin_dir/fleet-server" ]; then
  s=$work/fleet-server
  install_binary "$bin_dir/fleet-server" "$s/usr/bin/fleet-server"
  install -D -m 0644 "$root/systemd/fleet-server.service" "$s/lib/systemd/system/fleet-server.service"
  # Used only when Mosquitto is installed and the server is pointed at it; harmless otherwise.
  install -D -m 0644 "$root/systemd/mosquitto-edgefleet.conf" \
    "$s/lib/systemd/system/mosquitto.service.d/edgefleet.conf"
  install -D -m 0640 "$here/server.toml" "$s/etc/edgefleet/server.toml"
  package fleet-server "Edgefleet fleet server: model registry, device inventory, staged rollouts
 Signed TUF repository and content-addressed artifacts, device enrollment and groups, staged
 rollouts with canaries, waves, failure thresholds and automatic rollback, an operator API and
 Prometheus metrics; embeds an MQTT broker or uses Mosquitto/EMQX."
  built=$((built + 1))
fi
if [ -x "$bin_dir/fleetctl" ]; then
  install_binary "$bin_dir/fleetctl" "$work/fleetctl/usr/bin/fleetctl"
  package fleetctl "Edgefleet operator CLI: keys, signing, model versions, rollouts
 Creates and keeps the offline TUF keys, signs and pushes model versions to a fleet server,
 and creates, watches and steers rollouts."
  built=$((built + 1))
fi
if [ "$built" = 0 ]; then
  echo "packaging/deb/build.sh: no edge-agent, fleet-server or fleetctl binary in $bin_dir" >&2
  exit 1
fi
