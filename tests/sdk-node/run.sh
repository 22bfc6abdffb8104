#!/usr/bin/env bash
# Compatibility test: the official OpenAI Node SDK against a real gatewayd process and a
# mock upstream (tests/sdk-node/harness.mjs): sdk.test.mjs covers chat, models and sessions;
# responses.test.mjs the Responses and Conversations APIs, on SQLite and, when
# GATEWAYD_TEST_POSTGRES_URL is set, PostgreSQL. The SDK version is pinned in package-lock.json.
#
#   bash tests/sdk-node/run.sh
#
# GATEWAYD_BIN  gatewayd binary to test (default: ${CARGO_TARGET_DIR:-$REPO/target}/debug/gatewayd,
#               rebuilt with `cargo build --bin gatewayd`)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO/tests/sdk-node"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "sdk-node: node and npm are required (Node 18 or newer)" >&2
    exit 1
fi
npm ci --no-audit --no-fund --loglevel=error

if [ -z "${GATEWAYD_BIN:-}" ]; then
    TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
    case "$TARGET_DIR" in
        /*) ;;
        *) TARGET_DIR="$REPO/$TARGET_DIR" ;;
    esac
    GATEWAYD_BIN="$TARGET_DIR/debug/gatewayd"
    (cd "$REPO" && cargo build --quiet --bin gatewayd)
fi
export GATEWAYD_BIN
exec node --test --test-concurrency=1 sdk.test.mjs responses.test.mjs anthropic.test.mjs
