#!/usr/bin/env python3
"""Which database transactions each kind of request costs Synapse, by name.

    # in Synapse's log config (localhost.log.config), before it starts:
    #   loggers: {synapse.storage.txn: {level: DEBUG}}
    python3 scripts/synapse-txns.py /tmp/ikkyu-vs-maubot/synapse/homeserver.log

Prints, per user and kind of request (50 or more of them), the mean number
of each transaction per request. Synapse on SQLite runs every transaction
on one connection, so a transaction one bot's sync adds is one every other
request waits behind. This is how the cost of the bot's own replies left
out of its sync was found (BENCHMARKS.md, issue 14, fourteenth part).
"""
import collections
import sys

from synapse_log import requests, transactions


def main(log):
    names = transactions(log)
    per_kind = collections.defaultdict(list)
    for r in requests(log):
        per_kind[(r.user, f"{r.method} {r.kind}")].append(names.get(r.id, []))
    for (user, kind), runs in sorted(per_kind.items(), key=lambda kv: -len(kv[1])):
        if len(runs) < 50:
            continue
        counts = collections.Counter(name for run in runs for name in run)
        print(f"{user} {kind}: {len(runs)} requests, {sum(counts.values()) / len(runs):.1f} transactions each")
        for name, n in counts.most_common():
            if n / len(runs) >= 0.05:
                print(f"    {n / len(runs):5.2f}  {name}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: synapse-txns.py <homeserver.log>")
    main(sys.argv[1])
