#!/usr/bin/env bash
# Runs the public tuf-conformance suite against conformance-client. The suite is not on a package
# registry; pass the path of a checkout of theupdateframework/tuf-conformance:
#   bash scripts/tuf-conformance.sh /path/to/tuf-conformance
set -euo pipefail
suite=${1:?usage: $0 /path/to/tuf-conformance}
cd "$(dirname "$0")/.."
repo=$(pwd)
command -v faketime >/dev/null || { apt-get update -qq && apt-get install -y -qq faketime; }
cargo build --locked -p edgefleet-conformance-client
cd "$suite"
[ -x env/bin/pytest ] || { python3 -m venv env && ./env/bin/pip install -q -e .; }
./env/bin/pytest tuf_conformance --entrypoint "$repo/target/debug/conformance-client" -q -p no:cacheprovider
