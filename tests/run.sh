#!/usr/bin/env bash
# The whole test suite: Rust unit + integration tests (SQLite and PostgreSQL session
# backends), the official OpenAI Python and Node SDK compatibility tests, Claude Code, and
# the README's tour (tests/tour/run.sh). This is the
# command CI runs (.ci/run) and the README's test command. Needs cargo, python3 and node/npm.
#
#   GATEWAYD_TEST_POSTGRES_URL  PostgreSQL for the session tests
#                               (default postgres://postgres@127.0.0.1:5432/test; "none" skips)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export GATEWAYD_TEST_POSTGRES_URL="${GATEWAYD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
if [ "$GATEWAYD_TEST_POSTGRES_URL" = "none" ]; then
    unset GATEWAYD_TEST_POSTGRES_URL
fi

cargo test --all-targets
bash tests/unit_sandbox/run.sh
bash tests/sdk/run.sh
bash tests/sdk-node/run.sh
bash tests/claude-code/run.sh
bash tests/tour/run.sh
