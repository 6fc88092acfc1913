#!/usr/bin/env bash
# Start-up of ikkyu with its plugins already compiled and cached, as an operator restarting it sees it:
#   - `ikkyu run`: from exec to its log line "first sync handled" on a local Synapse (restored session);
#   - `ikkyu console`: from exec to its answer to `!points` on stdout.
#
#   bash scripts/bench-startup.sh [RUNS]   # from the project root, after
#                                          # cargo build --release -p ikkyu && cargo xtask plugins
#
# Synapse comes from PyPI into a venv (the one ../shared/bench/side-by-side.sh makes, if it is there)
# and listens on 127.0.0.1:8019. Prints each run and the median, in ms. Every process it starts is
# stopped by its PID at the end.
set -euo pipefail
RUNS=${1:-5}
BASE=${BASE:-/tmp/ikkyu-startup}
PROJECT=$(pwd)
BIN=${IKKYU_BIN:-$PROJECT/target/release/ikkyu}
VENV=${VENV:-/tmp/ikkyu-vs-maubot/venv}
PY=$VENV/bin/python
HS=http://127.0.0.1:8019
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release -p ikkyu (and cargo xtask plugins) first" >&2; exit 2; }
[ -d "$PROJECT/target/plugins" ] || { echo "no target/plugins: run cargo xtask plugins first" >&2; exit 2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install -q matrix-synapse==1.163.2 tomli-w >/dev/null 2>&1

rm -rf "$BASE"; mkdir -p "$BASE/synapse" "$BASE/ikkyu"
cd "$BASE/synapse"
"$PY" -m synapse.app.homeserver --server-name localhost --config-path homeserver.yaml --generate-config --report-stats=no >/dev/null
"$PY" - homeserver.yaml <<'PYEOF'
import sys, yaml
p = sys.argv[1]; c = yaml.safe_load(open(p))
c["listeners"] = [{"port": 8019, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                   "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}]
c.update(trusted_key_servers=[], suppress_key_server_warning=True, enable_registration=False)
yaml.safe_dump(c, open(p, "w"), sort_keys=False)
PYEOF
setsid "$PY" -m synapse.app.homeserver -c homeserver.yaml >synapse.out 2>&1 & PIDS+=($!)
for _ in $(seq 1 90); do curl -s -o /dev/null "$HS/_matrix/client/versions" && break; sleep 1; done
"$VENV/bin/register_new_matrix_user" -c homeserver.yaml -u ikkyu -p ikkyupass --no-admin "$HS" >/dev/null

cd "$BASE/ikkyu"
"$PY" - "$PROJECT/ikkyu.toml" "$PROJECT" <<'PYEOF'
import sys, tomllib, tomli_w
src, project = sys.argv[1:3]; c = tomllib.load(open(src, "rb"))
c.setdefault("bot", {})["user_id"] = "@ikkyu:localhost"
rt = c.setdefault("runtime", {}); rt["plugins_dir"] = f"{project}/target/plugins"; rt["cache_dir"] = "cache"; rt["watch"] = False
console = dict(c); console["database"] = {"url": "sqlite://console.db"}; console.pop("matrix", None)
tomli_w.dump(console, open("console.toml", "wb"))
c["database"] = {"url": "sqlite://ikkyu.db"}
c["matrix"] = {"homeserver": "http://127.0.0.1:8019", "password": "ikkyupass", "store_dir": "matrix-store"}
tomli_w.dump(c, open("run.toml", "wb"))
PYEOF

# One run of each to log in, migrate and fill the compile cache; not counted.
run_once() {  # prints ms from exec to "first sync handled"
  : >run.log
  local t0; t0=$(now_ms)
  "$BIN" run --config run.toml >run.log 2>&1 & local pid=$!; PIDS+=("$pid")
  for _ in $(seq 1 3000); do grep -q "first sync handled" run.log && break; sleep 0.005; done
  local t1; t1=$(now_ms)
  grep -q "first sync handled" run.log || { echo "ikkyu run did not sync:" >&2; tail -5 run.log >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo $((t1 - t0))
}
console_once() {  # prints ms from exec to the answer to !points
  local t0; t0=$(now_ms)
  local t1
  t1=$( { printf '!points\n'; sleep 2; } | "$BIN" console --config console.toml 2>console.err | { read -r _; now_ms; } )
  echo $((t1 - t0))
}
run_once >/dev/null; console_once >/dev/null

RUN=(); CON=()
for i in $(seq 1 "$RUNS"); do
  r=$(run_once); c=$(console_once); RUN+=("$r"); CON+=("$c")
  echo "run $i: ikkyu run to first sync handled ${r} ms; ikkyu console to the first answer ${c} ms"
done
echo "median of $RUNS: ikkyu run $(printf '%s\n' "${RUN[@]}" | median) ms; ikkyu console $(printf '%s\n' "${CON[@]}" | median) ms"
