#!/usr/bin/env bash
# Compatibility test: Claude Code (the CLI, version pinned below) against a real gatewayd
# serving the Anthropic Messages API over a mock chat upstream (check.py, mock_upstream.py).
# See tests/claude-code/README.md.
#
#   bash tests/claude-code/run.sh
#
# CLAUDE_CODE_VERSION  @anthropic-ai/claude-code version to install (default below)
# CLAUDE_CODE_DIR      where it is installed and kept between runs
#                      (default: ${CARGO_TARGET_DIR:-$REPO/target}/claude-code)
# CLAUDE_BIN           an installed `claude` to use instead (no install)
# GATEWAYD_BIN         gatewayd binary to test (default: ${CARGO_TARGET_DIR:-$REPO/target}/debug/gatewayd,
#                      rebuilt with `cargo build --bin gatewayd`)
# Needs python3 (stdlib only) and, for the install, npm and the npm registry.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in
    /*) ;;
    *) TARGET_DIR="$REPO/$TARGET_DIR" ;;
esac
CC_DIR="${CLAUDE_CODE_DIR:-$TARGET_DIR/claude-code}"

# The version a `claude` binary reports ("2.1.332 (Claude Code)"), or nothing.
version_of() {
    "$1" --version 2>/dev/null | awk 'NR == 1 { print $1 }' || true
}

# The installed claude: the npm bin link (the package's postinstall puts the native binary
# there), else the platform package's binary itself (if npm skipped the postinstall).
find_claude() {
    local candidate
    for candidate in "$CC_DIR/node_modules/.bin/claude" "$CC_DIR"/node_modules/@anthropic-ai/claude-code-*/claude; do
        if [ -x "$candidate" ] && [ "$(version_of "$candidate")" = "$CLAUDE_CODE_VERSION" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [ -n "${CLAUDE_BIN:-}" ]; then
    CLAUDE="$CLAUDE_BIN"
elif ! CLAUDE="$(find_claude)"; then
    if ! command -v npm >/dev/null; then
        echo "claude-code: npm is required to install @anthropic-ai/claude-code (or set CLAUDE_BIN)" >&2
        exit 1
    fi
    echo "claude-code: installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION into $CC_DIR" >&2
    mkdir -p "$CC_DIR"
    # The package is a ~400 MB native binary; its engines field asks for Node 22, which only
    # its installer script needs (Node 18+ runs that too).
    if ! npm install --prefix "$CC_DIR" --save-exact --no-audit --no-fund --loglevel=error \
            "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >&2; then
        echo "claude-code: FAILED to install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION from the npm" >&2
        echo "claude-code: registry into $CC_DIR (no network? no disk space?); set CLAUDE_BIN to an" >&2
        echo "claude-code: installed claude $CLAUDE_CODE_VERSION to run without installing." >&2
        exit 1
    fi
    if ! CLAUDE="$(find_claude)"; then
        echo "claude-code: FAILED: installed, but no claude in $CC_DIR runs and reports $CLAUDE_CODE_VERSION" >&2
        echo "claude-code: (no native binary for $(uname -sm)?); set CLAUDE_BIN to one that does." >&2
        exit 1
    fi
fi
echo "claude-code: $CLAUDE ($(version_of "$CLAUDE"))" >&2

if [ -z "${GATEWAYD_BIN:-}" ]; then
    GATEWAYD_BIN="$TARGET_DIR/debug/gatewayd"
    # Always (re)build: cargo is a no-op when fresh, and a stale binary would test old code.
    cargo build --quiet --bin gatewayd
fi
if [ ! -x "$GATEWAYD_BIN" ]; then
    echo "claude-code: gatewayd binary not found or not executable: $GATEWAYD_BIN" >&2
    exit 1
fi

# No __pycache__ left in the work tree.
export PYTHONDONTWRITEBYTECODE=1
exec python3 "$REPO/tests/claude-code/check.py" "$GATEWAYD_BIN" "$CLAUDE"
