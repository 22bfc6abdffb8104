#!/usr/bin/env bash
# The README's tour, run as written, in order, from a fresh shell, against a built
# gatewayd, so it cannot rot. tests/tour/extract.py cuts README.md into two scripts:
#
#   <!-- tour: server -->      the next block is terminal 1: it runs in the background
#                              (fresh environment, an empty directory) until the tour ends,
#                              then gets SIGINT (Ctrl-C) and must exit 0
#   (no marker)                a sh block is terminal 2: every such block runs in one bash
#                              (set -euo pipefail), in README order, in the same directory,
#                              from a fresh environment, once the server listens
#   <!-- tour: file NAME -->   the next block (python, js, ...) is a file the reader saves
#                              as NAME; it is written at its place in terminal 2's run
#   <!-- tour: skip ... -->    the next block is not run (installs, provider keys, the test
#                              suite itself); say why after "skip"
#
# A python or js block with no marker is an error, so nothing is skipped by accident.
# What differs from a reader's run, and why:
#   - `gatewayd` is the binary under test (first on PATH);
#   - the port: 127.0.0.1:8642 becomes a free port from the OS (API_SERVER_PORT for the
#     server), so a gatewayd already running here does not matter;
#   - the SDK installs are skipped: .venv is the Python SDK virtualenv of tests/sdk/run.sh
#     (same requirements), node_modules that of tests/sdk-node (npm ci, pinned), and the
#     directory is a default npm project (package.json with "type": "commonjs");
#   - curl fails on an HTTP error (--fail-with-body), so a refused call fails the tour.
#
#   bash tests/tour/run.sh
#
# GATEWAYD_BIN  gatewayd binary (default ${CARGO_TARGET_DIR:-$REPO/target}/debug/gatewayd,
#               rebuilt with `cargo build --bin gatewayd`)
# SDK_VENV      Python SDK virtualenv (default $REPO/target/sdk-venv, as tests/sdk/run.sh)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

if [ -z "${GATEWAYD_BIN:-}" ]; then
    TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
    case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
    GATEWAYD_BIN="$TARGET_DIR/debug/gatewayd"
    cargo build --quiet --bin gatewayd
fi

VENV="${SDK_VENV:-$REPO/target/sdk-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "tour: creating virtualenv $VENV" >&2
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$REPO/tests/sdk/requirements.txt"
if [ ! -d tests/sdk-node/node_modules/openai ]; then
    (cd tests/sdk-node && npm ci --no-audit --no-fund --loglevel=error)
fi

TOUR="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || kill -KILL "$SERVER_PID" || true
    fi
    rm -rf "$TOUR"
}
trap cleanup EXIT
fail() {
    echo "tour: FAILED: $*" >&2
    sed 's/^/  terminal 1: /' "$TOUR/server.log" >&2 || true
    exit 1
}

python3 tests/tour/extract.py README.md "$TOUR"
mkdir "$TOUR/bin" "$TOUR/home" "$TOUR/dir"
ln -s "$GATEWAYD_BIN" "$TOUR/bin/gatewayd"
ln -s "$VENV" "$TOUR/dir/.venv"
ln -s "$REPO/tests/sdk-node/node_modules" "$TOUR/dir/node_modules"
# A default npm project: recent npm's `npm init -y` writes "type": "commonjs", where a
# .js file with `import` fails (Node's module detection does not apply then).
echo '{ "name": "tour", "version": "1.0.0", "type": "commonjs" }' > "$TOUR/dir/package.json"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
sed -i "s/127\.0\.0\.1:8642/127.0.0.1:$PORT/g" "$TOUR/client.sh"
FRESH=(env -i "HOME=$TOUR/home" "PATH=$TOUR/bin:$PATH" "LANG=C.UTF-8")

# Terminal 1, in its own process group so Ctrl-C reaches what it started.
cd "$TOUR/dir"
setsid "${FRESH[@]}" API_SERVER_PORT="$PORT" bash -e "$TOUR/server.sh" > "$TOUR/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do
    grep -q "gatewayd listening" "$TOUR/server.log" && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "terminal 1 ended before gatewayd listened"
    sleep 0.1
done
grep -q "gatewayd listening" "$TOUR/server.log" || fail "gatewayd did not listen within 30 s"

# Terminal 2.
{
    echo 'curl() { command curl --fail-with-body "$@"; }'
    cat "$TOUR/client.sh"
} > "$TOUR/terminal2.sh"
# A block that never ends (a second server, say) fails the tour instead of hanging it.
timeout 300 "${FRESH[@]}" bash -euo pipefail "$TOUR/terminal2.sh" \
    || fail "terminal 2 failed or ran over 300 s (above)"

# Ctrl-C in terminal 1.
kill -INT -- "-$SERVER_PID"
code=0
wait "$SERVER_PID" || code=$?
SERVER_PID=""
[ "$code" = 0 ] || fail "gatewayd exited $code after Ctrl-C"
echo "tour: every README block ran" >&2
