#!/usr/bin/env python3
"""What a long poll costs Synapse with and without parts of ikkyu's sync
request, one user per variant, all in one room and one run.

    # Synapse on 127.0.0.1:8018 with users alice, lazy, eager and after
    # (password <name>pass), e.g. the one side-by-side.sh sets up
    python3 scripts/sync-variants.py [ROUNDS]
    python3 scripts/synapse-cost.py <homeserver.log>

Variants: `lazy` is ikkyu's filter (members loaded lazily, its own events,
presence, ephemeral events and push rules left out); `eager` is the same
without lazy members; `after` adds `use_state_after=true`, which matrix-sdk
sends on every sync. In rounds, each variant long-polls while alice sends a
message, 60 times; synapse-cost.py then prints each user's polls' CPU and
database transactions (BENCHMARKS.md, issue 14, thirteenth part).
"""
import json
import sys
import threading
import time
import urllib.request

HS = "http://127.0.0.1:8018"
VARIANTS = {"lazy": (True, ""), "eager": (False, ""), "after": (True, "&use_state_after=true")}


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


def sync_filter(user, token, lazy):
    room = {"timeline": {"limit": 50, "not_senders": [f"@{user}:localhost"]}, "ephemeral": {"types": []}}
    if lazy:
        room["state"] = {"lazy_load_members": True, "include_redundant_members": False}
    body = {"room": room, "presence": {"types": []}, "account_data": {"not_types": ["m.push_rules"]}}
    return call("POST", f"/_matrix/client/v3/user/@{user}:localhost/filter", token, body)["filter_id"]


def main(rounds):
    tokens = {u: login(u) for u in ["alice", *VARIANTS]}
    invite = [f"@{u}:localhost" for u in VARIANTS]
    room = call("POST", "/_matrix/client/v3/createRoom", tokens["alice"],
                {"preset": "private_chat", "invite": invite})["room_id"]
    query, since = {}, {}
    for user, (lazy, extra) in VARIANTS.items():
        call("POST", f"/_matrix/client/v3/join/{room}", tokens[user], {})
        query[user] = f"/_matrix/client/v3/sync?filter={sync_filter(user, tokens[user], lazy)}{extra}"
        since[user] = call("GET", query[user], tokens[user])["next_batch"]
    sent = 0
    for _ in range(rounds):
        for user in VARIANTS:
            for _ in range(60):
                out = {}

                def poll():
                    path = f"{query[user]}&since={since[user]}&timeout=30000"
                    out["next"] = call("GET", path, tokens[user])["next_batch"]

                poller = threading.Thread(target=poll)
                poller.start()
                time.sleep(0.03)
                sent += 1
                call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{sent}", tokens["alice"],
                     {"msgtype": "m.text", "body": f"!points {sent}"})
                poller.join()
                since[user] = out["next"]
    print(f"{sent} messages sent; now run scripts/synapse-cost.py on Synapse's log")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
