#!/usr/bin/env bash
# Installs what building and testing Edgefleet needs on a fresh Debian machine (run as root).
# Idempotent: a second run only checks. The Rust toolchain itself comes from rust-toolchain.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
# faketime: the TUF clock tests set the clock back per process.
[ -x /usr/bin/faketime ] || need_apt+=(faketime)
# mosquitto: the server's MQTT tests run against a real external broker too. Only the binary is
# used; the Debian service the package enables is stopped below so it holds no port.
[ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
# openssl: the MQTT-over-TLS test makes a throwaway CA with it.
command -v openssl >/dev/null || need_apt+=(openssl)
# systemd/check.sh verifies the units; packaging/deb/test.sh installs the packages, whose scripts
# use adduser, strips with binutils and probes the installed daemons with curl.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v adduser >/dev/null || need_apt+=(adduser)
command -v strip >/dev/null || need_apt+=(binutils)
command -v curl >/dev/null || need_apt+=(curl)
# wrk: the agent benchmark's load generator, the same settings for the agent and its peer.
command -v wrk >/dev/null || need_apt+=(wrk)
# PostgreSQL's server binaries: the store suite and a whole rollout run on a real PostgreSQL that
# each test starts for itself (tests/src/postgres.rs). The cluster the package may start is stopped
# below; the tests never use it.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need_apt+=(postgresql)
# prometheus (with promtool) + prometheus-alertmanager: the shipped alert rules are tested with
# promtool and in a real Prometheus scraping a server, alerting through a real Alertmanager.
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
# chromium + chromium-driver: the dashboard test drives a real headless browser over WebDriver.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ "${#need_apt[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if pgrep -x mosquitto >/dev/null && command -v service >/dev/null; then
  service mosquitto stop >/dev/null 2>&1 || true
fi
for daemon in prometheus prometheus-alertmanager prometheus-node-exporter; do
  if pgrep -f "^/usr/bin/$daemon( |$)" >/dev/null && command -v service >/dev/null; then
    service "$daemon" stop >/dev/null 2>&1 || true
  fi
done
if pgrep -f 'postgresql/.*/bin/postgres -D /var/lib/postgresql' >/dev/null && command -v service >/dev/null; then
  service postgresql stop >/dev/null 2>&1 || true
fi

# Python is only needed to rebuild and re-check the models (the Rust tests never call it).
if ! python3 - <<'PY' 2>/dev/null
import importlib.metadata as md, sys
want = {}
for line in open("models/requirements.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        want[name] = version
sys.exit(0 if all(md.version(n) == v for n, v in want.items()) else 1)
PY
then
  python3 -m pip install --quiet --disable-pip-version-check -r models/requirements.txt
fi

# packaging/container/check.sh reads compose.yaml; terraform/check.py parses HCL2.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pyyaml
python3 -c 'import hcl2' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'python-hcl2==8.1.4'
