#!/bin/sh
# Installs the Matrix homeserver used by tests/it/matrix.rs, on demand, into
# a folder of the build (never into the repository):
#
#   tests/matrix/setup.sh ROOT   -> ROOT/synapse-venv with matrix-synapse
#
# ROOT is normally target/interop. Synapse (AGPL-3.0) only ever runs as a
# separate process of the tests; nothing links it. An existing, matching
# install is reused; a lock file keeps parallel test processes from
# installing twice.
# Exit codes: 0 ready, 2 usage, 3 a required program is missing, 4 the
# install failed (e.g. the package registry is unreachable).
set -eu

SYNAPSE_VERSION=1.163.2

root=${1:-}
if [ -z "$root" ]; then
    echo "usage: $0 ROOT" >&2
    exit 2
fi
mkdir -p "$root"

if ! command -v python3 >/dev/null 2>&1; then
    echo "matrix setup: \`python3\` not found on PATH; install it (CI installs python3 and python3-venv)" >&2
    exit 3
fi

lock="$root/.lock-synapse"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$lock"
    flock -w 900 9
else
    n=0
    until mkdir "$lock.d" 2>/dev/null; do
        n=$((n + 1))
        if [ "$n" -gt 900 ]; then
            echo "matrix setup: lock $lock.d held for 15 minutes; remove it if stale" >&2
            exit 4
        fi
        sleep 1
    done
    trap 'rmdir "$lock.d"' EXIT
fi

venv="$root/synapse-venv"
if [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "import sys, importlib.metadata as m; sys.exit(m.version('matrix-synapse') != '$SYNAPSE_VERSION')" 2>/dev/null; then
    exit 0
fi
rm -rf "$venv"
if ! python3 -m venv "$venv" >&2; then
    echo "matrix setup: \`python3 -m venv\` failed (Debian: apt-get install python3-venv)" >&2
    exit 4
fi
if ! "$venv/bin/pip" install --disable-pip-version-check --quiet "matrix-synapse==$SYNAPSE_VERSION" >&2; then
    rm -rf "$venv"
    echo "matrix setup: pip install matrix-synapse==$SYNAPSE_VERSION failed (is PyPI reachable?)" >&2
    exit 4
fi
