#!/usr/bin/env bash
# Smoke test of the release artifacts, as a new user would use them: start, wait for
# /health, one chat completion against the built-in `echo` model, stop with SIGTERM
# (exit code 0), uninstall.
#
#   bash packaging/smoke.sh deb PATH.deb          installs with dpkg -i (root), runs the
#                                                 installed unit's ExecStart= as systemd
#                                                 would, then dpkg --purge
#   bash packaging/smoke.sh tarball PATH.tar.gz   checks the .sha256, unpacks in a temp
#                                                 dir and runs ./gatewayd from there
#
# No systemd needs to run: the deb check starts /usr/bin/gatewayd itself, with the
# unit's command line, Environment= lines, a state directory and the key the package
# made, handed over as LoadCredential= would (CREDENTIALS_DIRECTORY). The port is taken
# from the OS (API_SERVER_PORT=0) so a gatewayd already on 8642 does not matter.
set -euo pipefail

MODE="${1:?usage: smoke.sh deb|tarball PATH}"
ARTIFACT="$(realpath "${2:?usage: smoke.sh deb|tarball PATH}")"
WORK="$(mktemp -d)"
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { echo "smoke($MODE): $*" >&2; }
fail() { say "FAILED: $*"; [ -f "$WORK/log" ] && sed 's/^/  log: /' "$WORK/log" >&2; exit 1; }

# start_gatewayd KEY_FILE ENV... -- COMMAND...: starts it in the background with JSON
# logs in $WORK/log, waits for "gatewayd listening" (or its death) and sets ADDR and PID.
start_gatewayd() {
    local env=()
    while [ "$1" != "--" ]; do env+=("$1"); shift; done
    shift
    env -i PATH=/usr/bin:/bin API_SERVER_PORT=0 GATEWAYD_LOG_FORMAT=json "${env[@]}" \
        "$@" 2> "$WORK/log" &
    PID=$!
    for _ in $(seq 600); do
        if grep -q '"gatewayd listening"' "$WORK/log"; then break; fi
        kill -0 "$PID" 2>/dev/null || fail "gatewayd exited before listening"
        sleep 0.1
    done
    ADDR="$(sed -n 's/.*"addresses":"\([^",]*\).*/\1/p' "$WORK/log" | head -n 1)"
    [ -n "$ADDR" ] || fail "no 'gatewayd listening' line within 60 s"
    say "listening on $ADDR (pid $PID)"
}

# exercise KEY: /health, one chat against echo with the key, none without.
exercise() {
    local key="$1" status reply
    for _ in $(seq 100); do
        status="$(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/health" || true)"
        [ "$status" = 200 ] && break
        sleep 0.1
    done
    [ "$status" = 200 ] || fail "/health answered $status"
    reply="$(curl -sf "http://$ADDR/v1/chat/completions" \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -d '{"model":"echo","messages":[{"role":"user","content":"smoke test"}]}')" \
        || fail "chat completion failed"
    case "$reply" in
        *'"content":"smoke test"'*) ;;
        *) fail "unexpected chat reply: $reply" ;;
    esac
    status="$(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/v1/models")"
    [ "$status" = 401 ] || fail "GET /v1/models without a key answered $status, not 401"
    say "/health 200, chat answered by echo, no key 401"
}

# stop: SIGTERM, then the exit code must be 0.
stop_gatewayd() {
    local code=0
    kill -TERM "$PID"
    wait "$PID" || code=$?
    PID=""
    [ "$code" = 0 ] || fail "exit code $code after SIGTERM"
    say "stopped by SIGTERM, exit code 0"
}

case "$MODE" in
deb)
    if [ "$(id -u)" != 0 ]; then
        say "skipped: installing a .deb needs root"
        exit 0
    fi
    UNIT=/usr/lib/systemd/system/gatewayd.service
    dpkg -i "$ARTIFACT" >/dev/null
    for file in /usr/bin/gatewayd "$UNIT" /usr/lib/systemd/system/gatewayd.socket \
        /etc/gatewayd/gatewayd.toml /etc/gatewayd/api_server_key; do
        [ -e "$file" ] || fail "$file not installed"
    done
    dpkg-query -W -f='${Conffiles}\n' gatewayd | grep -q '/etc/gatewayd/gatewayd.toml' \
        || fail "/etc/gatewayd/gatewayd.toml is not a conffile"
    [ "$(stat -c %a /etc/gatewayd/api_server_key)" = 600 ] \
        || fail "the key the package made is not mode 0600"
    # Where systemd runs (a GitHub runner), the package started the service: the real
    # unit, sandbox and all, must answer on 127.0.0.1:8642.
    if [ -d /run/systemd/system ]; then
        for _ in $(seq 300); do
            systemctl is-active --quiet gatewayd.service && break
            sleep 0.1
        done
        systemctl is-active --quiet gatewayd.service \
            || { systemctl status gatewayd.service >&2 || true; fail "gatewayd.service is not active"; }
        ADDR=127.0.0.1:8642
        exercise "$(cat /etc/gatewayd/api_server_key)"
        say "the systemd service answers"
    fi
    # The command line systemd would run: ExecStart= with its bare name resolved in
    # systemd's search path, ${STATE_DIRECTORY} and the Environment= lines.
    mkdir -m 0700 "$WORK/state"
    read -r -a COMMAND <<< "$(sed -n 's/^ExecStart=//p' "$UNIT" | sed "s#\${STATE_DIRECTORY}#$WORK/state#")"
    for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin; do
        if [ -x "$dir/${COMMAND[0]}" ]; then COMMAND[0]="$dir/${COMMAND[0]}"; break; fi
    done
    [ "${COMMAND[0]}" = /usr/bin/gatewayd ] \
        || fail "the unit would run ${COMMAND[0]}, not the package's /usr/bin/gatewayd"
    mapfile -t UNIT_ENV < <(sed -n 's/^Environment=//p' "$UNIT")
    # LoadCredential=api_server_key:/etc/gatewayd/api_server_key, as systemd hands it over.
    mkdir -m 0700 "$WORK/credentials"
    install -m 0400 /etc/gatewayd/api_server_key "$WORK/credentials/api_server_key"
    start_gatewayd "${UNIT_ENV[@]}" "CREDENTIALS_DIRECTORY=$WORK/credentials" -- "${COMMAND[@]}"
    grep -q '"auth":"api key required' "$WORK/log" || fail "the key was not picked up"
    exercise "$(cat /etc/gatewayd/api_server_key)"
    stop_gatewayd
    [ -e "$WORK/state/sessions.db" ] || fail "no sessions.db in the state directory"
    dpkg --purge gatewayd >/dev/null
    for file in /usr/bin/gatewayd "$UNIT" /etc/gatewayd/gatewayd.toml /etc/gatewayd/api_server_key; do
        [ ! -e "$file" ] || fail "$file left after dpkg --purge"
    done
    say "purged; nothing left"
    ;;
tarball)
    (cd "$(dirname "$ARTIFACT")" && sha256sum --quiet -c "$(basename "$ARTIFACT").sha256") \
        || fail "checksum does not match"
    tar -C "$WORK" -xzf "$ARTIFACT"
    DIR="$WORK/$(basename "$ARTIFACT" .tar.gz)"
    for file in gatewayd gatewayd.service gatewayd.socket gatewayd.example.toml README.md \
        LICENSE CHANGELOG.md examples/openai.toml; do
        [ -e "$DIR/$file" ] || fail "$file missing from the tarball"
    done
    KEY="$("$DIR/gatewayd" keygen)"
    start_gatewayd "API_SERVER_KEY=$KEY" -- \
        "$DIR/gatewayd" --config "$DIR/gatewayd.example.toml" --data-dir "$WORK/data"
    grep -q '"auth":"api key required' "$WORK/log" || fail "the key was not picked up"
    exercise "$KEY"
    stop_gatewayd
    rm -rf "$DIR"
    say "removed"
    ;;
*)
    echo "usage: smoke.sh deb|tarball PATH" >&2
    exit 2
    ;;
esac
