"""What the broker was asked, by kind and client: a summary of its request log.

`infra/kafka.sh` writes every request the broker completes to `KAFKA_REQUEST_LOG` when that is
set (bench/queues.py, bench/idle.py and `elves up` start their broker through it). This counts
them a second, by API and client, over the log's last `--last` seconds (all of it by default).
Client ids are shown without the stack's topic prefix and random suffixes, and the agents'
numbered ids as one (`agent.N`), so a fleet's clients add up to one line each.

    KAFKA_REQUEST_LOG=/tmp/requests.log .venv/bin/python bench/idle.py --rounds 1
    .venv/bin/python bench/broker_requests.py /tmp/requests.log --last 20
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^\[([^\]]+)\] Completed request:(.*)$")
PREFIX = re.compile(r"^bench\w+?\.")  # the bench stacks' topic prefix (`benchq1a2b3c.`)
SUFFIX = re.compile(r"-[0-9a-f]{8}$")  # a consumer's random group suffix
NUMBERED = re.compile(r"(agent[.-]\w+?-agent)-\d+")  # bench agents: `...-agent-3`

Request = tuple[float, str, str]  # (time, API, client)


def client_name(client_id: str) -> str:
    """One name for a part, whatever its run's prefix, suffix or agent number."""
    return NUMBERED.sub(r"\1-N", SUFFIX.sub("", PREFIX.sub("", client_id)))


def parse(lines: Iterable[str]) -> list[Request]:
    """The requests of a log; lines that are not a completed request are skipped."""
    requests = []
    for line in lines:
        match = LINE.match(line.rstrip("\n"))
        if match is None:
            continue
        try:
            header = json.loads(match.group(2))["requestHeader"]
            # The broker's local time; only differences are used, so read as UTC.
            stamp = f"{match.group(1)} +0000"
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f %z").timestamp()
        except (ValueError, KeyError):
            continue
        requests.append((at, header["requestApiKeyName"], client_name(header.get("clientId", ""))))
    return requests


def rates(requests: list[Request], last_s: float | None) -> tuple[float, Counter[tuple[str, str]]]:
    """The span counted, in seconds, and each (API, client)'s requests in it."""
    if not requests:
        return 0.0, Counter()
    end = requests[-1][0]
    start = requests[0][0] if last_s is None else max(requests[0][0], end - last_s)
    counts = Counter((api, client) for at, api, client in requests if at >= start)
    return max(end - start, 1e-9), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--last", type=float, default=None, help="seconds at the log's end")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with args.log.open(encoding="utf-8", errors="replace") as lines:
        span, counts = rates(parse(lines), args.last)
    print(f"{sum(counts.values()) / span:.1f} requests a second over {span:.1f} s")
    for (api, client), n in counts.most_common(args.top):
        print(f"  {n / span:7.2f}/s  {api:<22} {client}")


if __name__ == "__main__":
    main()
