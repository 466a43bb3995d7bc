#!/usr/bin/env bash
# Checks the units: `systemd-analyze verify` (against the freshly built binaries, since the units
# name /usr/bin) and `systemd-analyze security --offline=true`, whose exposure must stay <= 2.0.
# Usage: bash systemd/check.sh [BINARY_DIR]   (default target/debug)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "${1:-$here/../target/debug}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in edge-agent fleet-server; do
  sed "s#/usr/bin/#$bin/#g" "$here/$unit.service" > "$work/$unit.service"
  systemd-analyze verify "$work/$unit.service"
  exposure=$(systemd-analyze security --offline=true "$here/$unit.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "$unit.service: systemd-analyze verify passes; exposure ${exposure:-unknown}"
  if ! awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }'; then
    echo "$unit.service: exposure ${exposure:-unknown} is above the goal of 2.0" >&2
    exit 1
  fi
done
