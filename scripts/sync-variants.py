#!/usr/bin/env python3
"""What a long poll costs Synapse with and without parts of ikkyu's sync
request, one user per variant, each in a room of its own with alice, in
one run.

    # Synapse on 127.0.0.1:8018 with users alice and one per variant
    # (password <name>pass), e.g. the one side-by-side.sh sets up
    python3 scripts/sync-variants.py [ROUNDS]           # lazy, eager, after
    python3 scripts/sync-variants.py --replies [ROUNDS] # filtered, caughtup, echoed
    python3 scripts/synapse-cost.py <homeserver.log>

Plain variants: `lazy` is ikkyu's filter (members loaded lazily, its own
events, presence, ephemeral events and push rules left out); `eager` is the
same without lazy members; `after` adds `use_state_after=true`, which
matrix-sdk sends on every sync. In rounds, each variant long-polls while
alice sends a message, 60 times (BENCHMARKS.md, issue 14, thirteenth part).

With `--replies` each variant also answers, as a bot does: every round it
sends a message of its own, then alice sends hers. `filtered` is ikkyu
(its filter leaves its own message out, and the long poll already waiting
when it is stored goes on waiting); `caughtup` is the same filter with a
`timeout=0` sync after its own message, so its long poll starts after it;
`echoed` has no `not_senders`, so its own message ends its poll and it polls
again. For each, the median time from alice's send to the poll that carries
it returning (BENCHMARKS.md, issue 14, fourteenth part).

synapse-cost.py then prints each user's syncs' CPU and database
transactions.
"""
import json
import statistics
import sys
import threading
import time
import urllib.request
from typing import NamedTuple

HS = "http://127.0.0.1:8018"


class Variant(NamedTuple):
    lazy: bool = True  # members loaded lazily
    extra: str = ""  # more of the sync's query string
    own_left_out: bool = True  # the filter's not_senders
    catch_up: bool = False  # a timeout=0 sync after its own reply


PLAIN = {"lazy": Variant(), "eager": Variant(lazy=False), "after": Variant(extra="&use_state_after=true")}
REPLIES = {"filtered": Variant(), "caughtup": Variant(catch_up=True), "echoed": Variant(own_left_out=False)}


def call(method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(HS + path, method=method, data=data)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def login(user):
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": user + "pass"}
    return call("POST", "/_matrix/client/v3/login", body=body)["access_token"]


def sync_filter(user, token, lazy, own_left_out):
    timeline = {"limit": 50}
    if own_left_out:
        timeline["not_senders"] = [f"@{user}:localhost"]
    room = {"timeline": timeline, "ephemeral": {"types": []}}
    if lazy:
        room["state"] = {"lazy_load_members": True, "include_redundant_members": False}
    body = {"room": room, "presence": {"types": []}, "account_data": {"not_types": ["m.push_rules"]}}
    return call("POST", f"/_matrix/client/v3/user/@{user}:localhost/filter", token, body)["filter_id"]


def carries(response, sender):
    """Whether a sync response has a message from `sender` in a timeline."""
    rooms = response.get("rooms", {}).get("join", {}).values()
    return any(e.get("sender") == sender for r in rooms for e in r.get("timeline", {}).get("events", []))


def main(replying, rounds):
    variants = REPLIES if replying else PLAIN
    tokens = {u: login(u) for u in ["alice", *variants]}
    query, since, rooms = {}, {}, {}
    for user, v in variants.items():
        # A room each, so one variant's messages never wake another's poll.
        rooms[user] = call("POST", "/_matrix/client/v3/createRoom", tokens["alice"],
                           {"preset": "private_chat", "invite": [f"@{user}:localhost"]})["room_id"]
        call("POST", f"/_matrix/client/v3/join/{rooms[user]}", tokens[user], {})
        query[user] = f"/_matrix/client/v3/sync?filter={sync_filter(user, tokens[user], v.lazy, v.own_left_out)}{v.extra}"
        since[user] = call("GET", query[user], tokens[user])["next_batch"]
    sent, waits = 0, {u: [] for u in variants}

    def send(user, room, body):
        nonlocal sent
        sent += 1
        call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{sent}", tokens[user],
             {"msgtype": "m.text", "body": body})

    for _ in range(rounds):
        for user, v in variants.items():
            for _ in range(60):
                out = {}

                def poll():
                    # Until a response carries alice's message: an own reply
                    # that is not left out ends a poll of its own first.
                    while True:
                        path = f"{query[user]}&since={since[user]}&timeout=30000"
                        response = call("GET", path, tokens[user])
                        since[user] = response["next_batch"]
                        if carries(response, "@alice:localhost"):
                            out["at"] = time.monotonic()
                            return

                poller = threading.Thread(target=poll)
                if v.catch_up:
                    send(user, rooms[user], "1 point")
                    path = f"{query[user]}&since={since[user]}&timeout=0"
                    since[user] = call("GET", path, tokens[user])["next_batch"]
                    poller.start()
                else:
                    # As a bot: the long poll waits already when its reply is stored.
                    poller.start()
                    if replying:
                        time.sleep(0.1)
                        send(user, rooms[user], "1 point")
                time.sleep(0.1)
                asked = time.monotonic()
                send("alice", rooms[user], f"!points {sent}")
                poller.join()
                waits[user].append(1000 * (out["at"] - asked))
    print(f"{sent} messages sent; now run scripts/synapse-cost.py on Synapse's log")
    for user, ms in waits.items():
        print(f"{user:<10} alice's send -> the poll carrying it returned: median {statistics.median(ms):.1f} ms")


if __name__ == "__main__":
    args = sys.argv[1:]
    replying = bool(args) and args[0] == "--replies"
    if replying:
        args = args[1:]
    main(replying, int(args[0]) if args else 3)
