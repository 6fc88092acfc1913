#!/usr/bin/env bash
# Makes host/code-order.txt again: the functions a release build of ikkyu runs while it answers
# commands over Matrix, in the order it first ran them, for the linker to pack together
# (host/build.rs explains why).
#
#   cargo build --release -p ikkyu && cargo xtask plugins
#   bash scripts/code-order.sh            # from the project root; then build --release again
#   bash scripts/code-order.sh --check    # how much of the list a release build still has
#
# The names carry a hash of their crate's build, so a changed dependency makes part of the list
# stale without any error: the build packs fewer functions and the bot's memory grows back (issue
# 15's dependencies left a third of it stale: 30 -> 45 MiB over Matrix, BENCHMARKS.md, issue 14,
# fourteenth part). --check fails when under 95 % of the names are in the binary.
#
# It runs ../shared/bench/side-by-side.sh with ikkyu under `valgrind --tool=callgrind` (ikkyu alone,
# 4 pooled instance slots so the pool fits in valgrind's address space, longer timeouts), dumps the
# profile before the script stops the bot, and keeps the executable's functions, leaving out the
# compiler's (under valgrind the compiler children's output does not fit the emulated CPU, so the
# bot compiles its plugins itself; outside it, only the children run that code).
set -euo pipefail
PROJECT=$(pwd)
BIN=${IKKYU_BIN:-$PROJECT/target/release/ikkyu}
WORK=${WORK:-/tmp/ikkyu-code-order}
BASE=${BASE:-/tmp/ikkyu-vs-maubot}
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release -p ikkyu first" >&2; exit 2; }
if [ "${1:-}" = "--check" ]; then
  LISTED=$(sort -u "$PROJECT/host/code-order.txt" | wc -l)
  FOUND=$(nm --defined-only "$BIN" | awk '{print $3}' | sort -u | comm -12 - <(sort -u "$PROJECT/host/code-order.txt") | wc -l)
  echo "host/code-order.txt: $FOUND of $LISTED names are in $BIN"
  [ $((FOUND * 100)) -ge $((LISTED * 95)) ] || { echo "stale: run scripts/code-order.sh and build --release again" >&2; exit 1; }
  exit 0
fi
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
  || { echo "valgrind (with callgrind_control) is needed" >&2; exit 2; }
rm -rf "$WORK"; mkdir -p "$WORK"

cat >"$WORK/bot.sh" <<EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file=$WORK/callgrind.out.%p "$BIN" "\$@"
EOF
chmod +x "$WORK/bot.sh"
sed -e "s|^HERE=.*|HERE=$PROJECT/../shared/bench|" \
    -e 's|rt\["watch"\] = False|rt["watch"] = False; rt["max_concurrent_calls"] = 4|' \
    -e 's|for who in maubot ikkyu|for who in ikkyu|' \
    -e 's|--burst 200|--burst 50 --join-timeout 300 --reply-timeout 60|' \
    -e 's|^"\$PY" - "\$BASE/results" "\$RUNS" <<.PYEOF.|touch "$BASE/results/phase-done"; sleep 15; exit 0\n&|' \
    "$PROJECT/../shared/bench/side-by-side.sh" >"$WORK/side-by-side.sh"

rm -f "$BASE/results/phase-done"
IKKYU_BIN="$WORK/bot.sh" bash "$WORK/side-by-side.sh" 1 >"$WORK/run.log" 2>&1 &
RUN=$!
until [ -f "$BASE/results/phase-done" ]; do
  kill -0 "$RUN" 2>/dev/null || { echo "the benchmark ended early:"; tail -5 "$WORK/run.log"; exit 1; }
  sleep 2
done
callgrind_control -d >/dev/null
wait "$RUN" || true

DUMP=$(ls "$WORK"/callgrind.out.*.1 | head -1)
python3 - "$DUMP" "$(readlink -f "$BIN")" "$PROJECT/scripts" >"$WORK/code-order.txt" <<'PYEOF'
import os, re, sys
sys.path.insert(0, sys.argv[3])
from callgrind_sum import Names
name = Names()
ob, seen = None, {}
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    if line.startswith(("ob=", "cob=")):
        n = name("ob", line.split("=", 1)[1])
        if line.startswith("ob="):
            ob = n
    elif line.startswith(("fn=", "cfn=")):
        n = name("fn", line.split("=", 1)[1])
        if line.startswith("fn=") and ob and os.path.realpath(ob) == sys.argv[2] and n:
            n = re.sub(r"'\d+$", "", n)  # callgrind's mark for a recursive call
            if not re.search(r"cranelift|regalloc2|winch", n):
                seen.setdefault(n, None)
print("\n".join(seen))
PYEOF
COUNT=$(wc -l <"$WORK/code-order.txt")
[ "$COUNT" -gt 1000 ] || { echo "only $COUNT functions of $BIN in $DUMP: host/code-order.txt left as it was" >&2; exit 1; }
mv "$WORK/code-order.txt" "$PROJECT/host/code-order.txt"
echo "host/code-order.txt: $COUNT functions"
