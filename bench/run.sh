#!/usr/bin/env bash
# Side-by-side benchmark: static upstream (direct) vs nginx reverse proxy vs
# gatewayd, on one machine. See bench/README.md.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"

usage() {
  cat <<'EOF'
Usage: bench/run.sh [options]

Benchmarks gatewayd against a static OpenAI-shaped upstream (nginx, "direct")
and an nginx reverse proxy in front of the same upstream, then prints one
markdown report (also written to bench/results/latest.md).

Measures: req/s, p50 and p99 for non-streaming and SSE streaming chat
completions (wrk, interleaved rounds, median); latency added at a fixed
request rate; streaming time to first byte; gatewayd RSS idle, after load,
while holding N concurrent streams, and over a soak; chat with a session
(X-Session-Id) on SQLite and on PostgreSQL; the Responses API (plain and
streamed); routing within a pool of three upstreams ("ordered" and "latency"
strategies); CPU time per request of nginx and gatewayd. Ends with a PASS/MISS
list against the targets.

Options:
  --duration S     seconds per wrk / fixed-rate run (default 10; --quick: 3)
  --rounds N       interleaved rounds per measurement; medians are reported
                   (default 3; --quick: 1)
  --streams N      concurrent streams held for the memory test, once with
                   HTTP/2 (h2c) clients and once with HTTP/1.1 clients (the
                   latter capped by the open-file limit)
                   (default 10000; --quick: 1000; 0 skips)
  --soak S         soak length in seconds, RSS sampled every 10 s
                   (default 300; --quick: 30; 0 skips)
  --quick          short smoke run (the values above marked --quick);
                   explicit options still win
  --rate R         request rate of the fixed-rate latency test (default 1000)
  --connections C  wrk connections (default 32)
  --ttfb-count N   sequential streaming requests for TTFB (default 500;
                   --quick: 200)
  --sessions N     sessions rotated through by the session test (default 1000)
  --pg-url URL     PostgreSQL server for the session test on PostgreSQL, without
                   a database name (default: $BENCH_PG_URL, else
                   postgres://postgres@127.0.0.1:5432); the script creates a
                   private database gatewayd_bench_<pid> on it and drops it on
                   exit; "none" skips (skipped with a note when unreachable)
  --port-base P    first of the local ports used, P..P+30 (default 27100)
  --gatewayd PATH  use this gatewayd binary instead of building one
  --baseline PATH  a second gatewayd binary (e.g. the build before a change)
                   measured in the same throughput rounds, right after
                   gatewayd: plain chat, streamed chat and session chat
                   (SQLite); the report compares the two (default:
                   $BENCH_BASELINE; empty: off)
  --hyper-floor PATH  the hyper-floor reference binary (../shared/reference/hyper-floor,
                   built with cargo build --release --manifest-path
                   …/hyper-floor/Cargo.toml): measured beside nginx in the throughput
                   rounds, as a multi-thread runtime (MODE=mt) and as a
                   current_thread runtime per core (MODE=tpc); default:
                   $BENCH_HYPER_FLOOR; empty or missing: the rows are skipped
                   with a note
  --no-install     never call apt-get; fail if nginx/wrk/python3/curl missing
  --keep           keep the temporary work dir (configs, logs, raw results)
  -h, --help       show this help and exit

Environment:
  CARGO_TARGET_DIR  honoured when building (binary: $CARGO_TARGET_DIR/release/gatewayd)
  GATEWAYD_ARGS     extra arguments appended to every gatewayd command line
  RUST_LOG          passed to gatewayd (default: info, the same as a production start)
  BENCH_PG_URL      default of --pg-url
  BENCH_BASELINE    default of --baseline
  BENCH_HYPER_FLOOR default of --hyper-floor
  BENCH_VENV        venv for the h2c stream holder (default ~/.cache/gatewayd-bench/venv-h2;
                    created with pinned h2 from PyPI when missing)

Needs a Debian machine; installs nginx-light (or nginx), wrk, python3 and
curl with apt-get when missing (root or sudo), and cargo to build gatewayd.
EOF
}

# ---------------------------------------------------------------- options
DURATION="" ROUNDS="" STREAMS="" SOAK="" TTFB_COUNT=""
QUICK=0 RATE=1000 CONNS=32 SESSIONS=1000 PORT_BASE=27100 GW_BIN="" NO_INSTALL=0 KEEP=0
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
BASE_BIN="${BENCH_BASELINE:-}"
FLOOR_BIN="${BENCH_HYPER_FLOOR:-}"

need_arg() { [[ $# -ge 2 && -n "$2" ]] || { echo "run.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --duration) need_arg "$@"; DURATION="$2"; shift 2 ;;
    --rounds) need_arg "$@"; ROUNDS="$2"; shift 2 ;;
    --streams) need_arg "$@"; STREAMS="$2"; shift 2 ;;
    --soak) need_arg "$@"; SOAK="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --rate) need_arg "$@"; RATE="$2"; shift 2 ;;
    --connections) need_arg "$@"; CONNS="$2"; shift 2 ;;
    --ttfb-count) need_arg "$@"; TTFB_COUNT="$2"; shift 2 ;;
    --sessions) need_arg "$@"; SESSIONS="$2"; shift 2 ;;
    --port-base) need_arg "$@"; PORT_BASE="$2"; shift 2 ;;
    --gatewayd) need_arg "$@"; GW_BIN="$2"; shift 2 ;;
    --baseline) need_arg "$@"; BASE_BIN="$2"; shift 2 ;;
    --hyper-floor) need_arg "$@"; FLOOR_BIN="$2"; shift 2 ;;
    --pg-url) need_arg "$@"; PG_URL="$2"; shift 2 ;;
    --no-install) NO_INSTALL=1; shift ;;
    --keep) KEEP=1; shift ;;
    *) echo "run.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ $QUICK -eq 1 ]]; then
  : "${DURATION:=3}" "${ROUNDS:=1}" "${STREAMS:=1000}" "${SOAK:=30}" "${TTFB_COUNT:=200}"
else
  : "${DURATION:=10}" "${ROUNDS:=3}" "${STREAMS:=10000}" "${SOAK:=300}" "${TTFB_COUNT:=500}"
fi
for v in DURATION ROUNDS STREAMS SOAK TTFB_COUNT RATE CONNS SESSIONS PORT_BASE; do
  is_uint "${!v}" || { echo "run.sh: --$(tr '_A-Z' '-a-z' <<<"$v") must be a non-negative integer, got '${!v}'" >&2; exit 2; }
done
[[ $DURATION -ge 1 && $ROUNDS -ge 1 && $RATE -ge 1 && $CONNS -ge 1 && $SESSIONS -ge 1 && $TTFB_COUNT -ge 1 ]] ||
  { echo "run.sh: --duration, --rounds, --rate, --connections, --sessions and --ttfb-count must be >= 1" >&2; exit 2; }
(( PORT_BASE >= 1024 && PORT_BASE <= 65000 )) || { echo "run.sh: --port-base must be within 1024..65000" >&2; exit 2; }

# ---------------------------------------------------------------- helpers
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
warn() { printf '\033[33mWARNING: %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

WORK=""
PG_DB=""
PIDS=()
FAILED=1

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "$PG_DB" ]]; then
    PGCONNECT_TIMEOUT=5 psql "$PG_URL/postgres" -qAt -c "drop database if exists $PG_DB with (force)" >/dev/null 2>&1 ||
      echo "WARNING: could not drop PostgreSQL database $PG_DB" >&2
  fi
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if [[ $FAILED -ne 0 || $KEEP -eq 1 ]]; then
      echo "Work dir (configs, logs, raw results) kept: $WORK" >&2
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {  # remove one pid from PIDS after we stopped it ourselves
  local p keep=()
  for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

stop_pid() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # wait_port PORT PID NAME LOGFILE
  local port="$1" pid="$2" name="$3" logf="$4"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logf" >&2 || true; die "$name exited during start-up (log: $logf)"; }
    port_in_use "$port" && return 0
    sleep 0.1
  done
  tail -n 30 "$logf" >&2 || true
  die "$name did not listen on 127.0.0.1:$port within 30 s (log: $logf)"
}

wait_health() {  # wait_health PORT PID NAME LOGFILE
  local port="$1" pid="$2" name="$3" logf="$4" body
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logf" >&2 || true; die "$name exited during start-up (log: $logf)"; }
    if body=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null); then
      [[ "$body" == *'"ok"'* ]] || warn "$name /health answered: $body"
      return 0
    fi
    sleep 0.1
  done
  tail -n 30 "$logf" >&2 || true
  die "$name: GET /health did not answer 200 within 30 s (log: $logf)"
}

note() {  # a warning that also goes into the report
  warn "$*"
  [[ -n "${RESULTS:-}" ]] || return 0
  python3 -c 'import json,sys; print(json.dumps({"phase": "warning", "text": sys.argv[1]}))' "$*" >> "$RESULTS"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

py() { python3 "$BENCH_DIR/bench.py" "$@"; }

# ---------------------------------------------------------------- prerequisites
log "Checking prerequisites"
[[ -r /etc/debian_version ]] || warn "this does not look like Debian; continuing anyway"

SUDO=""
if [[ $(id -u) -ne 0 ]]; then command -v sudo >/dev/null && SUDO="sudo"; fi
NGINX="$(command -v nginx || true)"; [[ -z "$NGINX" && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
missing=()
[[ -n "$NGINX" ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
if [[ ${#missing[@]} -gt 0 ]]; then
  [[ $NO_INSTALL -eq 0 ]] || die "missing: ${missing[*]} (and --no-install was given)"
  command -v apt-get >/dev/null || die "missing: ${missing[*]}; apt-get not found (install them by hand)"
  [[ $(id -u) -eq 0 || -n "$SUDO" ]] || die "missing: ${missing[*]}; need root or sudo for apt-get"
  pkgs=()
  for m in "${missing[@]}"; do [[ "$m" == nginx ]] || pkgs+=("$m"); done
  log "Installing with apt-get: ${missing[*]}"
  $SUDO apt-get update -qq || die "apt-get update failed"
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    # nginx-light (Debian <= 12) is the smallest build; newer Debian ships only "nginx".
    if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2 || die "apt-get install ${pkgs[*]} failed"
  NGINX="$(command -v nginx || true)"; [[ -z "$NGINX" && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
  [[ -n "$NGINX" ]] || die "nginx still not found after install"
  command -v wrk >/dev/null || die "wrk still not found after install"
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' || die "python3 >= 3.8 needed"

# file descriptors: N HTTP/1 streams cost gatewayd two sockets each. Raise the
# hard limit where permitted (CAP_SYS_RESOURCE), then the soft one to the hard.
[[ "$(ulimit -Hn)" == unlimited ]] || (( $(ulimit -Hn) >= 65536 )) || ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
NOFILE="$(ulimit -n)"
[[ "$NOFILE" == unlimited ]] && NOFILE=1048576
info "open-file limit: $NOFILE"

ports=()
offsets=(0 1 2 10 11 20 21 22 23 26 27)
[[ -n "$BASE_BIN" ]] && offsets+=(24 25)
[[ -n "$FLOOR_BIN" && -x "$FLOOR_BIN" ]] && offsets+=(3 4 5 6)
for off in "${offsets[@]}"; do ports+=($((PORT_BASE + off))); done
for p in "${ports[@]}"; do
  port_in_use "$p" && die "port $p is already in use; pick another range with --port-base"
done
read -r EPH_LO EPH_HI < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { EPH_LO=0; EPH_HI=0; }
if (( PORT_BASE + 30 >= EPH_LO && PORT_BASE <= EPH_HI )); then
  warn "ports $PORT_BASE..$((PORT_BASE + 30)) overlap the ephemeral range $EPH_LO..$EPH_HI; connections may collide"
fi
UP_JSON=$((PORT_BASE + 0)) UP_SSE=$((PORT_BASE + 1)) UP_SLOW=$((PORT_BASE + 2))
PX_JSON=$((PORT_BASE + 10)) PX_SSE=$((PORT_BASE + 11))
GW_JSON=$((PORT_BASE + 20)) GW_SSE=$((PORT_BASE + 21)) GW_SLOW=$((PORT_BASE + 22)) GW_PG=$((PORT_BASE + 23))
GWB_JSON=$((PORT_BASE + 24)) GWB_SSE=$((PORT_BASE + 25))  # baseline gatewayd (--baseline)
GW_POOL_ORD=$((PORT_BASE + 26)) GW_POOL_LAT=$((PORT_BASE + 27))  # a pool of 3 upstreams, per strategy
# the hyper-floor reference (--hyper-floor): multi-thread and per-core runtimes, JSON and SSE upstream
HF_MT_JSON=$((PORT_BASE + 3)) HF_TPC_JSON=$((PORT_BASE + 4)) HF_MT_SSE=$((PORT_BASE + 5)) HF_TPC_SSE=$((PORT_BASE + 6))

# ---------------------------------------------------------------- gatewayd build
if [[ -z "$GW_BIN" ]]; then
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) or pass --gatewayd PATH"
  log "Building gatewayd (cargo build --release)"
  (cd "$REPO_DIR" && cargo build --release --bin gatewayd) >&2 || die "cargo build --release failed"
  tdir="${CARGO_TARGET_DIR:-target}"
  [[ "$tdir" == /* ]] || tdir="$REPO_DIR/$tdir"
  GW_BIN="$tdir/release/gatewayd"
fi
[[ -x "$GW_BIN" ]] || die "gatewayd binary not found or not executable: $GW_BIN"
GW_BIN="$(cd "$(dirname "$GW_BIN")" && pwd)/$(basename "$GW_BIN")"
if [[ -n "$BASE_BIN" ]]; then
  [[ -f "$BASE_BIN" && -x "$BASE_BIN" ]] || die "baseline gatewayd binary not found or not executable: $BASE_BIN"
  BASE_BIN="$(cd "$(dirname "$BASE_BIN")" && pwd)/$(basename "$BASE_BIN")"
  info "baseline gatewayd: $BASE_BIN"
fi

KEY="$("$GW_BIN" keygen 2>/dev/null | grep -oE 'gwd_[^[:space:]]+' | head -n 1 || true)"
[[ -n "$KEY" ]] || die "'$GW_BIN keygen' printed no gwd_... key"

# ---------------------------------------------------------------- work dir
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gatewayd-bench.XXXXXX")"
mkdir -p "$WORK"/tmp/{client_body,proxy,fastcgi,uwsgi,scgi} "$WORK/data" "$WORK/raw"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
info "work dir: $WORK"

WORKERS="$(nproc 2>/dev/null || echo 2)"
render() {
  sed -e "s|@DIR@|$WORK|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@NOFILE@|$NOFILE|g" \
      -e "s|@UP_JSON@|$UP_JSON|g" -e "s|@UP_SSE@|$UP_SSE|g" \
      -e "s|@PX_JSON@|$PX_JSON|g" -e "s|@PX_SSE@|$PX_SSE|g" "$1" > "$2"
}
render "$BENCH_DIR/nginx/common.conf.in" "$WORK/common.conf"
render "$BENCH_DIR/nginx/upstream.conf.in" "$WORK/upstream.conf"
render "$BENCH_DIR/nginx/proxy.conf.in" "$WORK/proxy.conf"

printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' > "$WORK/body.json"
printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}' > "$WORK/body-stream.json"
printf '%s' '{"model":"gpt-4o-mini","input":"hi","store":false}' > "$WORK/body-resp.json"
printf '%s' '{"model":"gpt-4o-mini","input":"hi","store":false,"stream":true}' > "$WORK/body-resp-stream.json"
AUTH="Authorization: Bearer $KEY"

# gatewayd's defaults, except: no cap on sessions per key (every round and soak
# segment creates --sessions fresh ones), and a 16 MiB history cache instead of 64 MiB:
# it holds every history the session rounds use (1,000 sessions of about 20 turns take
# about 4 MiB) and is full before the soak's warm-up ends, so the soak measures memory
# once the cache is full, as operators see it after the first minutes ...
cat > "$WORK/gatewayd.toml" <<'EOF'
[sessions]
max_sessions_per_key = 0
cache_bytes = 16777216
EOF
# ... and, for the stream-holding instance, no per-IP connection cap (every
# client is 127.0.0.1) and room for 2 x 10,000 connections.
cat > "$WORK/gatewayd-streams.toml" <<'EOF'
[limits]
max_connections = 30000
max_connections_per_ip = 0

[sessions]
max_sessions_per_key = 0
EOF

BUSY="$(py cpu-busy --seconds 2)"
if (( BUSY > 20 )); then
  note "the CPUs were ${BUSY}% busy before the benchmark started: other work on this machine distorts the numbers"
else
  info "CPUs ${BUSY}% busy before start"
fi

# ---------------------------------------------------------------- start servers
LAST_PID=""
start_nginx() {  # start_nginx NAME CONF PORT...; sets LAST_PID
  local name="$1" conf="$2"; shift 2
  "$NGINX" -t -q -p "$WORK" -e "$WORK/$name-error.log" -c "$conf" 2>"$WORK/$name-test.log" ||
    { cat "$WORK/$name-test.log" >&2; die "nginx rejected $conf"; }
  "$NGINX" -p "$WORK" -e "$WORK/$name-error.log" -c "$conf" -g 'daemon off;' >"$WORK/$name.out" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local p
  for p in "$@"; do wait_port "$p" "$pid" "nginx ($name)" "$WORK/$name-error.log"; done
  LAST_PID="$pid"
}

start_gatewayd() {  # start_gatewayd NAME PORT UPSTREAM_PORT [CONFIG [EXTRA ARGS...]]; sets LAST_PID
  start_gatewayd_bin "$GW_BIN" "$@"
}

start_gatewayd_bin() {  # start_gatewayd_bin BINARY NAME PORT UPSTREAM_PORT [CONFIG [EXTRA ARGS...]]; sets LAST_PID
  local bin="$1"; shift
  local name="$1" port="$2" up="$3" conf="${4:-$WORK/gatewayd.toml}"
  shift $(( $# < 4 ? $# : 4 ))
  mkdir -p "$WORK/data/$name"
  local upstream_arg=(--upstream "http://127.0.0.1:$up/v1")
  [[ "$up" == - ]] && upstream_arg=()  # the config file names the upstreams
  # shellcheck disable=SC2086  # GATEWAYD_ARGS is split on purpose
  API_SERVER_KEY="$KEY" RUST_LOG="${RUST_LOG:-info}" \
    "$bin" --config "$conf" --host 127.0.0.1 --port "$port" "${upstream_arg[@]}" \
    --data-dir "$WORK/data/$name" "$@" ${GATEWAYD_ARGS:-} >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_health "$port" "$pid" "gatewayd ($name)" "$WORK/$name.log"
  LAST_PID="$pid"
}

log "Starting static upstream (nginx) on :$UP_JSON (JSON) and :$UP_SSE (SSE)"
start_nginx upstream "$WORK/upstream.conf" "$UP_JSON" "$UP_SSE"; UP_PID="$LAST_PID"
log "Starting nginx reverse proxy (a second nginx instance) on :$PX_JSON -> :$UP_JSON and :$PX_SSE -> :$UP_SSE"
start_nginx proxy "$WORK/proxy.conf" "$PX_JSON" "$PX_SSE"; PX_PID="$LAST_PID"
log "Starting gatewayd on :$GW_JSON -> :$UP_JSON and :$GW_SSE -> :$UP_SSE"
start_gatewayd gw-json "$GW_JSON" "$UP_JSON"; GWJ_PID="$LAST_PID"
start_gatewayd gw-sse "$GW_SSE" "$UP_SSE"; GWS_PID="$LAST_PID"
GWBJ_PID="" GWBS_PID=""
if [[ -n "$BASE_BIN" ]]; then
  log "Starting the baseline gatewayd ($BASE_BIN) on :$GWB_JSON -> :$UP_JSON and :$GWB_SSE -> :$UP_SSE"
  # An older build may not know `cache_bytes`: the baseline gets the rest of the config.
  grep -v '^cache_bytes' "$WORK/gatewayd.toml" > "$WORK/gatewayd-baseline.toml"
  start_gatewayd_bin "$BASE_BIN" gw-base-json "$GWB_JSON" "$UP_JSON" "$WORK/gatewayd-baseline.toml"; GWBJ_PID="$LAST_PID"
  start_gatewayd_bin "$BASE_BIN" gw-base-sse "$GWB_SSE" "$UP_SSE" "$WORK/gatewayd-baseline.toml"; GWBS_PID="$LAST_PID"
fi

# The hyper-floor reference: a 70-line hyper proxy with no auth, limits, metrics or logs,
# on the same static upstream; what the HTTP stack alone costs, beside nginx.
HFMJ_PID="" HFTJ_PID="" HFMS_PID="" HFTS_PID=""
start_floor() {  # start_floor NAME MODE PORT UPSTREAM_PORT; sets LAST_PID
  MODE="$2" N="$WORKERS" "$FLOOR_BIN" "$3" "http://127.0.0.1:$4" >"$WORK/$1.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$3" "$pid" "hyper-floor ($1)" "$WORK/$1.log"
  LAST_PID="$pid"
}
if [[ -z "$FLOOR_BIN" ]]; then
  note "hyper-floor rows skipped: no --hyper-floor binary given (build ../shared/reference/hyper-floor with cargo build --release --manifest-path …/hyper-floor/Cargo.toml and pass its path)"
elif [[ ! -x "$FLOOR_BIN" ]]; then
  note "hyper-floor rows skipped: $FLOOR_BIN is not an executable file"
  FLOOR_BIN=""
else
  log "Starting hyper-floor ($FLOOR_BIN): MODE=mt on :$HF_MT_JSON/:$HF_MT_SSE, MODE=tpc N=$WORKERS on :$HF_TPC_JSON/:$HF_TPC_SSE"
  start_floor floor-mt-json mt "$HF_MT_JSON" "$UP_JSON"; HFMJ_PID="$LAST_PID"
  start_floor floor-tpc-json tpc "$HF_TPC_JSON" "$UP_JSON"; HFTJ_PID="$LAST_PID"
  start_floor floor-mt-sse mt "$HF_MT_SSE" "$UP_SSE"; HFMS_PID="$LAST_PID"
  start_floor floor-tpc-sse tpc "$HF_TPC_SSE" "$UP_SSE"; HFTS_PID="$LAST_PID"
fi

# Routing cost: three upstream entries (all the same static upstream) serving one
# model, picked by the "ordered" and by the "latency" strategy. The difference from
# plain gatewayd (one upstream) is what choosing within a pool costs per request.
pool_config() {  # pool_config STRATEGY FILE
  {
    for u in a b c; do
      printf '[[upstreams]]\nname = "pool-%s"\nbase_url = "http://127.0.0.1:%s/v1"\nmodels = ["*"]\n\n' "$u" "$UP_JSON"
    done
    printf '[routing]\nstrategy = "%s"\n\n[sessions]\nmax_sessions_per_key = 0\n' "$1"
  } > "$2"
}
pool_config ordered "$WORK/gatewayd-pool-ordered.toml"
pool_config latency "$WORK/gatewayd-pool-latency.toml"
log "Starting gatewayd with a pool of 3 upstreams: ordered on :$GW_POOL_ORD, latency on :$GW_POOL_LAT (all -> :$UP_JSON)"
start_gatewayd gw-pool-ordered "$GW_POOL_ORD" - "$WORK/gatewayd-pool-ordered.toml"; GWPO_PID="$LAST_PID"
start_gatewayd gw-pool-latency "$GW_POOL_LAT" - "$WORK/gatewayd-pool-latency.toml"; GWPL_PID="$LAST_PID"

# gatewayd with its sessions on PostgreSQL: a private database, dropped on exit
GWPG_PID=""
PG_URL="${PG_URL%/}"
if [[ "$PG_URL" == none ]]; then
  note "PostgreSQL session test skipped (--pg-url none)"
elif ! command -v psql >/dev/null; then
  note "PostgreSQL session test skipped: psql not found"
elif ! PGCONNECT_TIMEOUT=3 psql "$PG_URL/postgres" -qAt -c 'select 1' >/dev/null 2>"$WORK/psql.err"; then
  note "PostgreSQL session test skipped: no PostgreSQL reachable at $PG_URL ($(head -n 1 "$WORK/psql.err"))"
else
  PG_DB="gatewayd_bench_$$"
  PGCONNECT_TIMEOUT=5 psql "$PG_URL/postgres" -qAt -c "create database $PG_DB" >/dev/null 2>"$WORK/psql.err" ||
    { PG_DB=""; die "could not create database on $PG_URL: $(cat "$WORK/psql.err")"; }
  log "Starting gatewayd with sessions on PostgreSQL (database $PG_DB) on :$GW_PG -> :$UP_JSON"
  start_gatewayd gw-pg "$GW_PG" "$UP_JSON" "$WORK/gatewayd.toml" --database-url "$PG_URL/$PG_DB"; GWPG_PID="$LAST_PID"
fi

sleep 1
IDLE_KB="$(rss_kb "$GWJ_PID")"
echo "{\"phase\":\"rss\",\"what\":\"idle\",\"kb\":${IDLE_KB:-null}}" >> "$RESULTS"
echo "{\"phase\":\"rss\",\"what\":\"stream_idle\",\"kb\":$(rss_kb "$GWS_PID" || echo null)}" >> "$RESULTS"
info "gatewayd idle RSS: ${IDLE_KB:-?} kB"

declare -A URL_JSON=(
  [direct]="http://127.0.0.1:$UP_JSON/v1/chat/completions"
  [nginx]="http://127.0.0.1:$PX_JSON/v1/chat/completions"
  [gatewayd]="http://127.0.0.1:$GW_JSON/v1/chat/completions"
  [baseline]="http://127.0.0.1:$GWB_JSON/v1/chat/completions"
  [floor-mt]="http://127.0.0.1:$HF_MT_JSON/v1/chat/completions"
  [floor-tpc]="http://127.0.0.1:$HF_TPC_JSON/v1/chat/completions"
)
declare -A URL_SSE=(
  [direct]="http://127.0.0.1:$UP_SSE/v1/chat/completions"
  [nginx]="http://127.0.0.1:$PX_SSE/v1/chat/completions"
  [gatewayd]="http://127.0.0.1:$GW_SSE/v1/chat/completions"
  [baseline]="http://127.0.0.1:$GWB_SSE/v1/chat/completions"
  [floor-mt]="http://127.0.0.1:$HF_MT_SSE/v1/chat/completions"
  [floor-tpc]="http://127.0.0.1:$HF_TPC_SSE/v1/chat/completions"
)
# targets of the throughput phase: the hyper floor right after nginx, the baseline
# right after gatewayd
TPUT_TARGETS=(direct nginx)
[[ -n "$FLOOR_BIN" ]] && TPUT_TARGETS+=(floor-mt floor-tpc)
TPUT_TARGETS+=(gatewayd)
[[ -n "$BASE_BIN" ]] && TPUT_TARGETS+=(baseline)

# ---------------------------------------------------------------- sanity checks
check_target() {  # check_target NAME URL BODYFILE EXPECT_SUBSTRING [extra curl args...]
  local name="$1" url="$2" bodyf="$3" expect="$4"; shift 4
  local out code
  out="$(curl -sS --max-time 10 -o "$WORK/check.body" -w '%{http_code} %{content_type}' \
          -H 'Content-Type: application/json' -H "$AUTH" "$@" --data-binary "@$bodyf" "$url" 2>&1)" ||
    die "$name: request to $url failed: $out"
  code="${out%% *}"
  [[ "$code" == 200 ]] || die "$name: POST $url answered HTTP $code: $(head -c 400 "$WORK/check.body")"
  grep -q -- "$expect" "$WORK/check.body" ||
    die "$name: POST $url: body lacks '$expect': $(head -c 400 "$WORK/check.body")"
  info "ok  $name  ($out)"
}
log "Checking every target answers"
CHECK_TARGETS=(direct nginx gatewayd)
[[ -n "$FLOOR_BIN" ]] && CHECK_TARGETS+=(floor-mt floor-tpc)
for t in "${CHECK_TARGETS[@]}"; do
  check_target "$t non-stream" "${URL_JSON[$t]}" "$WORK/body.json" '"chat.completion"'
  check_target "$t stream" "${URL_SSE[$t]}" "$WORK/body-stream.json" 'data: \[DONE\]'
done
URL_POOL_ORD="http://127.0.0.1:$GW_POOL_ORD/v1/chat/completions"
URL_POOL_LAT="http://127.0.0.1:$GW_POOL_LAT/v1/chat/completions"
check_target "gatewayd pool (ordered)" "$URL_POOL_ORD" "$WORK/body.json" '"chat.completion"'
check_target "gatewayd pool (latency)" "$URL_POOL_LAT" "$WORK/body.json" '"chat.completion"'
RESP_JSON="http://127.0.0.1:$GW_JSON/v1/responses"
RESP_SSE="http://127.0.0.1:$GW_SSE/v1/responses"
check_target "gatewayd responses" "$RESP_JSON" "$WORK/body-resp.json" '"status":"completed"'
check_target "gatewayd responses stream" "$RESP_SSE" "$WORK/body-resp-stream.json" 'event: response.completed'
# gatewayd must reject an unauthenticated request, or the numbers mean nothing
code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
        --data-binary "@$WORK/body.json" "${URL_JSON[gatewayd]}" || true)"
[[ "$code" == 401 || "$code" == 403 ]] || die "gatewayd answered HTTP $code without a key; auth is not on"
info "ok  gatewayd rejects a request without a key (HTTP $code)"
if [[ -n "$BASE_BIN" ]]; then
  check_target "baseline non-stream" "${URL_JSON[baseline]}" "$WORK/body.json" '"chat.completion"'
  check_target "baseline stream" "${URL_SSE[baseline]}" "$WORK/body-stream.json" 'data: \[DONE\]'
  code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
          --data-binary "@$WORK/body.json" "${URL_JSON[baseline]}" || true)"
  [[ "$code" == 401 || "$code" == 403 ]] || die "the baseline gatewayd answered HTTP $code without a key; auth is not on"
  info "ok  baseline rejects a request without a key (HTTP $code)"
fi

mk_sessions() {  # mk_sessions N FILE [PORT]: fresh sessions, one id per line
  local port="${3:-$GW_JSON}"
  py mk-sessions --url "http://127.0.0.1:$port/v1/sessions" -H "$AUTH" --n "$1" > "$2" ||
    die "could not create sessions (POST /v1/sessions on :$port)"
}
HAVE_SESSIONS=1
code="$(curl -sS -o "$WORK/check.body" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
        -H "$AUTH" --data-binary '{}' "http://127.0.0.1:$GW_JSON/v1/sessions" || true)"
if [[ "$code" == 404 || "$code" == 405 || "$code" == 501 ]]; then
  HAVE_SESSIONS=0
  note "POST /v1/sessions answered HTTP $code: this gatewayd has no sessions; session test skipped, soak without sessions"
else
  mk_sessions 1 "$WORK/sessions-check.txt"
  check_target "gatewayd session" "${URL_JSON[gatewayd]}" "$WORK/body.json" '"chat.completion"' \
    -H "X-Session-Id: $(head -n 1 "$WORK/sessions-check.txt")"
fi
BASE_SESSIONS=0
if [[ -n "$BASE_BIN" && $HAVE_SESSIONS -eq 1 ]]; then
  code="$(curl -sS -o "$WORK/check.body" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
          -H "$AUTH" --data-binary '{}' "http://127.0.0.1:$GWB_JSON/v1/sessions" || true)"
  if [[ "$code" == 404 || "$code" == 405 || "$code" == 501 ]]; then
    note "POST /v1/sessions on the baseline gatewayd answered HTTP $code: it has no sessions; its session chat is not measured"
  else
    BASE_SESSIONS=1
    mk_sessions 1 "$WORK/sessions-check-base.txt" "$GWB_JSON"
    check_target "baseline session" "${URL_JSON[baseline]}" "$WORK/body.json" '"chat.completion"' \
      -H "X-Session-Id: $(head -n 1 "$WORK/sessions-check-base.txt")"
  fi
fi
URL_PG="http://127.0.0.1:$GW_PG/v1/chat/completions"
if [[ -n "$GWPG_PID" && $HAVE_SESSIONS -eq 1 ]]; then
  mk_sessions 1 "$WORK/sessions-check-pg.txt" "$GW_PG"
  check_target "gatewayd session (PostgreSQL)" "$URL_PG" "$WORK/body.json" '"chat.completion"' \
    -H "X-Session-Id: $(head -n 1 "$WORK/sessions-check-pg.txt")"
fi

# ---------------------------------------------------------------- throughput (wrk)
run_wrk() {  # run_wrk KIND TARGET ROUND URL BODYFILE SECONDS SERVER_PID [SESSIONS_FILE]
  # SERVER_PID: the process (with its children: nginx workers) whose CPU time
  # (utime + stime from /proc/PID/stat) the run is charged with
  local kind="$1" target="$2" round="$3" url="$4" bodyf="$5" secs="$6" spid="$7" sessf="${8:-}"
  local out="$WORK/raw/wrk-$kind-$target-$round.txt"
  local cpu0 cpu1
  cpu0="$(py cpu-seconds "$spid")"
  WRK_BODY_FILE="$bodyf" WRK_HEADERS="$AUTH" WRK_SESSIONS_FILE="$sessf" \
    wrk -t1 -c"$CONNS" -d"${secs}s" --latency --timeout 10s -s "$BENCH_DIR/post.lua" "$url" > "$out" 2>&1 ||
    { cat "$out" >&2; die "wrk failed against $url"; }
  cpu1="$(py cpu-seconds "$spid")"
  local json
  json="$(py parse-wrk "$out")"
  [[ "$round" == warmup ]] && return 0
  local extra=("cpu_s=$(python3 -c "print(round($cpu1 - $cpu0, 2))")")
  [[ -n "$sessf" ]] && extra+=("sessions=$(wc -l < "$sessf")")
  py tag phase=tput "kind=$kind" "target=$target" "round=$round" "${extra[@]}" <<<"$json" >> "$RESULTS"
  py show tput "$kind $target round $round" "$json"
}

WARM=$(( DURATION < 3 ? 1 : 2 ))
log "Warm-up (${WARM}s per target)"
declare -A PID_JSON=([direct]="$UP_PID" [nginx]="$PX_PID" [gatewayd]="$GWJ_PID" [baseline]="$GWBJ_PID"
  [floor-mt]="$HFMJ_PID" [floor-tpc]="$HFTJ_PID")
declare -A PID_SSE=([direct]="$UP_PID" [nginx]="$PX_PID" [gatewayd]="$GWS_PID" [baseline]="$GWBS_PID"
  [floor-mt]="$HFMS_PID" [floor-tpc]="$HFTS_PID")
for t in "${TPUT_TARGETS[@]}"; do
  run_wrk nonstream "$t" warmup "${URL_JSON[$t]}" "$WORK/body.json" "$WARM" "${PID_JSON[$t]}"
  run_wrk stream "$t" warmup "${URL_SSE[$t]}" "$WORK/body-stream.json" "$WARM" "${PID_SSE[$t]}"
done
run_wrk nonstream gatewayd-responses warmup "$RESP_JSON" "$WORK/body-resp.json" "$WARM" "$GWJ_PID"
run_wrk nonstream gatewayd-pool-ordered warmup "$URL_POOL_ORD" "$WORK/body.json" "$WARM" "$GWPO_PID"
run_wrk nonstream gatewayd-pool-latency warmup "$URL_POOL_LAT" "$WORK/body.json" "$WARM" "$GWPL_PID"
run_wrk stream gatewayd-responses warmup "$RESP_SSE" "$WORK/body-resp-stream.json" "$WARM" "$GWS_PID"
if [[ -n "$GWPG_PID" ]]; then run_wrk nonstream gatewayd-pg warmup "$URL_PG" "$WORK/body.json" "$WARM" "$GWPG_PID"; fi

log "Throughput: wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS interleaved round(s)"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TPUT_TARGETS[@]}"; do
    run_wrk nonstream "$t" "$r" "${URL_JSON[$t]}" "$WORK/body.json" "$DURATION" "${PID_JSON[$t]}"
  done
  run_wrk nonstream gatewayd-responses "$r" "$RESP_JSON" "$WORK/body-resp.json" "$DURATION" "$GWJ_PID"
  run_wrk nonstream gatewayd-pool-ordered "$r" "$URL_POOL_ORD" "$WORK/body.json" "$DURATION" "$GWPO_PID"
  run_wrk nonstream gatewayd-pool-latency "$r" "$URL_POOL_LAT" "$WORK/body.json" "$DURATION" "$GWPL_PID"
  if [[ $HAVE_SESSIONS -eq 1 ]]; then
    # a fresh pool per round, so conversations are equally long in every round
    mk_sessions "$SESSIONS" "$WORK/sessions-$r.txt"
    run_wrk nonstream gatewayd-session "$r" "${URL_JSON[gatewayd]}" "$WORK/body.json" "$DURATION" "$GWJ_PID" "$WORK/sessions-$r.txt"
    if [[ $BASE_SESSIONS -eq 1 ]]; then
      mk_sessions "$SESSIONS" "$WORK/sessions-base-$r.txt" "$GWB_JSON"
      run_wrk nonstream baseline-session "$r" "${URL_JSON[baseline]}" "$WORK/body.json" "$DURATION" "$GWBJ_PID" "$WORK/sessions-base-$r.txt"
    fi
    if [[ -n "$GWPG_PID" ]]; then
      mk_sessions "$SESSIONS" "$WORK/sessions-pg-$r.txt" "$GW_PG"
      run_wrk nonstream gatewayd-pg-session "$r" "$URL_PG" "$WORK/body.json" "$DURATION" "$GWPG_PID" "$WORK/sessions-pg-$r.txt"
    fi
  fi
  for t in "${TPUT_TARGETS[@]}"; do
    run_wrk stream "$t" "$r" "${URL_SSE[$t]}" "$WORK/body-stream.json" "$DURATION" "${PID_SSE[$t]}"
  done
  run_wrk stream gatewayd-responses "$r" "$RESP_SSE" "$WORK/body-resp-stream.json" "$DURATION" "$GWS_PID"
done

# ---------------------------------------------------------------- fixed rate
log "Latency at a fixed $RATE req/s (${DURATION}s per run, $ROUNDS round(s))"
for r in $(seq 1 "$ROUNDS"); do
  for t in direct nginx gatewayd; do
    json="$(py fixed-rate --url "${URL_JSON[$t]}" -H "$AUTH" --body-file "$WORK/body.json" \
              --rate "$RATE" --conns 16 --duration "$DURATION" --warmup 1)" ||
      die "fixed-rate driver failed against ${URL_JSON[$t]}"
    py tag phase=fixed "target=$t" "round=$r" <<<"$json" >> "$RESULTS"
    py show fixed "$t round $r" "$json"
  done
done

# ---------------------------------------------------------------- TTFB
log "Streaming time to first byte ($TTFB_COUNT sequential requests per run, $ROUNDS round(s))"
for r in $(seq 1 "$ROUNDS"); do
  for t in direct nginx gatewayd; do
    json="$(py ttfb --url "${URL_SSE[$t]}" -H "$AUTH" --body-file "$WORK/body-stream.json" --count "$TTFB_COUNT")" ||
      die "TTFB client failed against ${URL_SSE[$t]}"
    py tag phase=ttfb "target=$t" "round=$r" <<<"$json" >> "$RESULTS"
    py show ttfb "$t round $r" "$json"
  done
done

AFTER_KB="$(rss_kb "$GWJ_PID")"
echo "{\"phase\":\"rss\",\"what\":\"after_load\",\"kb\":${AFTER_KB:-null}}" >> "$RESULTS"
echo "{\"phase\":\"rss\",\"what\":\"stream_after_load\",\"kb\":$(rss_kb "$GWS_PID" || echo null)}" >> "$RESULTS"
info "gatewayd RSS after load: ${AFTER_KB:-?} kB"

# ---------------------------------------------------------------- concurrent streams
H2_PY=""
ensure_h2() {  # sets H2_PY to a python with the pinned h2 package, or leaves it empty
  local venv="${BENCH_VENV:-$HOME/.cache/gatewayd-bench/venv-h2}"
  if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import h2' 2>/dev/null; then
    H2_PY="$venv/bin/python"; return 0
  fi
  log "Creating a venv with h2 for the h2c stream holder: $venv"
  mkdir -p "$(dirname "$venv")"
  if python3 -m venv "$venv" >&2 &&
     "$venv/bin/pip" install -q 'h2==4.1.0' 'hpack==4.2.0' 'hyperframe==6.1.0' >&2 &&
     "$venv/bin/python" -c 'import h2' 2>/dev/null; then
    H2_PY="$venv/bin/python"
  else
    note "could not install the Python h2 package into $venv: the h2c stream test is skipped"
  fi
}

hold_streams() {  # hold_streams PROTO N: a fresh slow upstream and gatewayd, N streams held through it
  local proto="$1" n="$2" pyexe=python3 h2arg=()
  if [[ "$proto" == h2c ]]; then pyexe="$H2_PY"; h2arg=(--h2); fi
  log "Holding $n concurrent streams ($proto from the client, HTTP/1.1 to the slow upstream on :$UP_SLOW) through a fresh gatewayd"
  python3 "$BENCH_DIR/bench.py" slow-upstream --port "$UP_SLOW" --hold 900 > "$WORK/slow-upstream-$proto.log" 2>&1 &
  local slow_pid=$!
  PIDS+=("$slow_pid")
  wait_port "$UP_SLOW" "$slow_pid" "slow upstream" "$WORK/slow-upstream-$proto.log"
  start_gatewayd "gw-slow-$proto" "$GW_SLOW" "$UP_SLOW" "$WORK/gatewayd-streams.toml"
  local gw_pid="$LAST_PID"
  sleep 1
  local json
  json="$("$pyexe" "$BENCH_DIR/bench.py" hold-streams "${h2arg[@]}" \
            --url "http://127.0.0.1:$GW_SLOW/v1/chat/completions" -H "$AUTH" \
            --body-file "$WORK/body-stream.json" --n "$n" --pid "$gw_pid" \
            --metrics-url "http://127.0.0.1:$GW_SLOW/metrics" \
            --upstream-count-url "http://127.0.0.1:$UP_SLOW/open-streams" \
            --total-timeout $(( 60 + n / 50 )))" || die "stream holder ($proto) failed"
  py tag phase=streams <<<"$json" >> "$RESULTS"
  py show streams "gatewayd $proto" "$json"
  stop_pid "$gw_pid"
  stop_pid "$slow_pid"
}

if [[ $STREAMS -gt 0 ]]; then
  # HTTP/2 clients: gatewayd holds one upstream socket per stream plus a few
  # client connections, so the full count fits the open-file limit.
  ensure_h2
  if [[ -n "$H2_PY" ]]; then
    if (( STREAMS + 256 > NOFILE )); then
      note "open-file limit $NOFILE is below $STREAMS upstream sockets + 256: the h2c stream test may fail"
    fi
    hold_streams h2c "$STREAMS"
  fi
  # HTTP/1.1 clients: two sockets per stream in gatewayd; as many as the limit allows.
  N="$STREAMS"
  MAXN=$(( (NOFILE - 100) / 2 ))
  if (( N > MAXN )); then
    note "open-file limit $NOFILE allows gatewayd about $MAXN HTTP/1.1 streams (2 sockets each): held $MAXN HTTP/1.1 streams instead of $STREAMS"
    N="$MAXN"
  fi
  hold_streams http1 "$N"
else
  info "concurrent-stream test skipped (--streams 0)"
fi

# ---------------------------------------------------------------- soak
if [[ $SOAK -gt 0 ]]; then
  INTERVAL=10
  (( SOAK < 100 )) && INTERVAL=$(( SOAK / 10 > 0 ? SOAK / 10 : 1 ))
  SEGMENTS=$(( SOAK / INTERVAL ))
  # The load is a run of back-to-back wrk segments of INTERVAL seconds, each
  # half plain chat and half chat in a fresh pool of sessions, so conversation
  # length (history spliced into each request) stays bounded over the soak.
  # RSS is read near the end of each segment, while the load is on.
  log "Soak: $SEGMENTS x ${INTERVAL}s of wrk load (plain + session chat) on gatewayd, RSS every ${INTERVAL}s"
  samples=()
  soak_rps=()
  for (( i = 1; i <= SEGMENTS; i++ )); do
    kill -0 "$GWJ_PID" 2>/dev/null || die "gatewayd exited during the soak (log: $WORK/gw-json.log)"
    if [[ $HAVE_SESSIONS -eq 1 ]]; then mk_sessions "$SESSIONS" "$WORK/sessions-soak.txt"; else : > "$WORK/sessions-soak.txt"; fi
    out="$WORK/raw/wrk-soak-$i.txt"
    WRK_BODY_FILE="$WORK/body.json" WRK_HEADERS="$AUTH" WRK_SESSIONS_FILE="$WORK/sessions-soak.txt" WRK_MIX_PLAIN=1 \
      wrk -t1 -c"$CONNS" -d"${INTERVAL}s" --latency --timeout 10s -s "$BENCH_DIR/post.lua" "${URL_JSON[gatewayd]}" \
      > "$out" 2>&1 &
    SOAK_WRK=$!
    PIDS+=("$SOAK_WRK")
    sleep "$(python3 -c "print(max(0.5, $INTERVAL - 0.5))")"
    s="$(rss_kb "$GWJ_PID")"
    [[ -n "$s" ]] || die "gatewayd exited during the soak (log: $WORK/gw-json.log)"
    wait "$SOAK_WRK" || { cat "$out" >&2; die "soak wrk failed"; }
    forget_pid "$SOAK_WRK"
    json="$(py parse-wrk "$out")"
    python3 -c 'import json,sys; j=json.loads(sys.argv[1]); sys.exit(1 if (j["non2xx"] or 0)+(j["socket_errors"] or 0) else 0)' "$json" ||
      warn "soak: wrk saw non-2xx responses or socket errors (see $out)"
    samples+=("$s")
    soak_rps+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rps"] or 0)' "$json")")
    info "t=$(( i * INTERVAL ))s RSS ${s} kB  ($(printf '%.0f' "${soak_rps[-1]}") req/s)"
  done
  echo "{\"phase\":\"soak\",\"seconds\":$SOAK,\"interval\":$INTERVAL,\"samples_kb\":[$(IFS=,; echo "${samples[*]}")],\"segment_rps\":[$(IFS=,; echo "${soak_rps[*]}")]}" >> "$RESULTS"
else
  info "soak skipped (--soak 0)"
fi

# ---------------------------------------------------------------- report
PG_NOTE="not run"
[[ -n "$GWPG_PID" ]] && PG_NOTE="$PG_URL (database $PG_DB, $(psql "$PG_URL/postgres" -qAt -c 'show server_version' 2>/dev/null || echo '?'))"
# shellcheck disable=SC1091
OS_NAME="$( (. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}") || echo unknown)"
M_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')" \
M_OS="$OS_NAME" \
M_GW="$("$GW_BIN" --version 2>/dev/null | head -n 1 || true) ($GW_BIN; bench checkout at git $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo none))" \
M_BASE="$([[ -z "$BASE_BIN" ]] || echo "$("$BASE_BIN" --version 2>/dev/null | head -n 1 || true) ($BASE_BIN)")" \
M_FLOOR="$([[ -z "$FLOOR_BIN" ]] || echo "$FLOOR_BIN (MODE=mt: one multi-thread runtime; MODE=tpc: $WORKERS current_thread runtimes with SO_REUSEPORT)")" \
M_NGINX="$("$NGINX" -v 2>&1 | sed 's/.*: //')" \
M_WRK="$(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2}')" \
M_SETTINGS="duration ${DURATION}s, rounds ${ROUNDS}, wrk -t1 -c${CONNS}, fixed rate ${RATE} req/s over 16 connections, TTFB ${TTFB_COUNT} requests x ${ROUNDS}, streams ${STREAMS}, soak ${SOAK}s, sessions ${SESSIONS}, open-file limit ${NOFILE}, PostgreSQL sessions: ${PG_NOTE}" \
python3 - "$WORK/meta.json" <<'EOF'
import json, os, platform, sys
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
ram_gb = "?"
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            ram_gb = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
            break
except OSError:
    pass
e = os.environ
meta = {
    "machine": f"{cpu}, {os.cpu_count()} cores, kernel {platform.release()}, {ram_gb} RAM",
    "date": e["M_DATE"],
    "host": f"{e['M_OS']}, kernel {platform.release()}",
    "cpus": f"{os.cpu_count()} x {cpu}",
    "gatewayd": e["M_GW"].strip(),
    "nginx": e["M_NGINX"],
    "wrk": e["M_WRK"],
    "python": platform.python_version(),
    "settings": e["M_SETTINGS"],
}
if e.get("M_BASE", "").strip():
    meta["baseline"] = e["M_BASE"].strip()
if e.get("M_FLOOR", "").strip():
    meta["hyper-floor"] = e["M_FLOOR"].strip()
with open(sys.argv[1], "w") as f:
    json.dump(meta, f)
EOF

mkdir -p "$BENCH_DIR/results"
echo >&2
py report --results "$RESULTS" --meta "$WORK/meta.json" --out "$BENCH_DIR/results/latest.md"
cp "$RESULTS" "$BENCH_DIR/results/latest.jsonl"
echo >&2
info "report written to bench/results/latest.md (raw numbers: bench/results/latest.jsonl)"
FAILED=0
