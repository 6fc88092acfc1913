#!/usr/bin/env python3
"""What each bot's requests cost the homeserver, from Synapse's access log.

    python3 scripts/synapse-cost.py /tmp/ikkyu-vs-maubot/synapse/homeserver.log

Synapse logs every request it processed with its wall time, its CPU time
(`ru=`) and its database transactions. Synapse runs one Python thread, so
the CPU it spends on one bot's sync or send is time every reply waits
behind: this is how a bot's reply latency can move without the bot's own
CPU moving (BENCHMARKS.md, issue 14, eleventh part). Prints, per user,
method and kind of request: how many, the median wall time, the mean CPU
and the mean number of database transactions.
"""
import collections
import statistics
import sys

from synapse_log import requests


def main(log):
    seen = collections.defaultdict(list)
    for r in requests(log):
        seen[(r.user, r.method, r.kind)].append((r.wall, r.cpu, r.db_txns))
    print(f"{'user':<20}{'request':<14}{'n':>6}{'wall p50 ms':>13}{'CPU ms':>8}{'db txns':>9}")
    for (who, method, what), rows in sorted(seen.items(), key=lambda kv: -len(kv[1])):
        if len(rows) < 10:
            continue
        wall = 1000 * statistics.median(r[0] for r in rows)
        cpu = 1000 * statistics.mean(r[1] for r in rows)
        txns = statistics.mean(r[2] for r in rows)
        print(f"{who:<20}{method + ' ' + what:<14}{len(rows):>6}{wall:>13.1f}{cpu:>8.2f}{txns:>9.1f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: synapse-cost.py <homeserver.log>")
    main(sys.argv[1])
