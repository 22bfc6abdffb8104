#!/usr/bin/env bash
# Compatibility test: the official OpenAI Python SDK against a real gatewayd process
# and a mock upstream (tests/sdk/test_openai_sdk.py).
#
#   bash tests/sdk/run.sh [extra pytest args]
#
# SDK_VENV      virtualenv to create/reuse   (default: $REPO/target/sdk-venv)
# GATEWAYD_BIN  gatewayd binary to test      (default: ${CARGO_TARGET_DIR:-$REPO/target}/debug/gatewayd,
#                                             rebuilt with `cargo build --bin gatewayd`)
# Exits with pytest's exit code.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

VENV="${SDK_VENV:-$REPO/target/sdk-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "sdk: creating virtualenv $VENV" >&2
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$REPO/tests/sdk/requirements.txt"

if [ -z "${GATEWAYD_BIN:-}" ]; then
    TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
    case "$TARGET_DIR" in
        /*) ;;
        *) TARGET_DIR="$REPO/$TARGET_DIR" ;;
    esac
    GATEWAYD_BIN="$TARGET_DIR/debug/gatewayd"
    # Always (re)build: cargo is a no-op when fresh, and a stale binary would test old code.
    cargo build --quiet --bin gatewayd
fi
if [ ! -x "$GATEWAYD_BIN" ]; then
    echo "sdk: gatewayd binary not found or not executable: $GATEWAYD_BIN" >&2
    exit 1
fi
export GATEWAYD_BIN

# No .pytest_cache or __pycache__ left in the work tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$REPO/tests/sdk" "$@"
