#!/usr/bin/env bash
# What each plugin costs in memory: `ikkyu console` with no plugin, then with each plugin alone
# (compiled and cached beforehand), with the project's ikkyu.toml (grants, plugin config). RSS and
# its parts (anonymous, file-backed) are read from /proc/<pid>/status two seconds after start; the
# plugin's share is RSS minus the RSS with no plugin.
#
#   bash scripts/bench-plugin-memory.sh   # from the project root, after
#                                         # cargo build --release -p ikkyu && cargo xtask plugins
set -euo pipefail
BASE=${BASE:-/tmp/ikkyu-plugin-memory}
PROJECT=$(pwd)
BIN=${IKKYU_BIN:-$PROJECT/target/release/ikkyu}
VENV=${VENV:-/tmp/ikkyu-vs-maubot/venv}  # side-by-side.sh's; made here if missing
PY=$VENV/bin/python
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release -p ikkyu first" >&2; exit 2; }
[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install -q tomli-w >/dev/null 2>&1
rm -rf "$BASE"; mkdir -p "$BASE"

measure() {  # $1 = plugins folder; prints "rss anon file" in KiB
  "$PY" - "$PROJECT/ikkyu.toml" "$BASE/ikkyu.toml" "$1" "$BASE" <<'PYEOF'
import sys, tomllib, tomli_w
src, dst, plugins, base = sys.argv[1:5]; c = tomllib.load(open(src, "rb"))
c["database"] = {"url": f"sqlite://{base}/ikkyu.db"}
c["runtime"].update(plugins_dir=plugins, cache_dir=f"{base}/cache", watch=False)
c.pop("matrix", None); tomli_w.dump(c, open(dst, "wb"))
PYEOF
  # Once to compile into the cache, once to measure.
  sleep 3 | "$BIN" console --config "$BASE/ikkyu.toml" >/dev/null 2>&1 || true
  sleep 4 | "$BIN" console --config "$BASE/ikkyu.toml" >/dev/null 2>&1 &
  sleep 2
  local pid; pid=$(pgrep -n -f "console --config $BASE/ikkyu.toml")
  awk '/^VmRSS/{r=$2} /^RssAnon/{a=$2} /^RssFile/{f=$2} END {print r, a, f}' "/proc/$pid/status"
  wait
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

mkdir -p "$BASE/none"
read -r r0 a0 f0 < <(measure "$BASE/none")
echo "| plugin | RSS MiB | anonymous MiB | file-backed MiB | the plugin's share MiB |"
echo "|---|---|---|---|---|"
echo "| (none) | $(mib "$r0") | $(mib "$a0") | $(mib "$f0") | |"
for wasm in "$PROJECT"/target/plugins/*.wasm; do
  name=$(basename "$wasm" .wasm)
  mkdir -p "$BASE/$name"; cp "$wasm" "$BASE/$name/"
  read -r r a f < <(measure "$BASE/$name")
  echo "| $name | $(mib "$r") | $(mib "$a") | $(mib "$f") | $(mib $((r - r0))) |"
done
