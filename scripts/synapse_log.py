"""Synapse's access log, read once for the scripts that measure from it
(`synapse-cost.py`, `reply-path.py`, `synapse-txns.py`).

Synapse logs each request when it ends: its user, method and path, its
wall time, its own CPU time (`ru=`) and its database transactions. With
the logger `synapse.storage.txn` at DEBUG in its log config, it also logs
each transaction by name, under the request it ran for
(`synapse-txns.py`).
"""
import datetime
import re
from dataclasses import dataclass

LINE = re.compile(
    r"^(\S+ \S+) - synapse\.access\.\S+ - \d+ - \w+ - (\S+) - .*"
    r"\{(@[^}]+)\} Processed request: ([\d.]+)sec/[\d.]+sec "
    r"ru=\(([\d.]+)sec, ([\d.]+)sec\) db=\([\d.]+sec/[\d.]+sec/(\d+)\) "
    r"\d+B \d+ \"(\w+) (\S+)"
)


# "GET-935 - [TXN START] {get_timeline_gaps-31c6}": the request, the name.
TXN = re.compile(r" - synapse\.storage\.txn - \d+ - DEBUG - (\S+) - \[TXN START\] \{(.+)-[0-9a-f]+\}")


@dataclass
class Request:
    id: str  # "GET-935", unique while Synapse runs
    end: float  # seconds since the epoch, to the millisecond
    user: str  # "@alice:localhost"
    method: str
    kind: str  # "sync", "send", "receipt", or the path
    wall: float  # seconds
    cpu: float  # Synapse's own, user and system, seconds
    db_txns: int

    @property
    def start(self):
        return self.end - self.wall


def kind(path):
    for name in ("/sync", "/send/", "/receipt/"):
        if name in path:
            return name.strip("/")
    return path.split("?")[0]


def requests(path):
    """Every request the log at `path` records, in the order they ended."""
    found = []
    with open(path, errors="replace") as lines:
        for line in lines:
            m = LINE.match(line)
            if not m:
                continue
            stamp, rid, user, wall, user_cpu, system_cpu, txns, method, url = m.groups()
            end = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append(
                Request(
                    id=rid,
                    end=end,
                    user=user,
                    method=method,
                    kind=kind(url),
                    wall=float(wall),
                    cpu=float(user_cpu) + float(system_cpu),
                    db_txns=int(txns),
                )
            )
    found.sort(key=lambda r: r.end)
    return found


def transactions(path):
    """The names of the database transactions each request ran, by its id."""
    found = {}
    with open(path, errors="replace") as lines:
        for line in lines:
            m = TXN.search(line)
            if m:
                found.setdefault(m.group(1), []).append(m.group(2))
    return found
