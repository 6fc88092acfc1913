#!/usr/bin/env python3
"""Where a command's round trip goes, step by step, from Synapse's access log.

    python3 scripts/reply-path.py /tmp/ikkyu-vs-maubot/synapse/homeserver.log

For every command the sender (@alice) sends, follows the bot's next sync
response, the bot's next reply request and the sender's next sync response,
and prints per bot the median of: how long Synapse took to store the
command; from then until the bot's long poll returned it; from that return
until the bot's reply reached Synapse (the bot's own turn, plus the wire);
and how long Synapse took to store the reply. Synapse logs a request when it
ends, with its wall time, so a start is the end less the wall time; both
have millisecond resolution. Round trips over 200 ms (the burst) are left
out. See BENCHMARKS.md, issue 14, twelfth part.
"""
import bisect
import statistics
import sys

from synapse_log import requests

SENDER = "@alice:localhost"
BOTS = ("@bot:localhost", "@ikkyu:localhost")


def of(rows, user, kind):
    return [r for r in rows if r.user == user and r.kind == kind]


def main():
    rows = requests(sys.argv[1])
    sent = of(rows, SENDER, "send")
    seen = of(rows, SENDER, "sync")
    seen_ends = [r.end for r in seen]
    for bot in BOTS:
        polls = of(rows, bot, "sync")
        poll_ends = [r.end for r in polls]
        replies = of(rows, bot, "send")
        reply_starts = [r.start for r in replies]
        steps = ([], [], [], [])
        for command in sent:
            start, end = command.start, command.end
            i = bisect.bisect_left(poll_ends, end)
            if i == len(polls):
                continue
            polled = poll_ends[i]
            j = bisect.bisect_left(reply_starts, polled - 0.0005)
            if j == len(replies):
                continue
            reply_start, reply_end = replies[j].start, replies[j].end
            k = bisect.bisect_left(seen_ends, reply_end)
            if k == len(seen) or seen_ends[k] - start > 0.2:
                continue
            for step, value in zip(
                steps, (end - start, polled - end, reply_start - polled, reply_end - reply_start)
            ):
                step.append(value * 1000)
        if not steps[0]:
            continue
        medians = [statistics.median(s) for s in steps]
        print(
            f"{bot.split(':')[0]:7} n={len(steps[0]):5}  command stored {medians[0]:5.1f} ms | "
            f"until the bot's poll returned {medians[1]:5.1f} | "
            f"bot's turn until its reply arrived {medians[2]:5.1f} | "
            f"reply stored {medians[3]:5.1f}"
        )


if __name__ == "__main__":
    main()
