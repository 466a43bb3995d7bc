#!/usr/bin/env bash
# Installs the amd64 packages on this machine and checks what a user relies on: files, users,
# permissions, the units (systemd-analyze verify), that the installed agent and server start as
# their users on the packaged configs, that an upgrade keeps state and edited configuration, that
# removal keeps state and that only purge deletes it. Cleans up after itself (purge).
#
#   bash packaging/deb/test.sh [BINARY_DIR]     (default target/debug)
#
# Run as root on a machine without these packages (CI's throw-away machine; scripts/test-all.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin_dir=$(cd "${1:-$root/target/debug}" && pwd)
packages="edge-agent fleet-server fleetctl"

for p in $packages; do
  if dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q installed; then
    echo "packaging/deb/test.sh: $p is already installed here; this test installs and purges it," \
      "so run it on a throw-away machine (dpkg -P $p first if this one is)" >&2
    exit 1
  fi
done

work=$(mktemp -d)
agent_pid=
server_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  dpkg -P $packages >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "packaging/deb/test.sh: FAILED: $*" >&2; exit 1; }
check() { local what=$1; shift; "$@" || fail "$what"; echo "ok: $what"; }
owner_mode() { stat -c '%U:%G %a' "$1"; }
wait_http() { # URL PID LOG
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; return 1; }
    sleep 0.1
  done
  cat "$3" >&2; return 1
}

DEB_COMPRESSION=gzip bash "$here/build.sh" amd64 "$bin_dir" "$work/v1" 0.1.0 >/dev/null
DEB_COMPRESSION=gzip bash "$here/build.sh" amd64 "$bin_dir" "$work/v2" 0.1.1 >/dev/null
for deb in "$work"/v1/*.deb; do
  check "$(basename "$deb") has a control file with Depends" sh -c "dpkg-deb -f '$deb' Depends | grep -q libc6"
done

# First install.
dpkg -i "$work"/v1/*.deb
check "binaries installed" test -x /usr/bin/edge-agent -a -x /usr/bin/fleet-server -a -x /usr/bin/fleetctl
check "units installed" test -f /lib/systemd/system/edge-agent.service -a -f /lib/systemd/system/fleet-server.service
check "Mosquitto's descriptor limit raised for a fleet" grep -qx 'LimitNOFILE=262144' /lib/systemd/system/mosquitto.service.d/edgefleet.conf
check "system users exist" sh -c 'getent passwd edgefleet >/dev/null && getent passwd edgefleet-server >/dev/null'
check "users cannot log in" sh -c 'getent passwd edgefleet | grep -q nologin && getent passwd edgefleet-server | grep -q nologin'
check "agent state dir edgefleet:edgefleet 750" test "$(owner_mode /var/lib/edgefleet)" = "edgefleet:edgefleet 750"
check "server state dir edgefleet-server 700" test "$(owner_mode /var/lib/edgefleet-server)" = "edgefleet-server:edgefleet-server 700"
check "agent.toml root:edgefleet 640" test "$(owner_mode /etc/edgefleet/agent.toml)" = "root:edgefleet 640"
check "server.toml root:edgefleet-server 640" test "$(owner_mode /etc/edgefleet/server.toml)" = "root:edgefleet-server 640"
expected_id=$(uname -n | tr -c 'A-Za-z0-9._\n-' '-' | cut -c1-64)
check "agent.toml names this host as device_id" grep -qx "device_id = \"$expected_id\"" /etc/edgefleet/agent.toml
check "server.toml is a conffile" sh -c 'dpkg-query -W -f "\${Conffiles}" fleet-server | grep -q /etc/edgefleet/server.toml'
check "packaged agent config validates" /usr/bin/edge-agent check-config --config /etc/edgefleet/agent.toml
check "packaged server config validates" /usr/bin/fleet-server check-config --config /etc/edgefleet/server.toml
check "edge-agent.service verifies" systemd-analyze verify /lib/systemd/system/edge-agent.service
check "fleet-server.service verifies" systemd-analyze verify /lib/systemd/system/fleet-server.service
check "edge-agent enabled on first install" test -L /etc/systemd/system/multi-user.target.wants/edge-agent.service
check "fleet-server enabled on first install" test -L /etc/systemd/system/multi-user.target.wants/fleet-server.service

# The daemons run as their users on what the packages installed (no systemd as PID 1 here, so
# not under the units: the units themselves are checked by verify and systemd/check.sh).
runuser -u edgefleet -- /usr/bin/edge-agent run --config /etc/edgefleet/agent.toml >"$work/agent.log" 2>&1 &
agent_pid=$!
check "installed agent serves as edgefleet" wait_http http://127.0.0.1:8700/v2/health/live "$agent_pid" "$work/agent.log"
runuser -u edgefleet-server -- /usr/bin/fleet-server serve --config /etc/edgefleet/server.toml >"$work/server.log" 2>&1 &
server_pid=$!
check "installed server serves as edgefleet-server" wait_http http://127.0.0.1:8800/metrics "$server_pid" "$work/server.log"
kill "$agent_pid" "$server_pid"; wait "$agent_pid" "$server_pid" 2>/dev/null || true
agent_pid=; server_pid=
check "agent wrote its state as edgefleet" test -n "$(find /var/lib/edgefleet -mindepth 1 -user edgefleet -print -quit)"
check "server wrote its state as edgefleet-server" test -n "$(find /var/lib/edgefleet-server -mindepth 1 -user edgefleet-server -print -quit)"

# Upgrade: state and the operator's edits survive.
echo keep > /var/lib/edgefleet/marker
echo keep > /var/lib/edgefleet-server/marker
echo '# edited by the operator' >> /etc/edgefleet/agent.toml
sed -i 's/^listen = "127.0.0.1:8800"/listen = "127.0.0.1:8801"/' /etc/edgefleet/server.toml
dpkg -i "$work"/v2/*.deb
check "upgraded to 0.1.1" test "$(dpkg-query -W -f '${Version}' edge-agent)" = 0.1.1
check "upgrade keeps agent state" test "$(cat /var/lib/edgefleet/marker)" = keep
check "upgrade keeps server state" test "$(cat /var/lib/edgefleet-server/marker)" = keep
check "upgrade keeps edited agent.toml" grep -q '^# edited by the operator' /etc/edgefleet/agent.toml
check "upgrade keeps edited server.toml" grep -q '^listen = "127.0.0.1:8801"' /etc/edgefleet/server.toml

# Removal keeps state and configuration.
dpkg -r $packages
check "removal deletes the binaries" test ! -e /usr/bin/edge-agent -a ! -e /usr/bin/fleet-server
check "removal keeps agent state" test -f /var/lib/edgefleet/marker
check "removal keeps server state" test -f /var/lib/edgefleet-server/marker
check "removal keeps configuration" test -f /etc/edgefleet/agent.toml -a -f /etc/edgefleet/server.toml

# Purge deletes them.
dpkg -P $packages
check "purge deletes agent state" test ! -e /var/lib/edgefleet
check "purge deletes server state" test ! -e /var/lib/edgefleet-server
check "purge deletes configuration" test ! -e /etc/edgefleet/agent.toml -a ! -e /etc/edgefleet/server.toml
check "purge deletes the enablement links" test ! -e /etc/systemd/system/multi-user.target.wants/edge-agent.service
echo "packaging/deb/test.sh: all checks passed"
