#!/usr/bin/env bash
# Exact, load-independent profiles of gatewayd (see bench/README.md, "Profiles"):
#   bench/profile.sh cpu  BIN [N]   instructions per proxied request (callgrind), plain and streamed
#   bench/profile.sh heap BIN [N] [http1|h2c]  heap held per open stream, by allocation site
#                                   (DHAT), with HTTP/1.1 (default) or h2c clients
#   bench/profile.sh rss BIN [N]    RSS idle, then RSS per open stream with h2c and with HTTP/1.1
#                                   clients (N streams each, a fresh gatewayd for each; no valgrind)
#   bench/profile.sh routing BIN [N] instructions per request: one upstream, then a pool of three
#                                   under the "ordered" and the "latency" strategy
#   bench/profile.sh budget BIN [N]  instructions per request with the Redis limits backend: a key
#                                   without a token budget, then the same key with one (needs redis-server)
#   bench/profile.sh floor BIN FLOOR [N]  instructions per plain request: gatewayd, then the hyper-floor
#                                   reference binary FLOOR (one current_thread runtime), and the difference
#   bench/profile.sh sessions BIN [N]  instructions per request: plain chat, then chat in sessions on
#                                   SQLite and (when PostgreSQL answers at $PROFILE_PG_URL) on PostgreSQL
#   bench/profile.sh responses BIN [N] instructions per request: POST /v1/responses, plain and streamed
# BIN should carry line tables for readable sites:
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release
set -euo pipefail

MODE="${1:-}" BIN="${2:-}"
[[ "$MODE" =~ ^(cpu|heap|rss|routing|budget|floor|sessions|responses)$ ]] &&
  [[ -x "$BIN" ]] || { sed -n '2,18p' "$0" >&2; exit 2; }
if [[ "$MODE" == floor ]]; then
  FLOOR_BIN="${3:-}"
  [[ -x "$FLOOR_BIN" ]] || { echo "profile.sh floor: the hyper-floor binary is missing: '$FLOOR_BIN'" >&2; exit 2; }
  FLOOR_BIN="$(realpath "$FLOOR_BIN")"
fi
BIN="$(realpath "$BIN")"
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Where the full profiles go (git-ignored, like the bench's results).
PROFILE_DIR="${PROFILE_DIR:-$BENCH_DIR/results/profiles}"
PORT_BASE="${PORT_BASE:-27400}"
UP_JSON=$PORT_BASE UP_SSE=$((PORT_BASE + 1)) UP_SLOW=$((PORT_BASE + 2)) GW=$((PORT_BASE + 10))
REDIS_PORT=$((PORT_BASE + 20))
for tool in valgrind callgrind_annotate nginx wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing" >&2; exit 1; }
done
WORK="$(mktemp -d /tmp/gatewayd-profile.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -f "$WORK/upstream.pid" ]] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export API_SERVER_KEY="pr0f1le-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
AUTH="Authorization: Bearer $API_SERVER_KEY"
printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' > "$WORK/body.json"
printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}' > "$WORK/body-stream.json"

wait_health() {
  for _ in $(seq 1 300); do curl -sf "localhost:$1/health" >/dev/null && return 0; sleep 0.2; done
  echo "profile.sh: gatewayd did not answer on :$1" >&2; exit 1
}

wait_answer() {  # any HTTP answer on :PORT (the floor proxies every path, so no /health)
  for _ in $(seq 1 300); do curl -s -o /dev/null "localhost:$1/" && return 0; sleep 0.2; done
  echo "profile.sh: nothing answered on :$1" >&2; exit 1
}

# Instructions per request: warm up, zero the counters, send N sequential requests on
# one keep-alive connection, dump, and divide.
# UPSTREAM is a port, or "config:FILE" for upstreams named in a config file.
# KEY (optional) is the client key to send; the default is $API_SERVER_KEY.
# ROUTE (default /v1/chat/completions) is the path requested; with SESSIONS=K, each of
# the N requests continues one of K fresh sessions in turn (X-Session-Id); EXTRA_ARGS are
# more gatewayd arguments.
# With FLOOR_RUN=1 the profiled program is the hyper-floor binary ($FLOOR_BIN, one
# current_thread runtime) instead of gatewayd.
cpu_run() {
  local label=$1 upstream=$2 body=$3 n=$4 key=${5:-$API_SERVER_KEY}
  local upstream_args=(--upstream "http://127.0.0.1:$upstream/v1")
  [[ "$upstream" == config:* ]] && upstream_args=(--config "${upstream#config:}")
  if [[ "${FLOOR_RUN:-0}" == 1 ]]; then
    MODE=tpc N=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/$label.cg" "$FLOOR_BIN" \
      "$GW" "http://127.0.0.1:$upstream" >"$WORK/$label.log" 2>&1 &
  else
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$label.cg" "$BIN" \
      --host 127.0.0.1 --port "$GW" "${upstream_args[@]}" \
      --data-dir "$WORK/data-$label" ${EXTRA_ARGS:-} >"$WORK/$label.log" 2>&1 &
  fi
  local vpid=$!
  PIDS+=("$vpid")
  if [[ "${FLOOR_RUN:-0}" == 1 ]]; then wait_answer "$GW"; else wait_health "$GW"; fi
  local route=${ROUTE:-/v1/chat/completions}
  WRK_BODY_FILE=$body WRK_HEADERS="Authorization: Bearer $key" wrk -t1 -c4 -d2s -s "$BENCH_DIR/post.lua" \
    "http://127.0.0.1:$GW$route" >/dev/null
  # One more request, waited for: what the first requests started lazily (a tokenizer's
  # tables, say) is built before the counters are zeroed, however slow valgrind is.
  curl -sf -m 300 -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    --data-binary "@$body" "http://127.0.0.1:$GW$route"
  : > "$WORK/sessions.txt"
  if [[ -n "${SESSIONS:-}" ]]; then
    python3 "$BENCH_DIR/bench.py" mk-sessions --url "http://127.0.0.1:$GW/v1/sessions" \
      -H "Authorization: Bearer $key" --n "$SESSIONS" > "$WORK/sessions.txt"
  fi
  callgrind_control -z "$vpid" >/dev/null 2>&1
  python3 - "$body" "$n" "$GW" "$key" "$route" "$WORK/sessions.txt" <<'PY'
import sys, http.client
body = open(sys.argv[1], 'rb').read()
n, port, key, route = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
sessions = open(sys.argv[6]).read().split()
conn = http.client.HTTPConnection('127.0.0.1', port)
for i in range(n):
    headers = {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + key}
    if sessions:
        headers['X-Session-Id'] = sessions[i % len(sessions)]
    conn.request('POST', route, body, headers)
    response = conn.getresponse()
    data = response.read()
    assert response.status == 200, (response.status, data[:200])
PY
  callgrind_control -d "$vpid" >/dev/null 2>&1
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  local total
  total=$(callgrind_annotate "$WORK/$label.cg.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  echo "$label: $((total / n)) instructions per request ($n requests)"
  LAST_PER_REQUEST=$((total / n))
  echo "top functions by own instructions (per request):"
  callgrind_annotate --threshold=100 "$WORK/$label.cg.1" 2>/dev/null \
    | awk -v n="$n" '/^ *[0-9,]+ +\( *[0-9.]+%\)/ { ir = $1; gsub(",", "", ir); if ($2 ~ /100.0%/ || $2 ~ /^\(/ && $3 ~ /100.0%/) next; $1 = ""; $2 = ""; sub(/^ +/, ""); printf "%9.0f  %s\n", ir / n, $0 }' \
    | sed -E 's#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/library/##' | head -25 | cut -c1-170 || true  # head closes the pipe early
  mkdir -p "$PROFILE_DIR"
  cp "$WORK/$label.cg.1" "$PROFILE_DIR/callgrind.$label.out"
  echo "(full profile: $PROFILE_DIR/callgrind.$label.out; callgrind_annotate --inclusive=yes it)"
}

# The python that runs the h2c stream holder: one with the `h2` package (bench/run.sh
# makes this venv; profile.sh installs nothing).
h2_python() {
  local py="${BENCH_VENV:-$HOME/.cache/gatewayd-bench/venv-h2}/bin/python"
  if [[ -x "$py" ]] && "$py" -c 'import h2' 2>/dev/null; then echo "$py"; return 0; fi
  python3 -c 'import h2' 2>/dev/null && { echo python3; return 0; }
  echo "profile.sh: h2c clients need the Python h2 package (bench/run.sh makes a venv with it)" >&2
  exit 1
}

# hold_streams PROTO N PID OUT: N streams (PROTO http1 or h2c) held through gatewayd on $GW,
# hold-streams' JSON (RSS before and while holding) in OUT.
hold_streams() {
  local proto=$1 n=$2 pid=$3 out=$4 py=python3 h2arg=()
  if [[ "$proto" == h2c ]]; then py="$(h2_python)"; h2arg=(--h2); fi
  "$py" "$BENCH_DIR/bench.py" hold-streams "${h2arg[@]}" \
    --url "http://127.0.0.1:$GW/v1/chat/completions" \
    -H "$AUTH" -H "Content-Type: application/json" --body-file "$WORK/body-stream.json" \
    --n "$n" --pid "$pid" --settle 3 --total-timeout $((120 + n / 20)) \
    --upstream-count-url "http://127.0.0.1:$UP_SLOW/open-streams" >"$out"
}

streams_config() {  # no connection limit in the way of N streams from one address
  printf '[limits]\nmax_connections = 30000\nmax_connections_per_ip = 0\n' >"$1"
}

raise_open_files() {  # two sockets per HTTP/1.1 stream
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
}

# Heap per open stream: N streams held through a slow upstream; DHAT's peak heap by site.
# The peak is taken while the streams are held, so it is the held heap (plus start-up).
heap_run() {
  local n=$1 proto=${2:-http1}
  [[ "$proto" =~ ^(http1|h2c)$ ]] || { echo "profile.sh heap: the client protocol is http1 or h2c, not '$proto'" >&2; exit 2; }
  raise_open_files
  python3 "$BENCH_DIR/bench.py" slow-upstream --port "$UP_SLOW" --hold 600 >"$WORK/slow.log" 2>&1 &
  PIDS+=("$!")
  streams_config "$WORK/heap.toml"
  valgrind --tool=dhat --dhat-out-file="$WORK/heap.dhat" "$BIN" --config "$WORK/heap.toml" \
    --host 127.0.0.1 --port "$GW" --upstream "http://127.0.0.1:$UP_SLOW/v1" \
    --data-dir "$WORK/data-heap" >"$WORK/heap.log" 2>&1 &
  local vpid=$!
  PIDS+=("$vpid")
  wait_health "$GW"
  hold_streams "$proto" "$n" "$vpid" "$WORK/hold.json"
  python3 - "$WORK/hold.json" "$proto" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} clients: {h['established']} of {h['requested']} streams held "
      f"(upstream holding {h['upstream_open_streams']}); failures: {h['failures'] or 'none'}")
PY
  kill -INT "$vpid"; wait "$vpid" 2>/dev/null || true
  python3 - "$WORK/heap.dhat" "$n" <<'PY'
import json, re, sys
data, n = json.load(open(sys.argv[1])), int(sys.argv[2])
frames = data['ftbl']
print(f"heap at its peak: {sum(p.get('gb', 0) for p in data['pps']) / 1024:.0f} KiB; sites holding >= 64 bytes per stream:")
sites = []
for point in data['pps']:
    if point.get('gb', 0) / n < 64:
        continue
    names = [frames[i] for i in point['fs']]
    names = [f for f in names if not re.search(r'library/(std|alloc|core)/|vgpreload|^\[root\]', f)]
    sites.append((point['gb'] / n, point.get('gbk', 0) / n, names[:3]))
for per_stream, blocks, names in sorted(sites, key=lambda s: -s[0])[:20]:
    print(f"{per_stream:8.0f} B/stream in {blocks:.2f} blocks")
    for name in names:
        print('          ' + re.sub(r'0x[0-9A-F]+: |/root/.cargo/registry/src/[^/]+/', '', name)[:150])
PY
  mkdir -p "$PROFILE_DIR"
  cp "$WORK/heap.dhat" "$PROFILE_DIR/dhat.heap-$proto.out"
  echo "(full profile: $PROFILE_DIR/dhat.heap-$proto.out; valgrind's dh_view.html reads it)"
}

# RSS per open stream: gatewayd runs natively (RSS is the allocator's real footprint,
# which DHAT does not see: page rounding, arenas, per-thread caches). For each client
# protocol a fresh slow upstream and gatewayd, N streams held, (RSS holding - RSS before) / N.
rss_run() {
  local n=$1 proto
  raise_open_files
  streams_config "$WORK/rss.toml"
  for proto in h2c http1; do
    python3 "$BENCH_DIR/bench.py" slow-upstream --port "$UP_SLOW" --hold 600 >"$WORK/slow-$proto.log" 2>&1 &
    local upid=$!
    PIDS+=("$upid")
    "$BIN" --config "$WORK/rss.toml" --host 127.0.0.1 --port "$GW" \
      --upstream "http://127.0.0.1:$UP_SLOW/v1" --data-dir "$WORK/data-rss-$proto" >"$WORK/rss-$proto.log" 2>&1 &
    local gpid=$!
    PIDS+=("$gpid")
    wait_health "$GW"
    sleep 1
    hold_streams "$proto" "$n" "$gpid" "$WORK/rss-$proto.json"
    kill -INT "$gpid"; wait "$gpid" 2>/dev/null || true
    kill "$upid"; wait "$upid" 2>/dev/null || true
    python3 - "$WORK/rss-$proto.json" "$proto" <<'PY'
import json, sys
h, proto = json.load(open(sys.argv[1])), sys.argv[2]
held = h["established"]
per = (h["rss_holding_kb"] - h["rss_before_kb"]) / held if held else float("nan")
print(f"{proto}: RSS {h['rss_before_kb']} kB before, {h['rss_holding_kb']} kB holding {held} of "
      f"{h['requested']} streams (upstream holding {h['upstream_open_streams']}); "
      f"{per:.1f} kB per stream; failures: {h['failures'] or 'none'}")
PY
  done
}

start_upstream() {
    sed -e "s|@DIR@|$WORK|g" "$BENCH_DIR/nginx/common.conf.in" >"$WORK/common.conf"
    mkdir -p "$WORK/tmp"
    sed -e "s|@DIR@|$WORK|g" -e "s|@WORKERS@|1|g" -e "s|@NOFILE@|4096|g" \
      -e "s|@UP_JSON@|$UP_JSON|g" -e "s|@UP_SSE@|$UP_SSE|g" \
      "$BENCH_DIR/nginx/upstream.conf.in" >"$WORK/upstream.conf"
    nginx -c "$WORK/upstream.conf" -p "$WORK" -g 'daemon on;'
}

pool_config() {  # pool_config STRATEGY FILE: three entries for the same upstream, one model
  for u in a b c; do
    printf '[[upstreams]]\nname = "pool-%s"\nbase_url = "http://127.0.0.1:%s/v1"\nmodels = ["*"]\n\n' "$u" "$UP_JSON"
  done > "$2"
  printf '[routing]\nstrategy = "%s"\n' "$1" >> "$2"
}

# budget_config FILE [TOKENS_PER_DAY]: the JSON upstream, the Redis limits backend on the
# private redis-server, and one key (BUDGET_KEY), with a daily token budget if given.
budget_config() {
  local digest
  digest=$(printf '%s' "$BUDGET_KEY" | sha256sum | cut -d' ' -f1)
  {
    printf '[limits]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:%s"\n' "$REDIS_PORT"
    printf 'redis_prefix = "gwprofile"\n\n'
    printf '[[upstreams]]\nname = "json"\nbase_url = "http://127.0.0.1:%s/v1"\nmodels = ["*"]\n\n' "$UP_JSON"
    printf '[[keys]]\nname = "profiled"\nsha256 = "%s"\n' "$digest"
    if [[ -n "${2:-}" ]]; then printf 'tokens_per_day = %s\n' "$2"; fi
  } > "$1"
}

case "$MODE" in
  cpu)
    N="${3:-3000}"
    start_upstream
    cpu_run plain "$UP_JSON" "$WORK/body.json" "$N"
    cpu_run stream "$UP_SSE" "$WORK/body-stream.json" "$N"
    ;;
  routing)
    N="${3:-3000}"
    start_upstream
    pool_config ordered "$WORK/pool-ordered.toml"
    pool_config latency "$WORK/pool-latency.toml"
    cpu_run plain "$UP_JSON" "$WORK/body.json" "$N"
    cpu_run pool-ordered "config:$WORK/pool-ordered.toml" "$WORK/body.json" "$N"
    cpu_run pool-latency "config:$WORK/pool-latency.toml" "$WORK/body.json" "$N"
    ;;
  budget)
    N="${3:-3000}"
    command -v redis-server >/dev/null || { echo "profile.sh: redis-server is missing" >&2; exit 1; }
    start_upstream
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
    PIDS+=("$!")
    BUDGET_KEY="pr0f1le-budget-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    budget_config "$WORK/no-budget.toml"
    budget_config "$WORK/budget.toml" 1000000000000
    cpu_run no-budget "config:$WORK/no-budget.toml" "$WORK/body.json" "$N" "$BUDGET_KEY"
    cpu_run budget "config:$WORK/budget.toml" "$WORK/body.json" "$N" "$BUDGET_KEY"
    ;;
  floor)
    N="${4:-3000}"
    start_upstream
    cpu_run plain "$UP_JSON" "$WORK/body.json" "$N"
    gw=$LAST_PER_REQUEST
    FLOOR_RUN=1 cpu_run floor "$UP_JSON" "$WORK/body.json" "$N"
    echo "gatewayd above the floor: $((gw - LAST_PER_REQUEST)) instructions per plain request"
    ;;
  sessions)
    N="${3:-3000}"
    start_upstream
    printf '[sessions]\nmax_sessions_per_key = 0\n' > "$WORK/sessions.toml"
    cpu_run plain "$UP_JSON" "$WORK/body.json" "$N"
    # Histories grow to N / 100 turns, as the bench's sessions do over a run.
    SESSIONS=100 EXTRA_ARGS="--config $WORK/sessions.toml" cpu_run session-sqlite "$UP_JSON" "$WORK/body.json" "$N"
    PG_URL="${PROFILE_PG_URL:-postgres://postgres@127.0.0.1:5432}"
    if PGCONNECT_TIMEOUT=3 psql "$PG_URL/postgres" -qAt -c 'select 1' >/dev/null 2>&1; then
      PG_DB="gatewayd_profile_$$"
      psql "$PG_URL/postgres" -qAt -c "create database $PG_DB" >/dev/null
      SESSIONS=100 EXTRA_ARGS="--config $WORK/sessions.toml --database-url $PG_URL/$PG_DB" \
        cpu_run session-postgres "$UP_JSON" "$WORK/body.json" "$N" || true
      psql "$PG_URL/postgres" -qAt -c "drop database $PG_DB with (force)" >/dev/null || true
    else
      echo "PostgreSQL at $PG_URL did not answer: no PostgreSQL session profile"
    fi
    ;;
  responses)
    N="${3:-3000}"
    start_upstream
    printf '%s' '{"model":"gpt-4o-mini","input":"hi","store":false}' > "$WORK/body-resp.json"
    printf '%s' '{"model":"gpt-4o-mini","input":"hi","store":false,"stream":true}' > "$WORK/body-resp-stream.json"
    ROUTE=/v1/responses cpu_run responses "$UP_JSON" "$WORK/body-resp.json" "$N"
    ROUTE=/v1/responses cpu_run responses-stream "$UP_SSE" "$WORK/body-resp-stream.json" "$N"
    ;;
  heap) heap_run "${3:-400}" "${4:-http1}" ;;
  rss) rss_run "${3:-2000}" ;;
esac
