#!/usr/bin/env python3
"""What each function costs in a callgrind dump, per call, with its biggest callees.

    python3 scripts/callgrind_sum.py /tmp/cg/callgrind.out.<pid>.1 'receive_sync_response' '^ikkyu::dispatch'

With line tables, callgrind keeps one entry per (source file, function), so
a function that inlined code from ten files is ten entries, and
`callgrind_annotate --inclusive=yes` shows ten partial counts. This merges
them by name (hashes left out): a function's own instructions, those of
what it calls (calls to itself left out), and how often it was called. For
each function whose demangled name matches one of the patterns (Python
regular expressions) it prints inclusive instructions, own instructions,
calls, instructions per call and its eight biggest callees. This is how a
sync response's cost was taken apart (BENCHMARKS.md, issue 14, fifteenth
part). Needs `c++filt`. `Names` is also what `scripts/code-order.sh` reads
a dump's names with.
"""
import collections
import re
import subprocess
import sys


class Names:
    """callgrind's name compression: a file, object or function is named
    "(id) name" the first time and "(id)" after; `names(kind, spec)` gives
    the name either way (kind: "fl", "ob" or "fn")."""

    def __init__(self):
        self.ids = {"fl": {}, "ob": {}, "fn": {}}

    def __call__(self, kind, spec):
        m = re.match(r"\((\d+)\)(?: (.*))?$", spec)
        if not m:
            return spec
        if m.group(2) is not None:
            self.ids[kind][m.group(1)] = m.group(2)
        return self.ids[kind].get(m.group(1))


def read(dump):
    """(own, calls, count, called): own[f], calls[f][g] inclusive cost of f's calls to g,
    count[f][g] how many, called[g] in all."""
    name = Names()

    def merged(n):
        n = re.sub(r"::h[0-9a-f]{16}", "", n or "")
        return re.sub(r"'\d+$", "", n)  # callgrind's mark for a recursive call

    own = collections.Counter()
    calls = collections.defaultdict(collections.Counter)
    count = collections.defaultdict(collections.Counter)
    called = collections.Counter()
    fn = callee = pending = None
    for line in open(dump, errors="replace"):
        key, _, value = line.partition("=")
        if key == "fn":
            fn = merged(name("fn", value.strip()))
        elif key == "cfn":
            callee = merged(name("fn", value.strip()))
        elif key in ("fl", "fi", "fe", "cfl", "cfi"):
            name("fl", value.strip())
        elif key in ("ob", "cob"):
            name("ob", value.strip())
        elif key == "calls":
            pending = (callee, int(value.split()[0]))
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                continue
            cost = int(parts[1])
            if pending:
                (target, n), pending = pending, None
                if target != fn:
                    calls[fn][target] += cost
                    count[fn][target] += n
                    called[target] += n
            else:
                own[fn] += cost
    return own, calls, count, called


def main(dump, patterns):
    own, calls, count, called = read(dump)
    inclusive = {f: own[f] + sum(calls[f].values()) for f in set(own) | set(calls)}
    mangled = sorted(inclusive)
    out = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True)
    shown = {m: re.sub(r"::h[0-9a-f]{16}", "", d) for m, d in zip(mangled, out.stdout.split("\n"))}
    wanted = [re.compile(p) for p in patterns]
    for f in sorted(inclusive, key=lambda f: -inclusive[f]):
        if not any(p.search(shown[f]) for p in wanted):
            continue
        n = called[f]
        print(f"{inclusive[f]:>14,} incl {own[f]:>12,} own {n:>8,} calls "
              f"{inclusive[f] // max(n, 1):>10,}/call  {shown[f][:150]}")
        for g, cost in calls[f].most_common(8):
            print(f"{'':>20}{cost:>14,} {count[f][g]:>7,}x {shown.get(g, g)[:140]}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
