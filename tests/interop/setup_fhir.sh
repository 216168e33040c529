#!/bin/sh
# Installs the third-party FHIR client used by tests/it/fhir_more.rs, on
# demand, into a folder of the build (never into the repository):
#
#   tests/interop/setup_fhir.sh ROOT   -> ROOT/node-fhir with fhir-kit-client@2.0.3
#
# ROOT is normally target/interop. An existing, matching install is reused.
# A lock file keeps parallel test processes from installing twice (the
# same approach as setup.sh, with its own lock and folder).
# Exit codes: 0 ready, 2 usage, 3 a required program is missing, 4 the
# install failed (e.g. the package registry is unreachable).
set -eu

FHIR_KIT_CLIENT_VERSION=2.0.3

root=${1:-}
if [ -z "$root" ]; then
    echo "usage: $0 ROOT" >&2
    exit 2
fi
mkdir -p "$root"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "interop setup: \`$1\` not found on PATH; install it (CI installs node and npm)" >&2
        exit 3
    fi
}

lock="$root/.lock-node-fhir"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$lock"
    flock -w 600 9
else
    n=0
    until mkdir "$lock.d" 2>/dev/null; do
        n=$((n + 1))
        if [ "$n" -gt 600 ]; then
            echo "interop setup: lock $lock.d held for 10 minutes; remove it if stale" >&2
            exit 4
        fi
        sleep 1
    done
    trap 'rmdir "$lock.d"' EXIT
fi

dir="$root/node-fhir"
pkg="$dir/node_modules/fhir-kit-client/package.json"
need node
if [ -f "$pkg" ] && grep -q "\"version\": \"$FHIR_KIT_CLIENT_VERSION\"" "$pkg"; then
    exit 0
fi
need npm
mkdir -p "$dir"
if [ ! -f "$dir/package.json" ]; then
    printf '{\n  "name": "switchboard-interop-fhir",\n  "private": true\n}\n' >"$dir/package.json"
fi
if ! (cd "$dir" && npm install --silent --no-audit --no-fund --save-exact "fhir-kit-client@$FHIR_KIT_CLIENT_VERSION" >&2); then
    echo "interop setup: npm install fhir-kit-client@$FHIR_KIT_CLIENT_VERSION failed (is the npm registry reachable?)" >&2
    exit 4
fi
