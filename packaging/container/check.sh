#!/usr/bin/env bash
# What can be checked of the container recipe without a container engine: compose.yaml parses and
# its services are wired as documented, and the image's server.toml, with the environment compose
# gives the server, passes the built fleet-server's own check-config.
#
#   bash packaging/container/check.sh [BINARY_DIR]     (default target/debug)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=$(cd "${1:-$here/../../target/debug}" && pwd)

env_file=$(mktemp)
trap 'rm -f "$env_file"' EXIT
python3 - "$here/compose.yaml" "$env_file" <<'PY'
import re, sys, yaml

compose = yaml.safe_load(open(sys.argv[1]))
services = compose["services"]
assert set(services) == {"postgres", "broker-config", "mosquitto", "fleet-server"}, services.keys()
server = services["fleet-server"]
assert server["depends_on"]["mosquitto"]["condition"] == "service_started"
for name in ["fleet-server", "broker-config"]:
    assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    url = services[name]["environment"]["EDGEFLEET_SERVER__DATABASE__URL"]
    assert url.startswith("postgres://edgefleet:") and "@postgres:5432/edgefleet" in url, url
assert services["postgres"]["environment"]["POSTGRES_DB"] == "edgefleet"
assert services["mosquitto"]["depends_on"]["broker-config"]["condition"] == "service_completed_successfully"
assert services["broker-config"]["command"][0] == "mosquitto-config"
volumes = set(compose["volumes"])
for name, service in services.items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        assert source.startswith(".") or source in volumes, f"{name}: undeclared volume {source}"
with open(sys.argv[2], "w") as out:
    for key, value in server["environment"].items():
        value = re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "example-password", str(value))
        out.write(f"{key}={value}\n")
PY
set -a
. "$env_file"
set +a
"$bin_dir/fleet-server" check-config --config "$here/server.toml"
echo "packaging/container/check.sh: compose.yaml wiring and the image's configuration check out"
