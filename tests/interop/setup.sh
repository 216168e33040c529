#!/bin/sh
# Installs the third-party MLLP clients used by tests/it/interop.rs, on
# demand, into a folder of the build (never into the repository):
#
#   tests/interop/setup.sh python ROOT   -> ROOT/venv with hl7==0.4.5 (mllp_send)
#   tests/interop/setup.sh node ROOT     -> ROOT/node with node-hl7-client@3.2.0
#
# ROOT is normally target/interop. An existing, matching install is reused.
# A lock file per tool keeps parallel test processes from installing twice.
# Exit codes: 0 ready, 2 usage, 3 a required program is missing, 4 the
# install failed (e.g. the package registry is unreachable).
set -eu

PY_HL7_VERSION=0.4.5
NODE_HL7_CLIENT_VERSION=3.2.0

what=${1:-}
root=${2:-}
if [ -z "$what" ] || [ -z "$root" ]; then
    echo "usage: $0 python|node ROOT" >&2
    exit 2
fi
mkdir -p "$root"

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "interop setup: \`$1\` not found on PATH; install it (CI installs python3, node and npm)" >&2
        exit 3
    fi
}

# Serialise installs of the same tool (flock from util-linux when present,
# otherwise an atomic mkdir with a generous wait).
lock="$root/.lock-$what"
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

case "$what" in
python)
    venv="$root/venv"
    if [ -x "$venv/bin/mllp_send" ] &&
        "$venv/bin/python" -c "import sys, hl7; sys.exit(hl7.__version__ != '$PY_HL7_VERSION')" 2>/dev/null; then
        exit 0
    fi
    need python3
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
        echo "interop setup: \`python3 -m venv\` failed (Debian: apt-get install python3-venv)" >&2
        exit 4
    fi
    if ! "$venv/bin/pip" install --disable-pip-version-check --quiet "hl7==$PY_HL7_VERSION" >&2; then
        rm -rf "$venv"
        echo "interop setup: pip install hl7==$PY_HL7_VERSION failed (is PyPI reachable?)" >&2
        exit 4
    fi
    ;;
node)
    dir="$root/node"
    pkg="$dir/node_modules/node-hl7-client/package.json"
    if [ -f "$pkg" ] && grep -q "\"version\": \"$NODE_HL7_CLIENT_VERSION\"" "$pkg"; then
        need node
        exit 0
    fi
    need node
    need npm
    mkdir -p "$dir"
    if [ ! -f "$dir/package.json" ]; then
        printf '{\n  "name": "switchboard-interop",\n  "private": true\n}\n' >"$dir/package.json"
    fi
    if ! (cd "$dir" && npm install --silent --no-audit --no-fund --save-exact "node-hl7-client@$NODE_HL7_CLIENT_VERSION" >&2); then
        echo "interop setup: npm install node-hl7-client@$NODE_HL7_CLIENT_VERSION failed (is the npm registry reachable?)" >&2
        exit 4
    fi
    ;;
*)
    echo "usage: $0 python|node ROOT" >&2
    exit 2
    ;;
esac
