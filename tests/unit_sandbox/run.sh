#!/usr/bin/env bash
# tests/ops.rs (sd_notify, socket activation, SIGTERM drain, SIGHUP reload, metrics, JSON
# logs), tests/reload.rs and the session-process tests again, with gatewayd under the
# system-call filter and the /proc restrictions of config/gatewayd.service (sandbox.py),
# so a tighter unit cannot break what the daemon needs. The score itself is checked by
# tests/unit_security.rs.
#
#   bash tests/unit_sandbox/run.sh
#
# Needs root, systemd-analyze and python3-seccomp (installed with apt-get when missing);
# says so and exits 0 when not root.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

if [ "$(id -u)" != 0 ]; then
    echo "unit_sandbox: skipped: mounting a private /proc needs root" >&2
    exit 0
fi
if ! /usr/bin/python3 -c 'import seccomp' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-seccomp
fi

WRAPPER="$(mktemp -d)/gatewayd-sandboxed"
trap 'rm -rf "$(dirname "$WRAPPER")"' EXIT
printf '#!/bin/sh\nexec /usr/bin/python3 %s "$@"\n' "$REPO/tests/unit_sandbox/sandbox.py" > "$WRAPPER"
chmod +x "$WRAPPER"

# The sandbox must bite: /proc/meminfo hidden, /proc/self not, chown (@privileged) refused.
sandboxed() { GATEWAYD_WRAPPED_BIN="$1" "$WRAPPER" "${@:2}"; }
fail() { echo "unit_sandbox: FAILED: $*" >&2; exit 1; }
if sandboxed /bin/cat /proc/meminfo >/dev/null 2>&1; then fail "/proc/meminfo is visible"; fi
sandboxed /bin/cat /proc/self/status >/dev/null || fail "/proc/self is hidden"
if sandboxed /bin/chown 0 "$WRAPPER" 2>/dev/null; then fail "chown was allowed"; fi

GATEWAYD_TEST_WRAPPER="$WRAPPER" timeout "${UNIT_SANDBOX_TIMEOUT:-900}" cargo test --test ops --test sessions_process --test reload
